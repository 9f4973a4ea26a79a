"""Accuracy evaluators: the ``accuracy`` metric of a candidate network.

    get_accuracy("table:cifar100").evaluate(space, genome) -> 73.5

Three are built in:

* ``table``: the published NAS-Bench-201 test accuracies (``nb201/accuracy.csv``
  of the benchmark data, or a file named by ``path=``), looked up by NB201
  index; nb201 only.
* ``train``: a short real training of the network (seeded, no download) on
  scikit-learn's bundled digits set resized to the network's input, or on a
  user's ``.npz``; top-1 % on the held-out split.
* ``proxy``: a zero-cost proxy on one batch: NASWOT (Mellor et al. 2021) or
  synflow (Tanaka et al. 2020; Abdelfattah et al. 2021). **A proxy's value is
  a score, not a percentage**: larger is better and only its order means
  anything (``is_percentage`` is False).

Every evaluator is deterministic for fixed settings on one machine (the
``train`` evaluator when its training ends by ``epochs`` or ``max_steps``
rather than by ``time_budget_s``), and :meth:`AccuracyEvaluator.settings`
lists everything that changes its results, so a run can refuse to resume
with different ones.
"""

from __future__ import annotations

import abc
import contextlib
import csv
import dataclasses
import functools
import logging
import math
import numbers
import os
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hwnas.arch import ArchSpace
from hwnas.arch.nb201 import genome_to_arch_str, genome_to_index
from hwnas.data import DATA_ENV_VAR, require_data_file
from hwnas.errors import DataNotFoundError, InvalidConfigError, RunError
from hwnas.util import file_sha256, keyword_options

log = logging.getLogger(__name__)

__all__ = [
    "AccuracyEvaluator",
    "AccuracyResult",
    "ProxyAccuracy",
    "TableAccuracy",
    "TrainAccuracy",
    "accuracy_names",
    "get_accuracy",
    "register_accuracy",
]


@dataclasses.dataclass(frozen=True)
class AccuracyResult:
    """One evaluation: the value, the seconds it took and evaluator-specific details."""

    #: top-1 % (or a proxy score when the evaluator's ``is_percentage`` is False)
    accuracy: float
    #: wall-clock seconds of the whole evaluation
    seconds: float
    #: JSON-able facts about the evaluation (steps trained, why training stopped, ...)
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)


#: a target's deployment of a trained network: (model, input shape, calibration inputs) -> predict
Deploy = Callable[[nn.Module, Sequence[int], np.ndarray], Callable[[np.ndarray], np.ndarray]]


class AccuracyEvaluator(abc.ABC):
    """Gives a network of a space its ``accuracy``: top-1 % or, for a proxy, a score."""

    #: registry name, e.g. ``"table"``
    name: ClassVar[str] = ""
    #: one line for listings
    description: ClassVar[str] = ""
    #: True when the value is a top-1 percentage; False for a score where larger is better
    is_percentage: ClassVar[bool] = True
    #: the option that the ``name:value`` form of a spec sets (``"table:cifar100"``)
    spec_option: ClassVar[str | None] = None

    #: True when the evaluator measures the network it trained, so that it can measure the network a
    #: target deploys instead (``deploy``, see :meth:`evaluate_detailed`); False for tables and proxies
    uses_deployment: ClassVar[bool] = False

    def evaluate(self, space: ArchSpace, genome: Sequence[int], *, deploy: Deploy | None = None) -> float:
        """The accuracy of the network of ``genome`` in ``space``."""
        return self.evaluate_detailed(space, genome, deploy=deploy).accuracy

    def evaluate_detailed(
        self, space: ArchSpace, genome: Sequence[int], *, deploy: Deploy | None = None
    ) -> AccuracyResult:
        """The accuracy with the seconds it took and the evaluator's details.

        ``deploy(model, input_shape, calibration)`` (a target's
        :meth:`~hwnas.targets.Target.deploy_network`) turns the trained torch
        network into the function the device computes (e.g. int8); an
        evaluator with :attr:`uses_deployment` measures that function instead
        of the float network; the others ignore it.
        """
        start = time.perf_counter()
        genome = space.validate(genome)
        if deploy is not None and self.uses_deployment:
            value, details = self._evaluate(space, genome, deploy=deploy)
        else:
            value, details = self._evaluate(space, genome)
        value = float(value)
        if not math.isfinite(value):
            raise RunError(f"accuracy evaluator {self.name} gave a non-finite value for {list(genome)}")
        return AccuracyResult(accuracy=value, seconds=time.perf_counter() - start, details=details)

    @classmethod
    def check_space(cls, space: ArchSpace) -> None:
        """Raise :class:`InvalidConfigError` if this evaluator cannot score networks of ``space`` at all.

        Called before a search starts, so that a mismatch is one error line, not every point failing;
        a class method, so that it is checked before the evaluator reads any data (``get_accuracy``'s
        ``for_space``).
        """

    @abc.abstractmethod
    def _evaluate(self, space: ArchSpace, genome: tuple[int, ...]) -> tuple[float, dict[str, Any]]:
        """The value and details for an already validated genome."""

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-able settings: everything that changes this evaluator's results."""


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[AccuracyEvaluator]] = {}


def register_accuracy(cls: type[AccuracyEvaluator]) -> type[AccuracyEvaluator]:
    """Register an evaluator class under its ``name``; a name is registered once."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name or ":" in name:
        raise InvalidConfigError(f"accuracy evaluator class {cls.__name__} has no valid name: {name!r}")
    if name in _REGISTRY:
        raise InvalidConfigError(
            f"accuracy evaluator {name!r} is already registered ({_REGISTRY[name].__name__})"
        )
    _REGISTRY[name] = cls
    return cls


def accuracy_names() -> list[str]:
    """Names of the registered accuracy evaluators, sorted."""
    return sorted(_REGISTRY)


def get_accuracy(spec: str, *, for_space: ArchSpace | None = None, **options: Any) -> AccuracyEvaluator:
    """The evaluator named by ``spec``, built with ``options``.

    With ``for_space``, the evaluator's :meth:`~AccuracyEvaluator.check_space` runs first, before it is
    built (and reads its data): a space it cannot score is the error, not a data file it would not need.

    ``spec`` is a registered name (``"train"``) or ``name:value``, which sets
    the evaluator's main option (``"table:cifar100"`` is ``dataset="cifar100"``,
    ``"proxy:synflow"`` is ``kind="synflow"``). Unknown names and options are
    an :class:`InvalidConfigError` listing the known ones.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidConfigError(
            f"an accuracy evaluator is named by a string, got {spec!r}; known: {', '.join(accuracy_names())}"
        )
    name, sep, value = spec.strip().partition(":")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise InvalidConfigError(
            f"unknown accuracy evaluator {name!r}; known: {', '.join(accuracy_names())}"
        )
    accepted = keyword_options(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InvalidConfigError(
            f"accuracy evaluator {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"options: {', '.join(accepted) or '(none)'}"
        )
    if sep:
        if cls.spec_option is None:
            raise InvalidConfigError(f"accuracy evaluator {name!r} takes no ':value' in its name, got {spec!r}")
        if cls.spec_option in options:
            raise InvalidConfigError(
                f"accuracy evaluator {spec!r} sets {cls.spec_option} twice (in the name and as an option)"
            )
        options[cls.spec_option] = value
    if for_space is not None:
        cls.check_space(for_space)
    return cls(**options)


# --------------------------------------------------------------------------- option checks


def _int_option(evaluator: str, option: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise InvalidConfigError(
            f"accuracy evaluator {evaluator}: option {option} must be an integer >= {minimum}, got {value!r}"
        )
    return int(value)


def _positive_float_option(evaluator: str, option: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or float(value) <= 0
    ):
        raise InvalidConfigError(
            f"accuracy evaluator {evaluator}: option {option} must be a finite number > 0, got {value!r}"
        )
    return float(value)


def _choice_option(evaluator: str, option: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InvalidConfigError(
            f"accuracy evaluator {evaluator}: option {option} must be one of {', '.join(choices)}, got {value!r}"
        )
    return str(value)


def _file_stamp(path: Path) -> tuple[str, int, int]:
    """A cache key that changes when the file does: resolved path, mtime, size."""
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


# --------------------------------------------------------------------------- table

#: the accuracy column of each dataset of the NB201 table
TABLE_COLUMNS: dict[str, str] = {
    "cifar10": "cifar10_test_acc",
    "cifar100": "cifar100_test_acc",
    "imagenet16-120": "imagenet16_120_test_acc",
}
#: the NB201 table's file inside the benchmark data folder
TABLE_FILE = "nb201/accuracy.csv"
#: the network the table's accuracies belong to
_TABLE_NETWORK = {"channels": 16, "cells_per_stage": 5}


@dataclasses.dataclass(frozen=True)
class _Table:
    """An NB201 accuracy table: per NB201 index, the architecture string and the accuracies."""

    path: Path
    sha256: str
    #: nb201_index -> arch_str ("" when the file has no arch_str column)
    arch: Mapping[int, str]
    #: column -> nb201_index -> accuracy
    values: Mapping[str, Mapping[int, float]]


_TABLE_LOCK = threading.Lock()
_TABLE_CACHE: dict[tuple[str, int, int], _Table] = {}


def _load_table(path: Path) -> _Table:
    """Read (once per file version) an NB201 accuracy table, checking its columns and values."""
    stamp = _file_stamp(path)
    with _TABLE_LOCK:
        cached = _TABLE_CACHE.get(stamp)
    if cached is not None:
        return cached
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            required = ["nb201_index", *TABLE_COLUMNS.values()]
            missing = [c for c in required if c not in header]
            if missing:
                raise InvalidConfigError(
                    f"accuracy table {path} lacks column(s) {', '.join(missing)}; "
                    f"it needs {', '.join(required)} (and optionally arch_str)"
                )
            at = {name: header.index(name) for name in header}
            arch_col = at.get("arch_str")
            arch: dict[int, str] = {}
            values: dict[str, dict[int, float]] = {c: {} for c in TABLE_COLUMNS.values()}
            for line_no, row in enumerate(reader, start=2):
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise InvalidConfigError(
                        f"accuracy table {path} line {line_no} has {len(row)} fields, the header {len(header)}"
                    )
                try:
                    index = int(row[at["nb201_index"]])
                    parsed = {c: float(row[at[c]]) for c in TABLE_COLUMNS.values()}
                except ValueError:
                    raise InvalidConfigError(
                        f"accuracy table {path} line {line_no} has a value that is not a number"
                    ) from None
                if index in arch:
                    raise InvalidConfigError(f"accuracy table {path} lists nb201_index {index} twice")
                arch[index] = row[arch_col].strip() if arch_col is not None else ""
                for c, v in parsed.items():
                    values[c][index] = v
    except UnicodeDecodeError:
        raise InvalidConfigError(f"accuracy table {path} is not a text (csv) file") from None
    except OSError as exc:
        raise DataNotFoundError(f"cannot read accuracy table {path}: {exc.strerror or exc}") from None
    table = _Table(path=path, sha256=file_sha256(path), arch=arch, values=values)
    with _TABLE_LOCK:
        _TABLE_CACHE[stamp] = table
    return table


class TableAccuracy(AccuracyEvaluator):
    """Published NAS-Bench-201 test accuracy (%, 200 epochs, mean over seeds), by NB201 index."""

    name = "table"
    description = "NAS-Bench-201 published test accuracy (nb201 only): cifar10, cifar100, imagenet16-120"
    spec_option = "dataset"

    def __init__(self, *, dataset: str = "cifar10", path: str | os.PathLike[str] | None = None) -> None:
        """Options: ``dataset`` (cifar10, cifar100, imagenet16-120); ``path`` of the csv
        (default: ``nb201/accuracy.csv`` in the benchmark data folder, see ``$HWNAS_DATA``).

        The file is read here, so a missing or malformed file fails before a search starts.
        """
        self.dataset = _choice_option(self.name, "dataset", dataset, tuple(TABLE_COLUMNS))
        if path is None:
            self.path = require_data_file(TABLE_FILE)
        else:
            self.path = Path(path).expanduser()
            if not self.path.is_file():
                raise DataNotFoundError(
                    f"accuracy table {self.path} not found; pass path= an NB201 accuracy csv, or leave "
                    f"it out to use {TABLE_FILE} in the folder named by {DATA_ENV_VAR}"
                )
        self._table = _load_table(self.path)

    def settings(self) -> dict[str, Any]:
        # the file's content, not its path: a moved data folder may resume a run
        return {"evaluator": self.name, "dataset": self.dataset, "table_sha256": self._table.sha256}

    @classmethod
    def check_space(cls, space: ArchSpace) -> None:
        if space.name != "nb201":
            raise InvalidConfigError(
                f"the table evaluator has accuracies for nb201 only, not space {space.name!r}; "
                f"use the train or proxy evaluator"
            )
        for option, value in _TABLE_NETWORK.items():
            if getattr(space, option, value) != value:
                raise InvalidConfigError(
                    f"the table evaluator's accuracies are for nb201 with channels=16, cells_per_stage=5; "
                    f"this space has {option}={getattr(space, option)}"
                )

    def _evaluate(self, space: ArchSpace, genome: tuple[int, ...]) -> tuple[float, dict[str, Any]]:
        self.check_space(space)
        index = genome_to_index(genome)
        column = TABLE_COLUMNS[self.dataset]
        value = self._table.values[column].get(index)
        if value is None:
            raise InvalidConfigError(f"accuracy table {self.path} has no row for nb201_index {index}")
        listed = self._table.arch.get(index, "")
        expected = genome_to_arch_str(genome)
        if listed and listed != expected:
            raise InvalidConfigError(
                f"accuracy table {self.path} lists {listed} at nb201_index {index}, where NB201 has "
                f"{expected}; the file is not in NB201 index order"
            )
        return value, {"nb201_index": index, "dataset": self.dataset}


# --------------------------------------------------------------------------- image data


@dataclasses.dataclass(frozen=True)
class _ImageData:
    """A classification set at its native resolution, normalised by the training statistics."""

    x_train: torch.Tensor  # (N, C, H, W) float32, C in (1, 3)
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    #: JSON-able identity of the data, for settings
    source: Mapping[str, Any]


def _normalise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel standardisation with the training set's mean and deviation."""
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True)
    std = np.where(std > 0, std, 1.0)
    as_tensor = lambda a: torch.from_numpy(((a - mean) / std).astype(np.float32))  # noqa: E731
    return as_tensor(x_train), as_tensor(x_test)


@functools.lru_cache(maxsize=4)
def _digits(split_seed: int, test_fraction: float) -> _ImageData:
    """scikit-learn's bundled digits (1,797 8x8 grey images, 10 classes), split with ``split_seed``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)[:, None]  # (N, 1, 8, 8), values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(split_seed).permutation(len(labels))
    n_test = max(1, round(test_fraction * len(labels)))
    test, train = order[:n_test], order[n_test:]
    x_train, x_test = _normalise(images[train], images[test])
    return _ImageData(
        x_train=x_train,
        y_train=torch.from_numpy(labels[train]),
        x_test=x_test,
        y_test=torch.from_numpy(labels[test]),
        num_classes=int(labels.max()) + 1,
        source={"data": "digits", "split_seed": split_seed, "test_fraction": test_fraction},
    )


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_LOCK = threading.Lock()
_NPZ_CACHE: dict[tuple[str, int, int], _ImageData] = {}


def _npz_images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0 or min(x.shape[2:]) < 1:
        raise InvalidConfigError(
            f"{path}: {key} must be images NCHW (C 1 or 3) or NHW, got shape {tuple(x.shape)}"
        )
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise InvalidConfigError(f"{path}: {key} must hold real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise InvalidConfigError(f"{path}: {key} has NaN or infinite values")
    return x


def _npz_labels(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise InvalidConfigError(
            f"{path}: {key} must be {n} labels (one per image), got shape {tuple(y.shape)}"
        )
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise InvalidConfigError(f"{path}: {key} must be integer class labels, got dtype {y.dtype}")
    if not np.isfinite(y).all() or (y != np.round(y)).any() or (y < 0).any():
        raise InvalidConfigError(f"{path}: {key} must be integer class labels >= 0")
    return y.astype(np.int64)


def _load_npz(path: Path) -> _ImageData:
    """A user's ``.npz`` with ``x_train, y_train, x_test, y_test`` (read once per file version)."""
    if not path.is_file():
        raise DataNotFoundError(f"training data file {path} not found")
    stamp = _file_stamp(path)
    with _NPZ_LOCK:
        cached = _NPZ_CACHE.get(stamp)
    if cached is not None:
        return cached
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in _NPZ_KEYS if k not in archive.files]
            if missing:
                raise InvalidConfigError(
                    f"{path} lacks array(s) {', '.join(missing)}; a training .npz holds {', '.join(_NPZ_KEYS)}"
                )
            arrays = {k: np.asarray(archive[k]) for k in _NPZ_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidConfigError(f"cannot read {path} as an .npz file: {reason}") from None
    x_train = _npz_images(path, "x_train", arrays["x_train"])
    x_test = _npz_images(path, "x_test", arrays["x_test"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise InvalidConfigError(
            f"{path}: x_train images are {x_train.shape[1:]} (CHW) but x_test images are {x_test.shape[1:]}"
        )
    y_train = _npz_labels(path, "y_train", arrays["y_train"], len(x_train))
    y_test = _npz_labels(path, "y_test", arrays["y_test"], len(x_test))
    xt, xv = _normalise(x_train, x_test)
    data = _ImageData(
        x_train=xt,
        y_train=torch.from_numpy(y_train),
        x_test=xv,
        y_test=torch.from_numpy(y_test),
        num_classes=int(max(y_train.max(), y_test.max())) + 1,
        source={"data": "npz", "sha256": file_sha256(path)},
    )
    with _NPZ_LOCK:
        _NPZ_CACHE[stamp] = data
    return data


def _image_data(
    data: Path | None, *, split_seed: int, test_fraction: float
) -> _ImageData:
    return _digits(split_seed, test_fraction) if data is None else _load_npz(data)


def _to_input(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A new tensor of the images resized (bilinear) to the network's input ``shape`` (NCHW)
    and replicated to its channels (the cached data is never handed to a network)."""
    channels, height, width = shape[1], shape[2], shape[3]
    if x.shape[1] != channels and x.shape[1] != 1:
        raise InvalidConfigError(
            f"the data has {x.shape[1]}-channel images but the network takes {channels} channels"
        )
    if tuple(x.shape[-2:]) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    else:
        x = x.clone()
    if x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1)
    return x.contiguous()


def _check_classes(data: _ImageData, space: ArchSpace) -> None:
    if data.num_classes > space.num_classes:
        raise InvalidConfigError(
            f"the data has {data.num_classes} classes but the {space.name} network has {space.num_classes} "
            f"outputs; build the space with num_classes >= {data.num_classes}"
        )


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` for the block and restored after it."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _data_option(evaluator: str, data: str | os.PathLike[str] | None) -> Path | None:
    if data is None or (isinstance(data, str) and data == "digits"):
        return None
    if not isinstance(data, (str, os.PathLike)):
        raise InvalidConfigError(
            f"accuracy evaluator {evaluator}: option data must be 'digits' or the path of an .npz, got {data!r}"
        )
    path = Path(data).expanduser()
    _load_npz(path)  # fail now, not in the middle of a search
    return path


# --------------------------------------------------------------------------- train

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
_DEFAULT_LR = {"sgd": 0.1, "adam": 0.002}


class TrainAccuracy(AccuracyEvaluator):
    """Top-1 % after a short seeded training on digits (bundled with scikit-learn) or a user's .npz.

    The network is built from ``seed``, trained with mini-batches in an order
    drawn from ``seed`` for ``epochs`` epochs, or fewer steps when
    ``max_steps`` or the wall-clock ``time_budget_s`` is reached first, then
    batch-norm statistics are re-estimated on ``bn_batches`` training batches
    (after a few dozen steps the running averages lag behind the weights) and
    the network is evaluated on the held-out split. Only the first
    ``data classes`` logits are used, so a network with more outputs than the
    data has classes trains as is.

    The time budget covers training only (not the evaluation) and is checked
    after each step, so one slow step (the first one of a process pays for
    oneDNN's set-up) may overrun it.

    Determinism: the same settings give the same accuracy on the same machine
    and thread count when training ends by ``epochs`` or ``max_steps``; when
    the time budget ends it, the number of steps (in the details) depends on
    the machine's speed.
    """

    name = "train"
    description = "short seeded training on digits (bundled) or a user .npz; top-1 % on the held-out split"
    spec_option = "data"
    uses_deployment = True
    #: training images that calibrate a deployed (quantized) network
    calibration_images = 64
    #: trained networks kept in this process (genome -> weights and training facts), so that deploying one
    #: architecture with several numerics (bit-widths) trains it once
    keep_trained = 4

    def __init__(
        self,
        *,
        data: str | os.PathLike[str] | None = None,
        epochs: int = 1,
        time_budget_s: float | None = 10.0,
        max_steps: int | None = None,
        batch_size: int = 32,
        optimizer: str = "adam",
        lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        seed: int = 0,
        split_seed: int = 0,
        test_fraction: float = 0.25,
        bn_batches: int = 4,
        threads: int | None = 1,
    ) -> None:
        """Options: ``data`` ("digits" or an .npz path with ``x_train, y_train, x_test, y_test``),
        ``epochs``, ``time_budget_s`` (seconds of training per candidate, None for no limit),
        ``max_steps`` (None for no limit), ``batch_size``, ``optimizer`` (adam or sgd), ``lr``
        (default 0.002 for adam, 0.1 for sgd), ``momentum`` (sgd, Nesterov), ``weight_decay``,
        ``seed`` (weights and batch order), ``split_seed`` and ``test_fraction`` (digits' split),
        ``bn_batches`` (training batches that re-estimate batch-norm statistics, 0 for none),
        ``threads`` (torch threads while training, restored after; one by default, which keeps
        results independent of the machine's core count and suits a pool of workers; None
        leaves torch's setting).
        """
        n = self.name
        self.data = _data_option(n, data)
        self.epochs = _int_option(n, "epochs", epochs, minimum=1)
        self.time_budget_s = (
            None if time_budget_s is None else _positive_float_option(n, "time_budget_s", time_budget_s)
        )
        self.max_steps = None if max_steps is None else _int_option(n, "max_steps", max_steps, minimum=1)
        self.batch_size = _int_option(n, "batch_size", batch_size, minimum=2)
        self.optimizer = _choice_option(n, "optimizer", optimizer, OPTIMIZERS)
        self.lr = _DEFAULT_LR[self.optimizer] if lr is None else _positive_float_option(n, "lr", lr)
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0 <= momentum < 1:
            raise InvalidConfigError(f"accuracy evaluator {n}: option momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real) or not 0 <= weight_decay < 1:
            raise InvalidConfigError(
                f"accuracy evaluator {n}: option weight_decay must be in [0, 1), got {weight_decay!r}"
            )
        self.weight_decay = float(weight_decay)
        self.seed = _int_option(n, "seed", seed, minimum=0)
        self.split_seed = _int_option(n, "split_seed", split_seed, minimum=0)
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or not 0 < test_fraction < 1:
            raise InvalidConfigError(
                f"accuracy evaluator {n}: option test_fraction must be in (0, 1), got {test_fraction!r}"
            )
        self.test_fraction = float(test_fraction)
        self.bn_batches = _int_option(n, "bn_batches", bn_batches, minimum=0)
        self.threads = None if threads is None else _int_option(n, "threads", threads, minimum=1)
        self._trained: dict[tuple, tuple[dict, dict]] = {}

    def settings(self) -> dict[str, Any]:
        data = _image_data(self.data, split_seed=self.split_seed, test_fraction=self.test_fraction)
        return {
            "evaluator": self.name,
            **data.source,
            "epochs": self.epochs,
            "time_budget_s": self.time_budget_s,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
            "bn_batches": self.bn_batches,
            "threads": self.threads,
        }

    def _make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            model.parameters(), lr=self.lr, momentum=self.momentum,
            nesterov=self.momentum > 0, weight_decay=self.weight_decay,
        )

    def _evaluate(
        self, space: ArchSpace, genome: tuple[int, ...], deploy: Deploy | None = None
    ) -> tuple[float, dict[str, Any]]:
        data = _image_data(self.data, split_seed=self.split_seed, test_fraction=self.test_fraction)
        _check_classes(data, space)
        shape = space.input_shape(genome)
        k = data.num_classes
        n = len(data.y_train)
        bs = min(self.batch_size, n)
        with _torch_threads(self.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = space.build(genome, seed=self.seed)
            # the network's identity: space, genome, input, and the shapes of its weights (space options)
            ident = (space.name, tuple(genome), tuple(shape),
                     tuple((name, tuple(v.shape)) for name, v in model.state_dict().items()))
            kept = self._trained.get(ident)
            if kept is not None and deploy is not None:
                model.load_state_dict(kept[0])
                model.eval()
                calibration = _to_input(data.x_train[: self.calibration_images], shape).numpy()
                correct = self._count_correct_deployed(deploy(model, shape, calibration), data, shape)
                return 100.0 * correct / len(data.y_test), {**kept[1], "deployed": True, "reused_training": True}
            optimizer = self._make_optimizer(model)
            order_gen = torch.Generator().manual_seed(self.seed)
            model.train()
            steps, epochs_done, stopped, diverged, loss_value = 0, 0, "epochs", False, float("nan")
            start = time.perf_counter()
            for _ in range(self.epochs):
                order = torch.randperm(n, generator=order_gen)
                for begin in range(0, n - 1, bs):  # a last batch of one image is skipped (batch norm)
                    idx = order[begin : begin + bs]
                    if len(idx) < 2:
                        break
                    logits = model(_to_input(data.x_train[idx], shape))[:, :k]
                    loss = F.cross_entropy(logits, data.y_train[idx])
                    if not torch.isfinite(loss):
                        diverged, stopped = True, "diverged"
                        break
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    steps += 1
                    loss_value = float(loss.detach())
                    if self.max_steps is not None and steps >= self.max_steps:
                        stopped = "max_steps"
                        break
                    if self.time_budget_s is not None and time.perf_counter() - start >= self.time_budget_s:
                        stopped = "time_budget"
                        break
                else:
                    epochs_done += 1
                    continue
                break
            train_s = time.perf_counter() - start
            if not diverged:
                self._recalibrate_batchnorm(model, data, shape, order_gen)
                facts = {"steps": steps, "epochs_completed": epochs_done, "stopped_by": stopped,
                         "train_s": round(train_s, 4), "final_loss": loss_value if math.isfinite(loss_value) else None,
                         "train_samples": n, "test_samples": len(data.y_test), "classes": k}
                self._trained[ident] = (
                    {name: v.detach().clone() for name, v in model.state_dict().items()}, facts)
                while len(self._trained) > self.keep_trained:
                    self._trained.pop(next(iter(self._trained)))
            if deploy is not None and not diverged:
                model.eval()
                calibration = _to_input(data.x_train[: self.calibration_images], shape).numpy()
                predict = deploy(model, shape, calibration)
                correct = self._count_correct_deployed(predict, data, shape)
            else:
                correct = self._count_correct(model, data, shape)
        accuracy = 100.0 * correct / len(data.y_test)
        details = {
            "steps": steps,
            "epochs_completed": epochs_done,
            "stopped_by": stopped,
            "train_s": round(train_s, 4),
            "final_loss": loss_value if math.isfinite(loss_value) else None,
            "train_samples": n,
            "test_samples": len(data.y_test),
            "classes": k,
            "deployed": deploy is not None and not diverged,
        }
        return accuracy, details

    @staticmethod
    def _count_correct_deployed(predict: Callable[[np.ndarray], np.ndarray], data: _ImageData,
                                shape: Sequence[int]) -> int:
        """Correct test predictions of a deployed network (``predict``: float inputs -> logits)."""
        k = data.num_classes
        correct = 0
        for begin in range(0, len(data.y_test), 256):
            x = _to_input(data.x_test[begin : begin + 256], shape).numpy()
            logits = np.asarray(predict(x))[:, :k]
            hit = (logits.argmax(axis=1) == data.y_test[begin : begin + 256].numpy()) & np.isfinite(logits).all(axis=1)
            correct += int(hit.sum())
        return correct

    def _recalibrate_batchnorm(
        self, model: nn.Module, data: _ImageData, shape: Sequence[int], gen: torch.Generator
    ) -> None:
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms or self.bn_batches == 0:
            return
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        order = torch.randperm(len(data.y_train), generator=gen)
        bs = min(self.batch_size, len(order))
        model.train()
        with torch.no_grad():
            for b in range(self.bn_batches):
                idx = order[b * bs : (b + 1) * bs]
                if len(idx) < 2:
                    break
                model(_to_input(data.x_train[idx], shape))

    @staticmethod
    def _count_correct(model: nn.Module, data: _ImageData, shape: Sequence[int]) -> int:
        model.eval()
        k = data.num_classes
        correct = 0
        with torch.no_grad():
            for begin in range(0, len(data.y_test), 256):
                logits = model(_to_input(data.x_test[begin : begin + 256], shape))[:, :k]
                hit = (logits.argmax(dim=1) == data.y_test[begin : begin + 256]) & torch.isfinite(logits).all(dim=1)
                correct += int(hit.sum())
        return correct


# --------------------------------------------------------------------------- proxies

PROXY_KINDS: tuple[str, ...] = ("naswot", "synflow")


def _replace_modules(
    model: nn.Module, match: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]
) -> None:
    """Replace, in place, every submodule for which ``match`` holds by ``make(old)``."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if match(child):
                setattr(parent, child_name, make(child))


class ProxyAccuracy(AccuracyEvaluator):
    """A zero-cost proxy of accuracy on one batch of a freshly initialised network.

    **The value is a score, not a percentage**: larger is better and only the
    order of the values means anything.

    * ``naswot`` (Mellor et al., "Neural Architecture Search without Training",
      ICML 2021): the binary activation pattern ``c`` of every ReLU/ReLU6 on a
      batch of ``batch_size`` training images (network in training mode, batch
      statistics) gives the kernel ``K = c c^T + (1 - c)(1 - c)^T`` (units
      where two images agree); the score is ``log det(K + I)``. The unit ridge
      keeps the determinant of a degenerate network (every image with the same
      pattern) finite and small instead of ``-inf``.
    * ``synflow`` (Tanaka et al. 2020, as a proxy: Abdelfattah et al. 2021):
      every parameter replaced by its absolute value, batch norm bypassed,
      ReLU6 unclipped (ReLU), float64; ``R = sum(network(ones))``; the score is
      ``ln(1 + sum |theta * dR/dtheta|)`` over conv and linear weights (the
      log keeps the value in range; it is monotone).

    A value that is not finite (float64 overflow) is a :class:`RunError`.
    """

    name = "proxy"
    description = "zero-cost proxy (naswot or synflow) on one batch; a score, larger is better, not %"
    is_percentage = False
    spec_option = "kind"

    def __init__(
        self,
        *,
        kind: str = "naswot",
        batch_size: int = 64,
        seed: int = 0,
        data: str | os.PathLike[str] | None = None,
        split_seed: int = 0,
        test_fraction: float = 0.25,
        threads: int | None = 1,
    ) -> None:
        """Options: ``kind`` (naswot or synflow), ``batch_size`` (naswot's batch), ``seed``
        (weights and the batch drawn), ``data`` (naswot's images: "digits" or an .npz path, as
        for the train evaluator), ``split_seed``/``test_fraction`` (digits' split),
        ``threads`` (torch threads while scoring, restored after; None leaves torch's setting).
        """
        n = self.name
        self.kind = _choice_option(n, "kind", kind, PROXY_KINDS)
        self.batch_size = _int_option(n, "batch_size", batch_size, minimum=2)
        self.seed = _int_option(n, "seed", seed, minimum=0)
        self.data = _data_option(n, data)
        self.split_seed = _int_option(n, "split_seed", split_seed, minimum=0)
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or not 0 < test_fraction < 1:
            raise InvalidConfigError(
                f"accuracy evaluator {n}: option test_fraction must be in (0, 1), got {test_fraction!r}"
            )
        self.test_fraction = float(test_fraction)
        self.threads = None if threads is None else _int_option(n, "threads", threads, minimum=1)

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"evaluator": self.name, "kind": self.kind, "seed": self.seed, "threads": self.threads}
        if self.kind == "naswot":
            data = _image_data(self.data, split_seed=self.split_seed, test_fraction=self.test_fraction)
            out.update(data.source)
            out["batch_size"] = self.batch_size
        return out

    def _evaluate(self, space: ArchSpace, genome: tuple[int, ...]) -> tuple[float, dict[str, Any]]:
        with _torch_threads(self.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = space.build(genome, seed=self.seed)
            if self.kind == "naswot":
                value = self._naswot(model, space.input_shape(genome))
            else:
                value = self._synflow(model, space.input_shape(genome))
        if not math.isfinite(value):
            raise RunError(
                f"{self.kind} proxy of {space.name} genome {list(genome)} is not finite (NaN or float64 overflow)"
            )
        return value, {"kind": self.kind}

    def _naswot(self, model: nn.Module, shape: Sequence[int]) -> float:
        data = _image_data(self.data, split_seed=self.split_seed, test_fraction=self.test_fraction)
        n = len(data.y_train)
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))[: min(self.batch_size, n)]
        x = _to_input(data.x_train[idx], shape)
        kernel = torch.zeros(len(idx), len(idx), dtype=torch.float64)

        def accumulate(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            codes = (output.detach().flatten(1) > 0).to(torch.float64)
            kernel.add_(codes @ codes.T).add_((1.0 - codes) @ (1.0 - codes).T)

        hooks = [
            m.register_forward_hook(accumulate) for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))
        ]
        if not hooks:
            raise InvalidConfigError("the naswot proxy needs ReLU or ReLU6 modules; the network has none")
        model.train()
        try:
            with torch.no_grad():
                model(x)
        finally:
            for h in hooks:
                h.remove()
        sign, logdet = torch.linalg.slogdet(kernel + torch.eye(len(idx), dtype=torch.float64))
        return float(logdet) if float(sign) > 0 else float("nan")

    @staticmethod
    def _synflow(model: nn.Module, shape: Sequence[int]) -> float:
        _replace_modules(model, lambda m: isinstance(m, nn.modules.batchnorm._BatchNorm), lambda m: nn.Identity())
        _replace_modules(model, lambda m: isinstance(m, nn.ReLU6), lambda m: nn.ReLU())
        model = model.double().eval()
        with torch.no_grad():
            for p in model.parameters():
                p.abs_()
        model.zero_grad(set_to_none=True)
        ones = torch.ones(1, *shape[1:], dtype=torch.float64)
        model(ones).sum().backward()
        total = 0.0
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None:
                    total += float((m.weight * m.weight.grad).abs().sum())
        return math.log1p(total) if math.isfinite(total) else float("nan")


for _cls in (ProxyAccuracy, TableAccuracy, TrainAccuracy):
    register_accuracy(_cls)

"""The images that the train evaluator learns from and the naswot proxy feeds: scikit-learn's
bundled digits or a user's ``.npz``, normalised by the training statistics and resized to the
network's input.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from hwnas.arch import ArchSpace
from hwnas.errors import DataNotFoundError, InvalidConfigError
from hwnas.util import file_sha256, file_stamp

__all__ = ["ImageData", "check_classes", "data_option", "image_data", "to_input"]

@dataclasses.dataclass(frozen=True)
class ImageData:
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
def _digits(split_seed: int, test_fraction: float) -> ImageData:
    """scikit-learn's bundled digits (1,797 8x8 grey images, 10 classes), split with ``split_seed``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)[:, None]  # (N, 1, 8, 8), values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(split_seed).permutation(len(labels))
    n_test = max(1, round(test_fraction * len(labels)))
    test, train = order[:n_test], order[n_test:]
    x_train, x_test = _normalise(images[train], images[test])
    return ImageData(
        x_train=x_train,
        y_train=torch.from_numpy(labels[train]),
        x_test=x_test,
        y_test=torch.from_numpy(labels[test]),
        num_classes=int(labels.max()) + 1,
        source={"data": "digits", "split_seed": split_seed, "test_fraction": test_fraction},
    )


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_LOCK = threading.Lock()
_NPZ_CACHE: dict[tuple[str, int, int], ImageData] = {}


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


def _load_npz(path: Path) -> ImageData:
    """A user's ``.npz`` with ``x_train, y_train, x_test, y_test`` (read once per file version)."""
    if not path.is_file():
        raise DataNotFoundError(f"training data file {path} not found")
    stamp = file_stamp(path)
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
    data = ImageData(
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


def image_data(data: Path | None, *, split_seed: int, test_fraction: float) -> ImageData:
    """The images of a ``data`` option: digits split by ``split_seed`` and ``test_fraction``, or the .npz."""
    return _digits(split_seed, test_fraction) if data is None else _load_npz(data)


def data_option(evaluator: str, data: str | os.PathLike[str] | None) -> Path | None:
    """The ``data`` option: None for digits, else the path of an .npz, read (and checked) now."""
    if data is None or (isinstance(data, str) and data == "digits"):
        return None
    if not isinstance(data, (str, os.PathLike)):
        raise InvalidConfigError(
            f"accuracy evaluator {evaluator}: option data must be 'digits' or the path of an .npz, got {data!r}"
        )
    path = Path(data).expanduser()
    _load_npz(path)  # fail now, not in the middle of a search
    return path


def to_input(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
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


def check_classes(data: ImageData, space: ArchSpace) -> None:
    """Raise :class:`InvalidConfigError` if the network has fewer outputs than the data has classes."""
    if data.num_classes > space.num_classes:
        raise InvalidConfigError(
            f"the data has {data.num_classes} classes but the {space.name} network has {space.num_classes} "
            f"outputs; build the space with num_classes >= {data.num_classes}"
        )

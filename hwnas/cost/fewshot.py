"""Few-shot latency for a device the user does not own (HELP's setting).

The user measures K architectures of the nb201 or fbnet space on the new
device; the published device columns in the benchmark data folder (see
:mod:`hwnas.data`) are the prior. Every architecture ``a`` is described by

* ``z(a)``: its log latency on each prior device, standardised over the
  device's table (nb201: the table itself, all 15,625 cells; fbnet: an
  additive per-layer model of each device fitted by least squares on the
  5,000 listed architectures, so any of the 9^22 architectures has a value;
  it is exact for the lookup-table devices raspi4, pixel3, eyeriss and fpga,
  and smooths the measurement noise of the listed GPUs and server CPUs);
* ``o(a)``: the one-hot operation of each edge (nb201) or layer (fbnet).

The model is linear in log latency, ``log ms = b + w . z(a) + v . c o(a)``
(``c`` = :data:`OP_SCALE`), fitted to the K shots by one of:

* ``nearest``: the prior device with the highest Kendall tau on the shots,
  rescaled (the baseline of the issue);
* ``transfer``: ridge regression over all prior devices and the one-hot terms;
  the ridge strength chosen by exact leave-one-out error on the shots;
* ``anchored``: the same ridge, shrunk toward ``nearest`` instead of toward 0
  (with few shots it stays near the best single device, with more it moves);
* ``ensemble`` (default): the mean of ``transfer`` and ``anchored`` in log
  space (still one linear model).

Chosen by ``benchmarks/fewshot_latency.py`` (leave one device column out,
5 seeds, K in {5, 10, 20, 50}): ``ensemble`` has the best or near-best median
Kendall tau over both spaces at K = 10 and 20. A model is saved as JSON
(format :data:`FORMAT`); nothing is pickled.
"""

from __future__ import annotations

import csv
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from hwnas.arch import fbnet, nb201
from hwnas.data import require_data_file
from hwnas.errors import InvalidConfigError, InvalidGenomeError
from hwnas.util import read_json_file, write_json_atomic

#: the ``format`` field of a saved few-shot model
FORMAT = "hwnas-fewshot-latency"
VERSION = 1
SPACES = ("nb201", "fbnet")
METHODS = ("nearest", "transfer", "anchored", "ensemble")
DEFAULT_METHOD = "ensemble"
#: fewest shots a model is fitted from
MIN_SHOTS = 3
#: scale of the one-hot operation terms next to the standardised device terms (ridge penalises both alike)
OP_SCALE = 0.1
#: ridge strengths tried by leave-one-out (1e6: the ridge part is switched off)
ALPHAS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1e3, 1e6)
_NUM_OPS = {"nb201": len(nb201.OPS), "fbnet": len(fbnet.OPS)}
_NUM_GENES = {"nb201": len(nb201.EDGES), "fbnet": len(fbnet.LAYERS)}


# --------------------------------------------------------------------------- architectures

def parse_arch(space: str, text: str) -> tuple[int, ...]:
    """The genome of an architecture as the data files write it: an NB201 string, or 22 FBNet op indices."""
    _check_space(space)
    text = str(text).strip()
    if space == "nb201":
        if text and text[0].isdigit():
            raise InvalidGenomeError(f"{text!r} looks like an fbnet architecture (op indices); this is nb201, "
                                     "whose architectures are written |op~0|+|op~0|op~1|+|...|")
        return nb201.arch_str_to_genome(text)
    if text.startswith("|"):
        raise InvalidGenomeError(f"{text[:40]!r} is an nb201 architecture string; this is fbnet, whose "
                                 f"architectures are {len(fbnet.LAYERS)} op indices 0..{len(fbnet.OPS) - 1} "
                                 "separated by spaces")
    parts = text.split()
    if len(parts) != len(fbnet.LAYERS) or not all(p.isdigit() and int(p) < len(fbnet.OPS) for p in parts):
        raise InvalidGenomeError(f"fbnet: an architecture is {len(fbnet.LAYERS)} op indices 0..{len(fbnet.OPS) - 1} "
                                 f"separated by spaces, got {text[:80]!r}")
    return tuple(int(p) for p in parts)


def format_arch(space: str, genome: Sequence[int]) -> str:
    """The data files' spelling of ``genome`` (inverse of :func:`parse_arch`)."""
    _check_space(space)
    if space == "nb201":
        return nb201.genome_to_arch_str(genome)
    return " ".join(str(int(g)) for g in genome)


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise InvalidConfigError(f"few-shot latency models exist for the spaces {', '.join(SPACES)}, not {space!r}")


def _read_csv(path: str | os.PathLike, columns: Sequence[str], what: str) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise InvalidConfigError(f"{what} file {path} does not exist")
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in columns if c not in fields]
            if missing:
                raise InvalidConfigError(f"{path}: a {what} file needs the column(s) {', '.join(columns)}; "
                                         f"missing {', '.join(missing)} (header: {','.join(fields) or 'none'})")
            return [{k.strip(): (v or "") for k, v in row.items() if k is not None} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidConfigError(f"{path}: not a readable CSV file ({exc})") from None


def read_shots(path: str | os.PathLike, space: str) -> list[tuple[tuple[int, ...], float]]:
    """``(genome, latency_ms)`` of each row of a shots CSV (columns ``arch``, ``latency_ms``)."""
    _check_space(space)
    shots: dict[tuple[int, ...], list[float]] = {}
    for line, row in enumerate(_read_csv(path, ("arch", "latency_ms"), "shots"), start=2):
        try:
            genome = parse_arch(space, row["arch"])
        except InvalidGenomeError as exc:
            raise InvalidGenomeError(f"{path} line {line}: {exc}") from None
        try:
            ms = float(row["latency_ms"])
        except ValueError:
            raise InvalidConfigError(f"{path} line {line}: latency_ms must be a number, "
                                     f"got {row['latency_ms']!r}") from None
        if not math.isfinite(ms) or ms <= 0:
            raise InvalidConfigError(f"{path} line {line}: latency_ms must be a positive number, got {ms:g}")
        shots.setdefault(genome, []).append(ms)
    if len(shots) < MIN_SHOTS:
        raise InvalidConfigError(f"{path}: a few-shot model needs at least {MIN_SHOTS} distinct measured "
                                 f"architectures, got {len(shots)}")
    # an architecture measured twice counts once, at its geometric mean
    return [(g, float(math.exp(np.mean(np.log(v))))) for g, v in shots.items()]


def read_archs(path: str | os.PathLike, space: str) -> list[tuple[int, ...]]:
    """The genomes of an architectures CSV (column ``arch``)."""
    _check_space(space)
    genomes = []
    for line, row in enumerate(_read_csv(path, ("arch",), "architectures"), start=2):
        try:
            genomes.append(parse_arch(space, row["arch"]))
        except InvalidGenomeError as exc:
            raise InvalidGenomeError(f"{path} line {line}: {exc}") from None
    return genomes


# --------------------------------------------------------------------------- the prior

@dataclass(frozen=True)
class Prior:
    """The published device columns of one space, as functions of the architecture."""

    space: str
    devices: tuple[str, ...]
    #: log-latency mean and standard deviation of each device over its table (standardisation)
    mean: np.ndarray
    std: np.ndarray
    #: nb201: log latency of every cell, rows in lexicographic genome order; fbnet: None
    table: np.ndarray | None = None
    #: fbnet: additive model per device, ``ms = coef[0] + sum_l coef[1 + 9 l + op_l]``; nb201: None
    additive: np.ndarray | None = None
    #: the measured table rows (genomes, log ms per device) the prior was read from, for benchmarks
    genomes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=int))
    log_ms: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def log_latency(self, genomes: np.ndarray) -> np.ndarray:
        """``(N, devices)`` log latency of each genome on each prior device."""
        genomes = np.asarray(genomes, dtype=int).reshape(-1, _NUM_GENES[self.space])
        if self.table is not None:
            rank = np.zeros(len(genomes), dtype=int)
            for col in range(genomes.shape[1]):
                rank = rank * _NUM_OPS[self.space] + genomes[:, col]
            return self.table[rank]
        ms = self.additive[:, 0][None, :] + one_hot(self.space, genomes) @ self.additive[:, 1:].T
        return np.log(np.clip(ms, 1e-6, None))

    def features(self, genomes: np.ndarray, devices: Sequence[str]) -> np.ndarray:
        """``[z(a) over devices, OP_SCALE * one-hot(a)]``: the model's inputs."""
        cols = [self.devices.index(d) for d in devices]
        z = (self.log_latency(genomes)[:, cols] - self.mean[cols]) / self.std[cols]
        return np.hstack([z, OP_SCALE * one_hot(self.space, genomes)])


def one_hot(space: str, genomes: np.ndarray) -> np.ndarray:
    genomes = np.asarray(genomes, dtype=int)
    n_ops = _NUM_OPS[space]
    out = np.zeros((len(genomes), genomes.shape[1] * n_ops))
    rows = np.arange(len(genomes))
    for col in range(genomes.shape[1]):
        out[rows, col * n_ops + genomes[:, col]] = 1.0
    return out


@functools.lru_cache(maxsize=2)
def load_prior(space: str) -> Prior:
    """The published prior of ``space`` (needs the benchmark data folder; one clear error when absent)."""
    _check_space(space)
    path = require_data_file(f"{space}/latency.csv")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        devices = tuple(c[len("lat_ms_"):] for c in reader.fieldnames or [] if c.startswith("lat_ms_"))
        rows = list(reader)
    ms = np.array([[float(r[f"lat_ms_{d}"]) for d in devices] for r in rows])
    log_ms = np.log(ms)
    if space == "nb201":
        genomes = np.array([nb201.index_to_genome(int(r["nb201_index"])) for r in rows], dtype=int)
        rank = np.zeros(len(genomes), dtype=int)
        for col in range(genomes.shape[1]):
            rank = rank * _NUM_OPS[space] + genomes[:, col]
        table = np.full((nb201.NUM_ARCHS, len(devices)), np.nan)
        table[rank] = log_ms
        return Prior(space, devices, log_ms.mean(0), log_ms.std(0), table=table, genomes=genomes, log_ms=log_ms)
    genomes = np.array([[int(v) for v in r["ops"].split()] for r in rows], dtype=int)
    design = np.hstack([np.ones((len(genomes), 1)), one_hot(space, genomes)])
    additive = np.linalg.lstsq(design, ms, rcond=None)[0].T
    smooth = np.log(np.clip(design @ additive.T, 1e-6, None))
    return Prior(space, devices, smooth.mean(0), smooth.std(0), additive=additive, genomes=genomes, log_ms=log_ms)


# --------------------------------------------------------------------------- fitting

def _loo_ridge(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Ridge weights of centred ``x`` on centred residual ``r``, strength chosen by exact leave-one-out error."""
    best = None
    n = len(r)
    gram = x @ x.T  # dual form: K x K, cheap for the few shots
    for alpha in ALPHAS:
        hat = gram @ np.linalg.inv(gram + alpha * np.eye(n))
        loo = (r - hat @ r) / np.clip(1.0 - np.diag(hat) - 1.0 / n, 1e-9, None)
        err = float(np.mean(loo ** 2))
        if best is None or err < best[0] - 1e-12:
            best = (err, alpha)
    alpha = best[1]
    return x.T @ np.linalg.solve(gram + alpha * np.eye(n), r)


def fit_weights(x: np.ndarray, y: np.ndarray, n_devices: int, method: str) -> tuple[float, np.ndarray]:
    """``(b, w)`` with ``y ~ b + x w`` for the shots' features ``x`` and log latencies ``y``."""
    if method not in METHODS:
        raise InvalidConfigError(f"unknown few-shot method {method!r}; known: {', '.join(METHODS)}")
    xm, ym = x.mean(0), y.mean()
    xc, yc = x - xm, y - ym
    taus = [kendalltau(x[:, i], y)[0] for i in range(n_devices)]
    best = int(np.nanargmax(np.nan_to_num(taus, nan=-2.0)))
    col = xc[:, best]
    anchor = np.zeros(x.shape[1])
    anchor[best] = float(col @ yc) / max(float(col @ col), 1e-12)
    if method == "nearest":
        w = anchor
    elif method == "transfer":
        w = _loo_ridge(xc, yc)
    elif method == "anchored":
        w = anchor + _loo_ridge(xc, yc - xc @ anchor)
    else:
        w = 0.5 * (_loo_ridge(xc, yc) + anchor + _loo_ridge(xc, yc - xc @ anchor))
    return float(ym - xm @ w), w


@dataclass(frozen=True)
class FewShotModel:
    """A fitted few-shot latency model of one device (JSON, format :data:`FORMAT`)."""

    space: str
    method: str
    devices: tuple[str, ...]
    intercept: float
    device_weights: tuple[float, ...]
    op_weights: tuple[float, ...]
    shots: tuple[tuple[str, float], ...]
    name: str = "fewshot"

    def predict(self, genomes: Sequence[Sequence[int]], prior: Prior | None = None) -> np.ndarray:
        """Latency in ms of each genome."""
        prior = prior or load_prior(self.space)
        unknown = [d for d in self.devices if d not in prior.devices]
        if unknown:
            raise InvalidConfigError(f"few-shot model for {self.space} uses prior devices {', '.join(unknown)}, "
                                     f"which the data folder's {self.space}/latency.csv lacks")
        x = prior.features(np.asarray(genomes, dtype=int), self.devices)
        return np.exp(self.intercept + x @ np.asarray(self.device_weights + self.op_weights))

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "space": self.space, "method": self.method,
                "name": self.name, "prior_devices": list(self.devices), "intercept": self.intercept,
                "device_weights": list(self.device_weights), "op_weights": list(self.op_weights),
                "op_scale": OP_SCALE, "shots": [{"arch": a, "latency_ms": ms} for a, ms in self.shots]}

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike, *, space: str | None = None) -> FewShotModel:
        """A saved model; one clear error for a missing, corrupt or foreign file, or one for another space."""
        path = Path(path)
        data = read_json_file(path, "few-shot model", "fit one with `hwnas predictor fewshot`")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") or data.get("kind") or "no format field" if isinstance(data, dict) else \
                type(data).__name__
            raise InvalidConfigError(f"{path} is not a few-shot latency model (format {FORMAT!r}); found {found!r} "
                                     "(a kernel or network predictor goes to --cost predictor:FILE on its target)")
        try:
            model = cls(space=str(data["space"]), method=str(data["method"]),
                        devices=tuple(str(d) for d in data["prior_devices"]),
                        intercept=float(data["intercept"]),
                        device_weights=tuple(float(v) for v in data["device_weights"]),
                        op_weights=tuple(float(v) for v in data["op_weights"]),
                        shots=tuple((str(s["arch"]), float(s["latency_ms"])) for s in data["shots"]),
                        name=str(data.get("name", "fewshot")))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidConfigError(f"{path}: corrupt few-shot model ({type(exc).__name__}: {exc})") from None
        if model.space not in SPACES or len(model.device_weights) != len(model.devices) or \
                len(model.op_weights) != _NUM_GENES[model.space] * _NUM_OPS[model.space] or \
                not all(math.isfinite(v) for v in (model.intercept, *model.device_weights, *model.op_weights)):
            raise InvalidConfigError(f"{path}: corrupt few-shot model (weights do not match its space "
                                     f"{model.space!r})")
        if space is not None and model.space != space:
            raise InvalidConfigError(f"few-shot model {path} is for the {model.space} space, not {space}")
        return model


def fit(space: str, shots: Sequence[tuple[Sequence[int], float]], *, method: str = DEFAULT_METHOD,
        exclude: Sequence[str] = (), prior: Prior | None = None, name: str = "fewshot") -> FewShotModel:
    """Fit a few-shot model of a new device from ``shots`` = ``(genome, latency_ms)``.

    ``exclude`` drops prior devices (the leave-one-device-out benchmark drops the device it pretends not to own).
    """
    _check_space(space)
    if len(shots) < MIN_SHOTS:
        raise InvalidConfigError(f"a few-shot model needs at least {MIN_SHOTS} measured architectures, "
                                 f"got {len(shots)}")
    if any(not (ms > 0 and math.isfinite(ms)) for _, ms in shots):
        raise InvalidConfigError("every shot's latency_ms must be a positive number")
    prior = prior or load_prior(space)
    devices = tuple(d for d in prior.devices if d not in set(exclude))
    genomes = np.array([tuple(g) for g, _ in shots], dtype=int)
    x = prior.features(genomes, devices)
    y = np.log([ms for _, ms in shots])
    b, w = fit_weights(x, y, len(devices), method)
    return FewShotModel(space=space, method=method, devices=devices, intercept=b,
                        device_weights=tuple(float(v) for v in w[:len(devices)]),
                        op_weights=tuple(float(v) for v in w[len(devices):]),
                        shots=tuple((format_arch(space, g), float(ms)) for g, ms in shots), name=name)

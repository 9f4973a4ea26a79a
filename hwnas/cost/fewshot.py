"""Few-shot latency for a device the user does not own (HELP's setting).

The user measures K architectures of the nb201 or fbnet space on the new
device; the published device columns in the benchmark data folder (see
:mod:`hwnas.data`) are the prior. Every architecture ``a`` is described by

* ``ms(a)``: its latency on each prior device (nb201: the table itself, all
  15,625 cells; fbnet: an additive per-layer model of each device fitted by
  least squares on the 5,000 listed architectures, so any of the 9^22
  architectures has a value; it is exact for the lookup-table devices raspi4,
  pixel3, eyeriss and fpga, and smooths the measurement noise of the listed
  GPUs and server CPUs); ``z(a)``: its log, standardised over the table;
* ``o(a)``: the one-hot operation of each edge (nb201) or layer (fbnet);
* ``c(a)``: architecture cost features summed over the edges or layers
  (:func:`cost_features`: nb201: the count of each operation, all and on
  edges that connect input to output, and whether they connect; fbnet:
  pointwise and depthwise MACs, activations, conv blocks and grouped blocks).

Methods (``--method``), each fitted to the K shots:

* ``nearest``: the prior device with the highest Kendall tau on the shots,
  rescaled (the baseline of the issue);
* ``transfer``: ridge regression of log ms over ``z`` and ``o``, the ridge
  strength chosen by exact leave-one-out error on the shots;
* ``anchored``: the same ridge, shrunk toward ``nearest`` instead of toward 0;
* ``ensemble``: the mean of ``transfer`` and ``anchored`` in log space;
* ``mix``: ms as a non-negative mix of the prior devices' ms plus an
  intercept (non-negative least squares: a device's per-operation costs as a
  mix of the known devices' costs);
* ``cost``: ms as a non-negative combination of the cost features ``c``
  (an analytical model whose few coefficients the shots fit);
* ``mix-cost``: both sets of columns in one non-negative fit;
* ``blend`` (default): the weighted geometric mean of ``ensemble``, ``mix``,
  ``cost`` and ``mix-cost``, each weighted by the inverse of its
  leave-one-out squared log error on the shots (so a device that behaves like
  the prior leans on it, one that follows its MACs leans on ``cost``).

Chosen by ``benchmarks/fewshot_latency.py`` (leave one device column out,
5 seeds, K in {5, 10, 20, 50}): ``blend`` has the best median Kendall tau of
the methods on both spaces at K = 10 and 20. A HELP-like meta-learned model
(an encoder of the one-hot architecture trained on the prior devices with
one linear head per device, a new device's head fitted to the shots;
``--meta`` of the benchmark) was measured as well and not kept: below
``blend`` alone, and at most 0.011 above it as a fifth part (see the README).
A model is saved as JSON (format :data:`FORMAT`); nothing is pickled.
"""

from __future__ import annotations

import csv
import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import lsq_linear
from scipy.stats import kendalltau

from hwnas.arch import fbnet, nb201
from hwnas.data import require_data_file
from hwnas.errors import InvalidConfigError, InvalidGenomeError
from hwnas.util import read_json_file, write_json_atomic

#: the ``format`` field of a saved few-shot model
FORMAT = "hwnas-fewshot-latency"
VERSION = 2
SPACES = ("nb201", "fbnet")
METHODS = ("nearest", "transfer", "anchored", "ensemble", "mix", "cost", "mix-cost", "blend")
DEFAULT_METHOD = "blend"
#: the fits ``blend`` weights by their leave-one-out error
BLEND_OF = ("ensemble", "mix", "cost", "mix-cost")
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
    #: mean over the table of each device's ms and of each cost feature (the scales of the ms fits)
    ms_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cost_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def log_latency(self, genomes: np.ndarray) -> np.ndarray:
        """``(N, devices)`` log latency of each genome on each prior device."""
        genomes = np.asarray(genomes, dtype=int).reshape(-1, _NUM_GENES[self.space])
        if self.table is not None:
            return self.table[_rank(self.space, genomes)]
        ms = self.additive[:, 0][None, :] + one_hot(self.space, genomes) @ self.additive[:, 1:].T
        return np.log(np.clip(ms, 1e-6, None))

    def features(self, genomes: np.ndarray, devices: Sequence[str]) -> np.ndarray:
        """``[z(a) over devices, OP_SCALE * one-hot(a)]``: the inputs of the log-linear fits."""
        cols = [self.devices.index(d) for d in devices]
        z = (self.log_latency(genomes)[:, cols] - self.mean[cols]) / self.std[cols]
        return np.hstack([z, OP_SCALE * one_hot(self.space, genomes)])

    def inputs(self, genomes: np.ndarray, devices: Sequence[str]) -> Inputs:
        """Every input of every method for ``genomes``, with ``devices`` as the prior."""
        genomes = np.asarray(genomes, dtype=int).reshape(-1, _NUM_GENES[self.space])
        cols = [self.devices.index(d) for d in devices]
        return Inputs(self.features(genomes, devices), np.exp(self.log_latency(genomes)[:, cols]),
                      cost_features(self.space, genomes), self.ms_scale[cols], self.cost_scale)


@dataclass(frozen=True)
class Inputs:
    """The inputs of the methods for N architectures (rows): log-linear features, prior ms, cost features."""

    x: np.ndarray
    ms: np.ndarray
    cost: np.ndarray
    ms_scale: np.ndarray
    cost_scale: np.ndarray

    def rows(self, idx) -> Inputs:
        return Inputs(self.x[idx], self.ms[idx], self.cost[idx], self.ms_scale, self.cost_scale)


def _rank(space: str, genomes: np.ndarray) -> np.ndarray:
    rank = np.zeros(len(genomes), dtype=int)
    for col in range(genomes.shape[1]):
        rank = rank * _NUM_OPS[space] + genomes[:, col]
    return rank


def one_hot(space: str, genomes: np.ndarray) -> np.ndarray:
    genomes = np.asarray(genomes, dtype=int)
    n_ops = _NUM_OPS[space]
    out = np.zeros((len(genomes), genomes.shape[1] * n_ops))
    rows = np.arange(len(genomes))
    for col in range(genomes.shape[1]):
        out[rows, col * n_ops + genomes[:, col]] = 1.0
    return out


#: names of the cost features of each space (:func:`cost_features`)
NB201_COSTED = ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect")
COST_FEATURES = {
    "nb201": tuple(f"n_{op}" for op in NB201_COSTED) + tuple(f"n_{op}_connected" for op in NB201_COSTED)
    + ("connected",),
    "fbnet": ("pointwise_macs", "depthwise_3x3_macs", "depthwise_5x5_macs", "activations", "expanded_activations",
              "identity_activations", "conv_blocks", "grouped_blocks"),
}


def _nb201_cell_costs(genome: Sequence[int]) -> list[float]:
    ops = [nb201.OPS[g] for g in genome]
    edges = list(zip(nb201.EDGES, ops))
    from_input = {0}
    for (to, src), op in edges:  # edges are listed in topological order of their target
        if op != "none" and src in from_input:
            from_input.add(to)
    to_output = {3}
    for (to, src), op in reversed(edges):
        if op != "none" and to in to_output:
            to_output.add(src)
    counts = [float(sum(op == name for op in ops)) for name in NB201_COSTED]
    connected = [float(sum(op == name and src in from_input and to in to_output for (to, src), op in edges))
                 for name in NB201_COSTED]
    return counts + connected + [float(3 in from_input)]


@functools.lru_cache(maxsize=1)
def _nb201_cost_table() -> np.ndarray:
    genomes = np.array(np.unravel_index(np.arange(nb201.NUM_ARCHS), (len(nb201.OPS),) * len(nb201.EDGES))).T
    return np.array([_nb201_cell_costs(g) for g in genomes])


def _fbnet_layer_costs(layer, op: str) -> list[float]:
    size, out = layer.size, layer.size // layer.stride
    if op == "skip":
        if layer.stride == 1 and layer.cin == layer.cout:
            return [0, 0, 0, 0, 0, size * size * layer.cin, 0, 0]
        return [out * out * layer.cin * layer.cout, 0, 0, out * out * (layer.cin + layer.cout), 0, 0, 1, 0]
    parts = op.split("_")
    kernel, expansion, groups = int(parts[0][1:]), int(parts[1][1:]), int(parts[2][1:]) if len(parts) > 2 else 1
    mid = layer.cin * expansion
    depthwise = out * out * mid * kernel * kernel
    return [size * size * layer.cin * mid / groups + out * out * mid * layer.cout / groups,
            depthwise if kernel == 3 else 0, depthwise if kernel == 5 else 0,
            size * size * (layer.cin + mid) + out * out * (mid + layer.cout), out * out * mid, 0, 1,
            float(groups > 1)]


@functools.lru_cache(maxsize=1)
def _fbnet_cost_table() -> np.ndarray:
    """``(layers, ops, features)``: the cost features of each op at each layer."""
    return np.array([[_fbnet_layer_costs(layer, op) for op in fbnet.OPS] for layer in fbnet.LAYERS], dtype=float)


def cost_features(space: str, genomes: np.ndarray) -> np.ndarray:
    """``(N, features)`` architecture cost features (:data:`COST_FEATURES`), summed over edges or layers.

    nb201 (one cell type repeated, all edges of a cell alike in shape): the count of each operation, the same
    count on edges that lie on a path from the cell input to its output, and whether such a path exists.
    fbnet: pointwise and depthwise multiply-accumulates, activation elements, conv blocks, grouped blocks.
    """
    genomes = np.asarray(genomes, dtype=int).reshape(-1, _NUM_GENES[space])
    if space == "nb201":
        return _nb201_cost_table()[_rank(space, genomes)]
    table = _fbnet_cost_table()
    return table[np.arange(genomes.shape[1])[None, :], genomes].sum(axis=1)


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
        table = np.full((nb201.NUM_ARCHS, len(devices)), np.nan)
        table[_rank(space, genomes)] = log_ms
        return Prior(space, devices, log_ms.mean(0), log_ms.std(0), table=table, genomes=genomes, log_ms=log_ms,
                     ms_scale=ms.mean(0), cost_scale=_scale(cost_features(space, genomes)))
    genomes = np.array([[int(v) for v in r["ops"].split()] for r in rows], dtype=int)
    design = np.hstack([np.ones((len(genomes), 1)), one_hot(space, genomes)])
    additive = np.linalg.lstsq(design, ms, rcond=None)[0].T
    smooth = np.clip(design @ additive.T, 1e-6, None)
    return Prior(space, devices, np.log(smooth).mean(0), np.log(smooth).std(0), additive=additive, genomes=genomes,
                 log_ms=log_ms, ms_scale=smooth.mean(0), cost_scale=_scale(cost_features(space, genomes)))


def _scale(values: np.ndarray) -> np.ndarray:
    mean = values.mean(0)
    return np.where(mean > 0, mean, 1.0)


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
    """``(b, w)`` with ``y ~ b + x w`` for the shots' log-linear features ``x`` and log latencies ``y``.

    The log-linear methods only: ``nearest``, ``transfer``, ``anchored``, ``ensemble``.
    """
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
class Term:
    """One fitted part of a model; a model's log latency is the weighted sum of its terms' log latencies.

    ``log``: ``log ms = intercept + device_weights . z(a) + extra_weights . OP_SCALE one-hot(a)``;
    ``ms``: ``ms = max(floor_ms, intercept + device_weights . ms(a) + extra_weights . cost_features(a))``.
    """

    kind: str
    weight: float
    intercept: float
    device_weights: tuple[float, ...]
    extra_weights: tuple[float, ...]
    floor_ms: float = 0.0

    def log_ms(self, inputs: Inputs) -> np.ndarray:
        if self.kind == "log":
            return self.intercept + inputs.x @ np.asarray(self.device_weights + self.extra_weights)
        ms = self.intercept + inputs.ms @ np.asarray(self.device_weights) + \
            inputs.cost @ np.asarray(self.extra_weights)
        return np.log(np.maximum(ms, self.floor_ms))


def _fit_log(inputs: Inputs, y: np.ndarray, method: str) -> Term:
    n_devices = inputs.ms.shape[1]
    b, w = fit_weights(inputs.x, y, n_devices, method)
    return Term("log", 1.0, b, tuple(float(v) for v in w[:n_devices]), tuple(float(v) for v in w[n_devices:]))


def _fit_ms(inputs: Inputs, y: np.ndarray, method: str) -> Term:
    """Non-negative least squares of ms over prior ms (``mix``), cost features (``cost``) or both, plus intercept."""
    ms = np.exp(y)
    scale = float(ms.mean())
    n_devices, n_cost = inputs.ms.shape[1], inputs.cost.shape[1]
    use_devices, use_cost = method in ("mix", "mix-cost"), method in ("cost", "mix-cost")
    cols = ([inputs.ms / inputs.ms_scale] if use_devices else []) + \
        ([inputs.cost / inputs.cost_scale] if use_cost else [])
    design = np.hstack([np.ones((len(y), 1)), *cols])
    lower = np.r_[-np.inf, np.zeros(design.shape[1] - 1)]
    coef = lsq_linear(design, ms / scale, bounds=(lower, np.inf), method="bvls").x * scale
    w = coef[1:]
    device_w = w[:n_devices] / inputs.ms_scale if use_devices else np.zeros(n_devices)
    cost_w = w[n_devices if use_devices else 0:] / inputs.cost_scale if use_cost else np.zeros(n_cost)
    return Term("ms", 1.0, float(coef[0]), tuple(float(v) for v in device_w), tuple(float(v) for v in cost_w),
                floor_ms=0.01 * float(ms.min()))


def _fit_one(inputs: Inputs, y: np.ndarray, method: str) -> Term:
    return _fit_log(inputs, y, method) if method in ("nearest", "transfer", "anchored", "ensemble") else \
        _fit_ms(inputs, y, method)


def loo_error(predict: Callable[[np.ndarray, int], float], y: np.ndarray) -> float:
    """Mean squared leave-one-out error of a fit: ``predict(train, i)`` fits to the shots ``train`` and
    returns its log-latency prediction of shot ``i`` (left out); floored at 1e-8 (a weight is its inverse)."""
    every = np.arange(len(y))
    loo = np.array([predict(np.delete(every, i), i) for i in every])
    return max(float(np.mean((loo - y) ** 2)), 1e-8)


def fit_terms(inputs: Inputs, y: np.ndarray, method: str) -> tuple[Term, ...]:
    """The terms of a ``method`` model fitted to shots with ``inputs`` (rows) and log latencies ``y``."""
    if method not in METHODS:
        raise InvalidConfigError(f"unknown few-shot method {method!r}; known: {', '.join(METHODS)}")
    if method != "blend":
        return (_fit_one(inputs, y, method),)
    terms, precision = [], []
    for part in BLEND_OF:
        precision.append(1.0 / loo_error(
            lambda train, i: float(_fit_one(inputs.rows(train), y[train], part).log_ms(inputs.rows([i]))[0]), y))
        terms.append(_fit_one(inputs, y, part))
    total = sum(precision)
    return tuple(Term(t.kind, p / total, t.intercept, t.device_weights, t.extra_weights, t.floor_ms)
                 for t, p in zip(terms, precision))


def predict_terms(terms: Sequence[Term], inputs: Inputs) -> np.ndarray:
    """Log latency of each row of ``inputs`` under a model's terms."""
    return sum(t.weight * t.log_ms(inputs) for t in terms)


@dataclass(frozen=True)
class FewShotModel:
    """A fitted few-shot latency model of one device (JSON, format :data:`FORMAT`)."""

    space: str
    method: str
    devices: tuple[str, ...]
    terms: tuple[Term, ...]
    shots: tuple[tuple[str, float], ...]
    name: str = "fewshot"

    def predict(self, genomes: Sequence[Sequence[int]], prior: Prior | None = None) -> np.ndarray:
        """Latency in ms of each genome."""
        prior = prior or load_prior(self.space)
        unknown = [d for d in self.devices if d not in prior.devices]
        if unknown:
            raise InvalidConfigError(f"few-shot model for {self.space} uses prior devices {', '.join(unknown)}, "
                                     f"which the data folder's {self.space}/latency.csv lacks")
        return np.exp(predict_terms(self.terms, prior.inputs(np.asarray(genomes, dtype=int), self.devices)))

    def summary(self) -> str:
        """One line: the blend's parts and weights, or the largest prior weights of a single fit."""
        if len(self.terms) > 1:
            return "blend of " + ", ".join(f"{part} {t.weight:.2f}" for part, t in zip(BLEND_OF, self.terms))
        term = self.terms[0]
        top = sorted(zip(self.devices, term.device_weights), key=lambda t: -abs(t[1]))[:3]
        what = "log-latency weights" if term.kind == "log" else "ms weights"
        return f"largest prior {what}: " + ", ".join(f"{d} {w:+.3g}" for d, w in top)

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "space": self.space, "method": self.method,
                "name": self.name, "prior_devices": list(self.devices), "op_scale": OP_SCALE,
                "cost_features": list(COST_FEATURES[self.space]),
                "terms": [{"kind": t.kind, "weight": t.weight, "intercept": t.intercept,
                           "device_weights": list(t.device_weights),
                           ("op_weights" if t.kind == "log" else "cost_weights"): list(t.extra_weights),
                           **({"floor_ms": t.floor_ms} if t.kind == "ms" else {})} for t in self.terms],
                "shots": [{"arch": a, "latency_ms": ms} for a, ms in self.shots]}

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
            # version 1 files hold one log-linear fit at the top level
            raw_terms = data["terms"] if data.get("version", 1) >= 2 else [dict(data, kind="log", weight=1.0)]
            terms = tuple(Term(kind=str(t["kind"]), weight=float(t["weight"]), intercept=float(t["intercept"]),
                               device_weights=tuple(float(v) for v in t["device_weights"]),
                               extra_weights=tuple(float(v) for v in
                                                   t["op_weights" if t["kind"] == "log" else "cost_weights"]),
                               floor_ms=float(t.get("floor_ms", 0.0))) for t in raw_terms)
            model = cls(space=str(data["space"]), method=str(data["method"]),
                        devices=tuple(str(d) for d in data["prior_devices"]), terms=terms,
                        shots=tuple((str(s["arch"]), float(s["latency_ms"])) for s in data["shots"]),
                        name=str(data.get("name", "fewshot")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidConfigError(f"{path}: corrupt few-shot model ({type(exc).__name__}: {exc})") from None
        if model.space not in SPACES or not model.terms or not all(_term_fits(t, model) for t in model.terms):
            raise InvalidConfigError(f"{path}: corrupt few-shot model (weights do not match its space "
                                     f"{model.space!r})")
        if space is not None and model.space != space:
            raise InvalidConfigError(f"few-shot model {path} is for the {model.space} space, not {space}")
        return model


def _term_fits(term: Term, model: FewShotModel) -> bool:
    extra = _NUM_GENES[model.space] * _NUM_OPS[model.space] if term.kind == "log" else \
        len(COST_FEATURES[model.space])
    return term.kind in ("log", "ms") and len(term.device_weights) == len(model.devices) and \
        len(term.extra_weights) == extra and \
        all(math.isfinite(v) for v in (term.weight, term.intercept, term.floor_ms, *term.device_weights,
                                        *term.extra_weights))


def fit(space: str, shots: Sequence[tuple[Sequence[int], float]], *, method: str = DEFAULT_METHOD,
        exclude: Sequence[str] = (), prior: Prior | None = None, name: str = "fewshot") -> FewShotModel:
    """Fit a few-shot model of a new device from ``shots`` = ``(genome, latency_ms)``.

    ``exclude`` drops prior devices (the leave-one-device-out benchmark drops the device it pretends not to own).
    """
    _check_space(space)
    if method not in METHODS:
        raise InvalidConfigError(f"unknown few-shot method {method!r}; known: {', '.join(METHODS)}")
    if len(shots) < MIN_SHOTS:
        raise InvalidConfigError(f"a few-shot model needs at least {MIN_SHOTS} measured architectures, "
                                 f"got {len(shots)}")
    if any(not (ms > 0 and math.isfinite(ms)) for _, ms in shots):
        raise InvalidConfigError("every shot's latency_ms must be a positive number")
    prior = prior or load_prior(space)
    devices = tuple(d for d in prior.devices if d not in set(exclude))
    genomes = np.array([tuple(g) for g, _ in shots], dtype=int)
    terms = fit_terms(prior.inputs(genomes, devices), np.log([ms for _, ms in shots]), method)
    return FewShotModel(space=space, method=method, devices=devices, terms=terms,
                        shots=tuple((format_arch(space, g), float(ms)) for g, ms in shots), name=name)

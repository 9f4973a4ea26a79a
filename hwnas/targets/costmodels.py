"""Cheaper ways than an end-to-end measurement to price a compiled module.

The four cost methods of hwnas (see DESIGN.md) side by side:

* ``measure``: run the whole module (:mod:`hwnas.targets.measure`): the reference.
* ``lut`` (lookup table): each kernel of the compiled module (a
  :class:`~hwnas.targets.workloads.Workload`, keyed by its content hash, which
  covers the schedule the hardware knobs gave it) is compiled alone and
  measured once; the result is kept in a cache (the run's results store) and
  reused by every later candidate that contains the same kernel. A network's
  latency is the sum over its kernel calls plus the runtime's measured
  overhead (a fixed part per inference and a part per kernel call, see
  :func:`runtime_overhead`).
* ``analytical``: a roofline: each kernel call takes
  ``max(flops / peak_flops, bytes / bandwidth)`` with the kernel's FLOPs (TVM's
  estimate on the TIR) and its compulsory bytes (inputs, weights, outputs
  once), plus the same runtime overhead. The machine's peak FLOP rate and
  memory bandwidth are measured once per machine and thread count by
  :func:`machine_peaks` (a large fp32 matrix product through numpy's BLAS, and
  a large array copy) and cached. It needs no kernel measurement, and it
  ignores what the schedule does (it prices the work, not the code), so it
  ranks networks better than it ranks hardware configs.
* ``predictor``: a model trained on measurements (see
  :mod:`hwnas.pipeline.predictor` for training) over :func:`network_features`
  (per kernel kind: MACs, FLOPs, bytes and calls; totals; the hardware knobs).
  :class:`LatencyPredictor` holds an ensemble (bootstrap XGBoost, or MLPs in
  torch) and returns a mean and the ensemble's spread as its error bar.

The cache is anything with ``get(namespace, key, default)`` and
``put(namespace, key, value)``: :class:`hwnas.pipeline.store.ResultStore` in a
search, :class:`MemoryCache` otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import InvalidConfigError
from hwnas.targets.workloads import Workload, extract, prim_funcs


class MemoryCache:
    """A process-local cache with the store's ``get``/``put`` interface."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], Any] = {}

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        return self._data.get((namespace, key), default)

    def put(self, namespace: str, key: str, value: Any) -> None:
        self._data[(namespace, key)] = json.loads(json.dumps(value))


# ---------------------------------------------------------------------------------------------
# kernels measured alone


def kernel_args(func, seed: int = 0) -> list[np.ndarray]:
    """Random arrays for every buffer parameter of a PrimFunc."""
    rng = np.random.default_rng(seed)
    out = []
    for p in func.params:
        shape = [int(getattr(d, "value", d)) for d in p.shape]
        dtype = str(p.dtype)
        if np.issubdtype(np.dtype(dtype), np.floating):
            out.append(rng.standard_normal(shape).astype(dtype))
        else:
            out.append(rng.integers(-8, 8, size=shape).astype(dtype))
    return out


def kernel_timer(func, tvm_target, *, repeats: int = 10, min_repeat_ms: float = 5.0, device=None):
    """Compile a (scheduled) PrimFunc alone for ``tvm_target`` and return a call that times it.

    Each call of the result gives the median milliseconds of one call of the
    kernel on random inputs; timing it again does not compile it again.
    """
    import tvm

    from hwnas.errors import RunError
    from hwnas.util import error_line

    dev = device or tvm.cpu()
    try:
        with tvm_target:
            lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), tvm_target)
        lib = lib.jit() if hasattr(lib, "jit") else lib
        args = [tvm.runtime.tensor(a, dev) for a in kernel_args(func)]
        lib["main"](*args)  # warm-up
        timer = lib.time_evaluator("main", dev, number=1, repeat=repeats, min_repeat_ms=int(min_repeat_ms))
    except Exception as exc:
        raise RunError(f"measuring kernel alone failed: {error_line(exc)}") from None

    def time_it() -> float:
        try:
            return float(np.median(timer(*args).results)) * 1e3
        except Exception as exc:
            raise RunError(f"measuring kernel alone failed: {error_line(exc)}") from None

    return time_it


def measure_kernel(func, tvm_target, *, repeats: int = 10, min_repeat_ms: float = 5.0, device=None) -> float:
    """Median milliseconds of one call of a (scheduled) PrimFunc compiled alone for ``tvm_target``."""
    return kernel_timer(func, tvm_target, repeats=repeats, min_repeat_ms=min_repeat_ms, device=device)()


def _chain_module(n_calls: int):
    """A Relax module calling a trivial one-element kernel ``n_calls`` times in a chain."""
    import tvm
    from tvm import relax
    from tvm.script import tirx as T

    @T.prim_func(private=True)
    def bump(a: T.Buffer((1,), "float32"), b: T.Buffer((1,), "float32")):
        b[0] = a[0] + T.float32(1.0)

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1,), "float32"))
    with bb.function("main", [x]):
        gv = bb.add_func(bump, "bump")
        y = x
        for _ in range(n_calls):
            y = bb.emit(relax.call_tir(gv, (y,), relax.TensorType((1,), "float32")))
        bb.emit_func_output(y)
    return bb.get()


def runtime_overhead(tvm_target, *, cache, namespace: str, num_threads: int) -> dict[str, float]:
    """The VM's cost of one inference beyond its kernels: ``{"per_inference_ms", "per_call_ms"}``.

    Measured once (per namespace: target and thread count) on two chains of a
    trivial kernel, 1 and 65 calls long (the fastest of 15 repeats each), and
    cached: the per-call part is the slope, the per-inference part what is
    left of the short chain.
    """
    cached = cache.get(namespace, "overhead")
    if cached is not None:
        return cached
    from hwnas.pipeline.lower import compile_module
    from hwnas.targets import measure

    measure.set_num_threads(num_threads)
    times = {}
    for n in (1, 65):
        with tvm_target:
            ex = compile_module(_chain_module(n), tvm_target)
        # the fastest repeat: the overhead is a small difference of two times, and other work only adds
        times[n] = min(measure.measure_vm(ex, [np.zeros(1, "float32")], repeats=15, min_repeat_ms=10).samples_ms)
    per_call = max(0.0, (times[65] - times[1]) / 64)
    value = {"per_inference_ms": max(0.0, times[1] - per_call), "per_call_ms": per_call}
    cache.put(namespace, "overhead", value)
    return value


@dataclasses.dataclass
class LutResult:
    latency_ms: float
    hits: int
    misses: int
    #: per workload: (func, key, calls, ms per call)
    rows: list[tuple[str, str, int, float]]


def lut_latency(built, *, cache, namespace: str, num_threads: int,
                measure_fn: Callable[[Any, Any], float] | None = None) -> LutResult:
    """Latency of a built module as the sum of its kernels' cached (else measured) times plus overhead.

    ``namespace`` names the machine and settings the times belong to (the
    target, its LLVM cpu, the thread count); a kernel is looked up by its
    content key and measured only when absent.
    """
    from hwnas.targets import measure

    measure_fn = measure_fn or (lambda func, tgt: measure_kernel(func, tgt))
    overhead = runtime_overhead(built.tvm_target, cache=cache, namespace=namespace, num_threads=num_threads)
    funcs = prim_funcs(built.module)
    total = overhead["per_inference_ms"]
    hits = misses = 0
    rows = []
    measured_threads = False
    for w in built.fact("workloads", lambda b: extract(b.module)):
        entry = cache.get(namespace, w.key)
        if entry is None:
            if not measured_threads:
                measure.set_num_threads(num_threads)
                measured_threads = True
            # the entry says what was measured, for whoever reads the table
            entry = {"ms": measure_fn(funcs[w.func], built.tvm_target), "kind": w.kind, "dtype": w.dtype,
                     "spatial": list(w.spatial), "reduction": list(w.reduction), "macs": w.macs,
                     "conv": dataclasses.asdict(w.conv) if w.conv else None, "hw": dict(built.hw)}
            cache.put(namespace, w.key, entry)
            misses += 1
        else:
            hits += 1
        ms = float(entry["ms"])
        total += w.calls * (ms + overhead["per_call_ms"])
        rows.append((w.func, w.key, w.calls, ms))
    return LutResult(latency_ms=total, hits=hits, misses=misses, rows=rows)


# ---------------------------------------------------------------------------------------------
# roofline


def machine_peaks(*, cache, namespace: str, num_threads: int) -> dict[str, float]:
    """Attainable fp32 GFLOP/s and memory GB/s of this machine with ``num_threads`` threads, measured once.

    FLOPs: the best of a few 1024^3 fp32 matrix products through numpy's BLAS,
    limited to ``num_threads`` (threadpoolctl). Bandwidth: the best of a few
    copies of a 64 MiB array (bytes read + written), well beyond any cache.
    """
    cached = cache.get(namespace, "peaks")
    if cached is not None:
        return cached
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    best = math.inf
    with threadpool_limits(limits=int(num_threads)):
        a @ a
        for _ in range(5):
            t0 = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t0)
    gflops = 2 * 1024**3 / best / 1e9
    src = np.ones(16 * 1024 * 1024, dtype=np.float32)
    dst = np.empty_like(src)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    gbps = 2 * src.nbytes / best / 1e9
    value = {"gflops": gflops, "gbps": gbps}
    cache.put(namespace, "peaks", value)
    return value


def roofline_ms(workloads: Sequence[Workload], *, gflops: float, gbps: float, per_inference_ms: float = 0.0,
                per_call_ms: float = 0.0) -> float:
    """Sum over kernel calls of ``max(flops / peak, bytes / bandwidth)``, plus the runtime overhead."""
    total = per_inference_ms
    for w in workloads:
        compute = w.flops / (gflops * 1e9)
        memory = w.bytes_moved / (gbps * 1e9)
        total += w.calls * (max(compute, memory) * 1e3 + per_call_ms)
    return total


# ---------------------------------------------------------------------------------------------
# features and the learned predictor

#: kernel kinds summarised separately in the features
FEATURE_KINDS = ("conv2d", "depthwise_conv2d", "group_conv2d", "dense", "pool", "reduce", "elementwise")


def network_features(workloads: Sequence[Workload], hw: dict[str, Any], hardware_space) -> dict[str, float]:
    """Named numeric features of a compiled network and its hardware config.

    Per kernel kind: MACs, FLOPs, bytes moved and calls; totals, the number of
    distinct kernels, the largest kernel's share of the FLOPs, the mean
    arithmetic intensity; every hardware knob (its value when numeric, its
    index among the choices otherwise). Sizes enter as ``log1p`` (latency
    spans orders of magnitude).
    """
    f: dict[str, float] = {}
    for kind in FEATURE_KINDS:
        ws = [w for w in workloads if w.kind == kind]
        f[f"{kind}.macs"] = math.log1p(sum(w.macs * w.calls for w in ws))
        f[f"{kind}.flops"] = math.log1p(sum(w.flops * w.calls for w in ws))
        f[f"{kind}.bytes"] = math.log1p(sum(w.bytes_moved * w.calls for w in ws))
        f[f"{kind}.calls"] = float(sum(w.calls for w in ws))
    flops = sum(w.flops * w.calls for w in workloads)
    moved = sum(w.bytes_moved * w.calls for w in workloads)
    f["total.macs"] = math.log1p(sum(w.macs * w.calls for w in workloads))
    f["total.flops"] = math.log1p(flops)
    f["total.bytes"] = math.log1p(moved)
    f["total.weight_bytes"] = math.log1p(sum(w.weight_bytes for w in workloads))
    f["total.calls"] = float(sum(w.calls for w in workloads))
    f["total.kernels"] = float(len(workloads))
    f["max_kernel_flops_share"] = max((w.flops * w.calls for w in workloads), default=0) / flops if flops else 0.0
    f["intensity"] = flops / moved if moved else 0.0
    for name, param in hardware_space.params.items():
        value = hw[name]
        f[f"hw.{name}"] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else float(param.index_of(value))
    return f


class LatencyPredictor:
    """An ensemble predicting log latency from :func:`network_features`; mean and spread in ms.

    ``kind``: ``xgb`` (bootstrap ensemble of XGBoost regressors) or ``mlp``
    (an ensemble of small torch MLPs, each on its own bootstrap resample and
    seed). Saved as one JSON file with its metadata (target, features,
    versions, training error) and the models themselves.
    """

    KINDS = ("xgb", "mlp")

    def __init__(self, kind: str, feature_names: Sequence[str], *, n_models: int = 5, seed: int = 0,
                 metadata: dict[str, Any] | None = None) -> None:
        if kind not in self.KINDS:
            raise InvalidConfigError(f"unknown predictor kind {kind!r}; known: {', '.join(self.KINDS)}")
        self.kind = kind
        self.feature_names = list(feature_names)
        self.n_models = int(n_models)
        self.seed = int(seed)
        self.metadata = dict(metadata or {})
        self.models: list[Any] = []
        self.mu = self.sigma = None

    def _matrix(self, rows: Sequence[dict[str, float]]) -> np.ndarray:
        missing = [n for n in self.feature_names if rows and n not in rows[0]]
        if missing:
            raise InvalidConfigError(f"the predictor needs features this network lacks: {', '.join(missing[:5])}")
        return np.array([[float(r[n]) for n in self.feature_names] for r in rows], dtype=np.float64)

    def fit(self, rows: Sequence[dict[str, float]], latency_ms: Sequence[float]) -> LatencyPredictor:
        X = self._matrix(rows)
        y = np.log(np.asarray(latency_ms, dtype=np.float64))
        if len(X) < 4:
            raise InvalidConfigError(f"a predictor needs at least 4 measured samples, got {len(X)}")
        self.mu = X.mean(axis=0)
        self.sigma = np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
        Z = (X - self.mu) / self.sigma
        rng = np.random.default_rng(self.seed)
        self.models = []
        for i in range(self.n_models):
            rows_i = np.arange(len(Z)) if i == 0 else rng.integers(0, len(Z), len(Z))
            self.models.append(self._fit_one(Z[rows_i], y[rows_i], self.seed * 1009 + i))
        return self

    def _fit_one(self, Z: np.ndarray, y: np.ndarray, seed: int):
        if self.kind == "xgb":
            from xgboost import XGBRegressor

            model = XGBRegressor(n_estimators=300, max_depth=4, learning_rate=0.05, subsample=0.9,
                                 tree_method="hist", n_jobs=1, random_state=seed, verbosity=0)
            model.fit(Z, y)
            return model.get_booster().save_raw(raw_format="json").decode()
        import torch

        torch.manual_seed(seed)
        net = _mlp(Z.shape[1])
        opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
        X = torch.tensor(Z, dtype=torch.float32)
        Y = torch.tensor(y, dtype=torch.float32).reshape(-1, 1)
        for _ in range(600):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(X), Y)
            loss.backward()
            opt.step()
        return {k: v.tolist() for k, v in net.state_dict().items()}

    def predict(self, rows: Sequence[dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """(mean ms, spread ms) per row: the ensemble's mean of exp(log-latency) and its standard deviation."""
        if not self.models:
            raise InvalidConfigError("the predictor has no trained models")
        Z = (self._matrix(rows) - self.mu) / self.sigma
        preds = np.exp(np.stack([self._predict_one(m, Z) for m in self.models]))
        return preds.mean(axis=0), preds.std(axis=0)

    def _predict_one(self, model, Z: np.ndarray) -> np.ndarray:
        if self.kind == "xgb":
            booster = _booster(model)
            import xgboost

            return np.asarray(booster.predict(xgboost.DMatrix(Z)), dtype=np.float64)
        import torch

        net = _mlp(Z.shape[1])
        net.load_state_dict({k: torch.tensor(v) for k, v in model.items()})
        with torch.no_grad():
            return net(torch.tensor(Z, dtype=torch.float32)).numpy()[:, 0].astype(np.float64)

    def to_json(self) -> dict[str, Any]:
        return {"format": "hwnas-latency-predictor/1", "kind": self.kind, "features": self.feature_names,
                "n_models": self.n_models, "seed": self.seed, "mu": list(map(float, self.mu)),
                "sigma": list(map(float, self.sigma)), "metadata": self.metadata, "models": self.models}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        return _load_predictor(str(Path(path).resolve()))


@functools.lru_cache(maxsize=8)
def _load_predictor(path: str) -> LatencyPredictor:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InvalidConfigError(f"predictor model {path} does not exist; train one with "
                                 "`hwnas predictor train`") from None
    except (OSError, ValueError) as exc:
        raise InvalidConfigError(f"predictor model {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != "hwnas-latency-predictor/1":
        raise InvalidConfigError(f"{path} is not an hwnas latency predictor")
    p = LatencyPredictor(data["kind"], data["features"], n_models=data["n_models"], seed=data["seed"],
                         metadata=data.get("metadata"))
    p.mu, p.sigma = np.array(data["mu"]), np.array(data["sigma"])
    p.models = data["models"]
    return p


@functools.lru_cache(maxsize=64)
def _booster(raw: str):
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(bytearray(raw.encode()))
    return booster


def _mlp(n_features: int):
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(n_features, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 1),
    )

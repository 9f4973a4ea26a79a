"""A kernel-level latency predictor per target: nn-Meter's method on hwnas's own compiled kernels.

One model per kernel kind (``conv2d``, ``depthwise_conv2d``, ``dense``,
``pool``, ``elementwise``, ...; a kind with too few measured kernels falls
back to a model of all kernels) predicts one call's latency of a kernel from
its workload record (:class:`~hwnas.ir.workloads.Workload`: kind, loop
extents, conv shape, MACs, FLOPs, bytes in/out/weights/workspace, the fused
epilogue named in the function), what the schedule made of its loops
(:func:`~hwnas.ir.workloads.schedule_summary`: parallel, vectorized and
unrolled extents, stages left) and the hardware knobs that scheduled it
(layout and block, tiles, loop order, vector width, unroll, threads,
quantization). A network's latency is the sum rule of the lookup table
(:mod:`hwnas.cost.lut`): the runtime's fixed overhead plus, per kernel call,
the predicted kernel time and the measured per-call overhead; plus a traffic
term fitted on a few networks measured whole (:meth:`KernelPredictor.fit_traffic`:
the memory traffic of weights and activations that kernels timed alone, in a
warm cache, do not pay).

The features are read from the scheduled TIR (or earlier): predicting needs
no LLVM code generation. The training kernels are the lookup table's own
entries (same cache namespace, same record), so the two feed each other;
:mod:`hwnas.pipeline.kernel_set` samples and times them (nn-Meter's adaptive
sampler). Models are XGBoost boosters saved as JSON (no pickle).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.cost.ensemble import fit_xgb
from hwnas.errors import InvalidConfigError
from hwnas.util import read_json_file, write_json_atomic

FORMAT = "hwnas-kernel-predictor/1"
#: kernels of a kind needed for a model of its own (fewer: the model of all kernels predicts them)
MIN_KIND_SAMPLES = 12
#: fused epilogue operators counted from the kernel's name
_EPILOGUE = ("add", "relu", "clip", "multiply", "divide", "cast", "round", "subtract", "max", "min", "exp",
             "sigmoid", "tanh", "transpose", "reshape", "pad", "concat", "layout_transform", "mean", "sum")
_XGB = dict(n_estimators=400, max_depth=6, learning_rate=0.05, subsample=0.9)


def kernel_features(entry: dict[str, Any], hw: dict[str, Any], hardware_space) -> dict[str, float]:
    """Named features of one kernel (a lookup-table entry or :meth:`Workload.as_dict`) under ``hw``."""
    f: dict[str, float] = {}
    for k in ("macs", "flops", "input_bytes", "weight_bytes", "output_bytes", "workspace_bytes"):
        f[k] = math.log1p(float(entry.get(k) or 0))
    spatial = list(entry.get("spatial") or ())
    reduction = list(entry.get("reduction") or ())
    f["n_spatial"], f["n_reduction"] = float(len(spatial)), float(len(reduction))
    for i in range(6):
        f[f"spatial{i}"] = math.log1p(spatial[i]) if i < len(spatial) and spatial[i] > 0 else 0.0
    for i in range(3):
        f[f"reduction{i}"] = math.log1p(reduction[i]) if i < len(reduction) and reduction[i] > 0 else 0.0
    conv = entry.get("conv") or {}
    for k in ("k", "c", "p", "q", "r", "s", "stride", "groups", "h", "w"):
        f[f"conv.{k}"] = math.log1p(float(conv.get(k, 0) or 0))
    schedule = entry.get("schedule") or {}
    for k in ("loops", "parallel", "vector", "unrolled", "auto_unroll", "stages"):
        f[f"sched.{k}"] = math.log1p(float(schedule.get(k, 0) or 0))
    dtype = str(entry.get("dtype") or "float32")
    f["dtype_bits"] = float("".join(ch for ch in dtype if ch.isdigit()) or 32)
    f["dtype_float"] = 1.0 if dtype.startswith(("float", "bfloat")) else 0.0
    name = str(entry.get("func") or "")
    tokens = name.split("_")
    f["name_tokens"] = float(len(tokens))
    for op in _EPILOGUE:
        f[f"op.{op}"] = float(name.count(op))
    moved = sum(float(entry.get(k) or 0) for k in ("input_bytes", "weight_bytes", "output_bytes"))
    f["intensity"] = math.log1p(float(entry.get("flops") or 0) / moved) if moved else 0.0
    for pname, param in hardware_space.params.items():
        value = hw.get(pname, param.default)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            f[f"hw.{pname}"] = float(value)
        else:
            try:
                f[f"hw.{pname}"] = float(param.index_of(value))
            except Exception:  # a value the space does not list: unknown
                f[f"hw.{pname}"] = -1.0
    return f


def training_rows(entries: Sequence[dict[str, Any]], hardware_space) -> list[tuple[str, dict[str, float], float]]:
    """``(kind, features, ms)`` of lookup-table entries that carry a full workload record and their knobs."""
    rows = []
    for e in entries:
        if not isinstance(e, dict) or "ms" not in e or "input_bytes" not in e or "hw" not in e:
            continue  # the runtime overhead, or an entry of an older table without the record
        ms = float(e["ms"])
        if ms > 0 and math.isfinite(ms):
            rows.append((str(e["kind"]), kernel_features(e, e["hw"], hardware_space), ms))
    return rows


class KernelPredictor:
    """Per-kind XGBoost models of log kernel time, the runtime overhead, and the sum rule."""

    def __init__(self, feature_names: Sequence[str], *, metadata: dict[str, Any] | None = None) -> None:
        self.feature_names = list(feature_names)
        #: kind -> the booster's raw JSON; ``"*"``: the model of all kernels
        self.models: dict[str, str] = {}
        self.metadata = dict(metadata or {})
        #: the runtime overhead the lookup table measured, per thread count: ``{"2": {"per_inference_ms",
        #: "per_call_ms"}}``
        self.overhead: dict[str, dict[str, float]] = {}
        #: the network's traffic term per thread count (:meth:`fit_traffic`): ``{"2": {"ms_per_mb": [weights,
        #: activations], "networks": n}}``; none: the plain sum rule
        self.traffic: dict[str, dict[str, Any]] = {}

    def _matrix(self, rows: Sequence[dict[str, float]]) -> np.ndarray:
        return np.array([[float(r.get(n, 0.0)) for n in self.feature_names] for r in rows], dtype=np.float64)

    def fit(self, kinds: Sequence[str], rows: Sequence[dict[str, float]], ms: Sequence[float], *,
            seed: int = 0) -> KernelPredictor:
        if len(rows) < 4:
            raise InvalidConfigError(f"a kernel predictor needs at least 4 measured kernels, got {len(rows)}")
        X, y, kinds = self._matrix(rows), np.log(np.asarray(ms, dtype=np.float64)), np.asarray(kinds)
        self.models = {"*": _raw(fit_xgb(X, y, seed, **_XGB))}
        for kind in sorted(set(kinds.tolist())):
            mask = kinds == kind
            if mask.sum() >= MIN_KIND_SAMPLES:
                self.models[kind] = _raw(fit_xgb(X[mask], y[mask], seed, **_XGB))
        return self

    def predict_kernels(self, kinds: Sequence[str], rows: Sequence[dict[str, float]]) -> np.ndarray:
        """Milliseconds of one call of each kernel."""
        if not self.models:
            raise InvalidConfigError("the kernel predictor has no trained models")
        import xgboost

        X = self._matrix(rows)
        out = np.zeros(len(rows))
        kinds = np.asarray(list(kinds))
        for kind in set(kinds.tolist()):
            mask = kinds == kind
            booster = _booster(self.models.get(kind, self.models["*"]))
            out[mask] = booster.predict(xgboost.DMatrix(X[mask], feature_names=None))
        return np.exp(out)

    def predict_network(self, workloads, hw: dict[str, Any], hardware_space) -> float:
        """The sum rule plus the network's traffic term (ms): ``per_inference + sum over kernels of calls x
        (kernel ms + per_call) + ms_per_mb . (weight MB, activation MB)`` (see :meth:`fit_traffic`)."""
        return self.predict_records([w.as_dict() for w in workloads], hw, hardware_space)

    def predict_records(self, records: Sequence[dict[str, Any]], hw: dict[str, Any], hardware_space, *,
                        traffic: bool = True) -> float:
        """:meth:`predict_network` of workload records (:meth:`Workload.as_dict`)."""
        threads = str(int(hw.get("num_threads", 1)))
        overhead = self.overhead.get(threads)
        if overhead is None:
            raise InvalidConfigError(f"the kernel predictor has no runtime overhead for num_threads="
                                     f"{hw.get('num_threads')}; it has {', '.join(sorted(self.overhead)) or 'none'}")
        rows = [kernel_features(r, hw, hardware_space) for r in records]
        per_call = self.predict_kernels([str(r["kind"]) for r in records], rows) if rows else np.zeros(0)
        calls = np.array([float(r["calls"]) for r in records], dtype=np.float64)
        total = overhead["per_inference_ms"] + np.sum(calls * (per_call + overhead["per_call_ms"]))
        coef = self.traffic.get(threads) if traffic else None
        if coef:
            total += float(np.dot(coef["ms_per_mb"], traffic_mb(records)))
        return float(total)

    def fit_traffic(self, networks: Sequence[dict[str, Any]], hardware_space) -> dict[str, Any]:
        """Fit the traffic term on networks measured whole (``{"records", "hw", "ms"}``), per thread count.

        Kernels timed alone find their weights and inputs in cache; in the network, a kernel's weights
        (and the activations the kernel before it left) come from memory when the network's data outgrows
        the cache. What the whole networks take beyond the sum rule is fitted as ``ms_per_mb . (weight MB,
        activation MB)`` by non-negative least squares on the relative error (a thread count needs 4
        networks). Returns the sum rule's and the fitted rule's share within +-10 % on those networks, per
        thread count.
        """
        from scipy.optimize import nnls

        report: dict[str, Any] = {}
        by_threads: dict[str, list] = {}
        for net in networks:
            by_threads.setdefault(str(int(net["hw"].get("num_threads", 1))), []).append(net)
        for threads, nets in sorted(by_threads.items()):
            if len(nets) < 4:
                continue
            sums = np.array([self.predict_records(n["records"], n["hw"], hardware_space, traffic=False)
                             for n in nets])
            ms = np.array([float(n["ms"]) for n in nets])
            A = np.array([traffic_mb(n["records"]) for n in nets])
            coef, _ = nnls(A / ms[:, None], (ms - sums) / ms)  # relative errors: small networks count as much
            self.traffic[threads] = {"ms_per_mb": [float(c) for c in coef], "networks": len(nets)}
            fitted = sums + A @ coef
            report[threads] = {"networks": len(nets),
                               "sum_rule_within_10pct": float(np.mean(np.abs(sums / ms - 1) <= 0.1)),
                               "fitted_within_10pct": float(np.mean(np.abs(fitted / ms - 1) <= 0.1))}
        return report

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "features": self.feature_names, "models": self.models,
                "overhead": self.overhead, "traffic": self.traffic, "metadata": self.metadata}

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> KernelPredictor:
        return _load(str(Path(path).resolve()))


def is_kernel_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a kernel predictor (read its first bytes only)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return FORMAT.encode() in head


@functools.lru_cache(maxsize=8)
def _load(path: str) -> KernelPredictor:
    data = read_json_file(path, "kernel predictor", "build one with `hwnas predictor build`")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InvalidConfigError(f"{path} is not an hwnas kernel predictor (format {FORMAT!r})")
    try:
        model = KernelPredictor(data["features"], metadata=data.get("metadata"))
        model.models = {str(k): str(v) for k, v in data["models"].items()}
        model.overhead = {str(t): {k: float(o[k]) for k in ("per_inference_ms", "per_call_ms")}
                          for t, o in data["overhead"].items()}
        model.traffic = {str(t): {"ms_per_mb": [float(c) for c in v["ms_per_mb"]][:2], "networks": int(v["networks"])}
                         for t, v in (data.get("traffic") or {}).items()}
        if any(len(v["ms_per_mb"]) != 2 for v in model.traffic.values()):
            raise ValueError("a traffic term needs two coefficients")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidConfigError(f"kernel predictor {path} is corrupt ({type(exc).__name__}: {exc})") from None
    if "*" not in model.models:
        raise InvalidConfigError(f"kernel predictor {path} is corrupt: it has no model of all kernels")
    return model


def traffic_mb(records: Sequence[dict[str, Any]]) -> list[float]:
    """(weight MB, activation MB) a network's kernel calls read and write: the traffic term's inputs."""
    weights = sum(float(r["calls"]) * float(r.get("weight_bytes") or 0) for r in records)
    acts = sum(float(r["calls"]) * float((r.get("input_bytes") or 0) + (r.get("output_bytes") or 0))
               for r in records)
    return [weights / 1e6, acts / 1e6]


def _raw(regressor) -> str:
    return regressor.get_booster().save_raw(raw_format="json").decode()


@functools.lru_cache(maxsize=64)
def _booster(raw: str):
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(bytearray(raw.encode()))
    return booster


def heldout_errors(kinds: Sequence[str], rows: Sequence[dict[str, float]], ms: Sequence[float], *,
                   feature_names: Sequence[str], seed: int = 0, share: float = 0.2) -> dict[str, Any]:
    """Fit on all but a seeded ``share`` of the kernels and return the error of each held-out one.

    ``{"index": held-out indices, "rel_error": |pred - ms| / ms, "abs_error": |pred - ms| (ms), "within_10pct",
    "time_within_10pct" (the share of the held-out kernels' time in kernels within +-10 %: what a network's
    sum feels), "mape_pct", "by_kind"}``.
    """
    n = len(rows)
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(share * n)))
    test, train = order[:n_test], order[n_test:]
    model = KernelPredictor(feature_names).fit([kinds[i] for i in train], [rows[i] for i in train],
                                               [ms[i] for i in train], seed=seed)
    pred = model.predict_kernels([kinds[i] for i in test], [rows[i] for i in test])
    truth = np.array([ms[i] for i in test])
    rel = np.abs(pred - truth) / truth
    by_kind: dict[str, float] = {}
    for kind in sorted({kinds[i] for i in test}):
        mask = np.array([kinds[i] == kind for i in test])
        by_kind[kind] = float(np.mean(rel[mask]))
    return {"index": test.tolist(), "rel_error": rel.tolist(), "abs_error": np.abs(pred - truth).tolist(),
            "within_10pct": float(np.mean(rel <= 0.10)),
            "time_within_10pct": float(truth[rel <= 0.10].sum() / truth.sum()),
            "mape_pct": float(100 * np.mean(rel)), "by_kind": by_kind, "n": int(n_test)}

"""The ``predictor`` cost method: a model trained on measured networks.

:func:`network_features` summarises a compiled network (per kernel kind:
MACs, FLOPs, bytes and calls; totals; the hardware knobs);
:class:`LatencyPredictor` holds a bootstrap ensemble
(:class:`~hwnas.cost.ensemble.BootstrapEnsemble` of XGBoost regressors, or of
MLPs in torch) over them and returns a mean and the ensemble's spread as its error
bar. Training from measured candidates is :mod:`hwnas.pipeline.predictor`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.cost.ensemble import BootstrapEnsemble, fit_xgb
from hwnas.errors import InvalidConfigError
from hwnas.ir.workloads import Workload
from hwnas.util import read_json_file, write_json_atomic


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
        self.metadata = dict(metadata or {})
        #: the members are what is saved: a booster's raw JSON (xgb), a state dict of lists (mlp)
        self.ensemble = BootstrapEnsemble(self._fit_one, self._predict_one, n_models=n_models, seed=seed,
                                          seed_stride=1009)
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
        self.ensemble.fit((X - self.mu) / self.sigma, y)
        return self

    def _fit_one(self, Z: np.ndarray, y: np.ndarray, seed: int):
        if self.kind == "xgb":
            model = fit_xgb(Z, y, seed, n_estimators=300, max_depth=4, learning_rate=0.05, subsample=0.9)
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
        if not self.ensemble.members:
            raise InvalidConfigError("the predictor has no trained models")
        return self.ensemble.predict((self._matrix(rows) - self.mu) / self.sigma, np.exp)

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
                "n_models": self.ensemble.n_models, "seed": self.ensemble.seed, "mu": list(map(float, self.mu)),
                "sigma": list(map(float, self.sigma)), "metadata": self.metadata, "models": self.ensemble.members}

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        return _load_predictor(str(Path(path).resolve()))


@functools.lru_cache(maxsize=8)
def _load_predictor(path: str) -> LatencyPredictor:
    data = read_json_file(path, "predictor model", "train one with `hwnas predictor train`")
    if not isinstance(data, dict) or data.get("format") != "hwnas-latency-predictor/1":
        raise InvalidConfigError(f"{path} is not an hwnas latency predictor")
    p = LatencyPredictor(data["kind"], data["features"], n_models=data["n_models"], seed=data["seed"],
                         metadata=data.get("metadata"))
    p.mu, p.sigma = np.array(data["mu"]), np.array(data["sigma"])
    p.ensemble.members = data["models"]
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

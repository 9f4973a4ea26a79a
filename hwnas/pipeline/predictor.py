"""Collecting measured samples and training latency predictors on them.

``hwnas predictor train --target cpu --space mbv2 --samples N --out model.json``
samples ``N`` candidates (an architecture and a hardware config each),
compiles and measures every one (:func:`collect`), holds a fifth of them out
to report the error the model makes on networks it has not seen, then fits
the model on all of them and saves it (:func:`train`) with its metadata: the
target, the space, the feature names, the versions, the held-out error, and
the samples themselves (so it can be refitted without measuring again).

A search uses it as ``--cost predictor:model.json``; each prediction carries
the ensemble's spread as ``latency_std_ms``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hwnas.errors import InvalidConfigError


@dataclasses.dataclass
class Sample:
    genome: list[int]
    hw: dict[str, Any]
    features: dict[str, float]
    latency_ms: float
    #: seconds to compile it, and to measure it
    compile_s: float
    measure_s: float


def sample_candidates(space, target, n: int, seed: int) -> list[tuple[list[int], dict[str, Any]]]:
    """``n`` distinct (genome, complete hw config) pairs drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        genome = [int(v) for v in space.sample(rng)]
        hw = target.hardware_space.sample(rng)
        key = (tuple(genome), tuple(sorted((k, str(v)) for k, v in hw.items())))
        if key not in seen:
            seen.add(key)
            out.append((genome, hw))
    return out


def features_of(built, target) -> dict[str, float]:
    from hwnas.cost.predictor import network_features
    from hwnas.ir.workloads import extract

    return network_features(built.fact("workloads", lambda b: extract(b.module)), built.hw, target.hardware_space)


def collect(space, target, candidates, *, progress: Callable[[int, int], None] | None = None) -> list[Sample]:
    """Compile each candidate and price it by the target's reference method (``measure`` on a CPU); a candidate
    that fails is skipped (its error is logged)."""
    import logging

    from hwnas.pipeline.evaluate import Candidate, evaluate

    log = logging.getLogger("hwnas.predictor")
    samples = []
    for i, (genome, hw) in enumerate(candidates):
        try:
            ev = evaluate(Candidate.from_space(space, genome, hw), target, cost=target.reference_method)
        except Exception as exc:  # one failed candidate does not stop the collection
            log.warning("sample %d failed: %s", i, exc)
            continue
        samples.append(Sample(genome=list(genome), hw=dict(ev.hw), features=features_of(ev.built, target),
                              latency_ms=ev.metrics["latency_ms"],
                              compile_s=sum(v for k, v in ev.timings.items() if k != "cost_s"),
                              measure_s=ev.timings.get("cost_s", 0.0)))
        if progress:
            progress(i + 1, len(candidates))
    return samples


def errors(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """MAPE (%), share within +-10 %, Kendall tau and Spearman rho of predictions against measurements."""
    from scipy import stats

    p = np.asarray(predicted, dtype=float)
    m = np.asarray(measured, dtype=float)
    rel = np.abs(p - m) / m
    tau = stats.kendalltau(p, m).statistic if len(p) > 1 else math.nan
    rho = stats.spearmanr(p, m).statistic if len(p) > 1 else math.nan
    return {"mape_pct": float(100 * rel.mean()), "within_10pct": float((rel <= 0.10).mean()),
            "kendall_tau": float(tau), "spearman_rho": float(rho), "n": int(len(p))}


def train(samples: Sequence[Sample], *, kind: str, seed: int, target, space_name: str,
          holdout: float = 0.2):
    """A :class:`~hwnas.cost.predictor.LatencyPredictor` fitted on ``samples``, with held-out error.

    The samples are shuffled with ``seed``; the last ``holdout`` share is held
    out for the reported error; the saved model is then refitted on all.
    """
    from hwnas.pipeline.artifacts import versions
    from hwnas.cost.predictor import LatencyPredictor

    if len(samples) < 5:
        raise InvalidConfigError(f"training a predictor needs at least 5 measured samples, got {len(samples)}")
    names = sorted(samples[0].features)
    order = np.random.default_rng(seed).permutation(len(samples))
    n_test = max(1, int(round(holdout * len(samples))))
    train_idx, test_idx = order[:-n_test], order[-n_test:]
    rows = [samples[i].features for i in range(len(samples))]
    lat = [samples[i].latency_ms for i in range(len(samples))]
    started = time.perf_counter()
    held = LatencyPredictor(kind, names, seed=seed).fit([rows[i] for i in train_idx], [lat[i] for i in train_idx])
    pred, _ = held.predict([rows[i] for i in test_idx])
    heldout = errors(pred, [lat[i] for i in test_idx])
    meta = {
        "target": target.spec, "space": space_name, "samples": len(samples), "holdout": heldout,
        "trained_on": len(train_idx), "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                         time.gmtime()),
        "cost_namespace": getattr(target, "cost_namespace", lambda hw: None)(samples[0].hw),
    }
    model = LatencyPredictor(kind, names, seed=seed, metadata=meta).fit(rows, lat)
    model.metadata["fit_s"] = time.perf_counter() - started
    model.metadata["data"] = [dataclasses.asdict(s) for s in samples]
    return model

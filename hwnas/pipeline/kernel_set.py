"""Building a target's kernel predictor: kernels sampled, timed alone, and modelled (nn-Meter's method).

``hwnas predictor build --target cpu --minutes 20 --out cpu.json`` runs
:func:`build`:

1. **A pool of real kernels.** Random candidates (an architecture of
   ``mbv2``, ``fbnet`` or ``nb201`` and a random hardware config) are
   exported, imported and scheduled by the target's passes, without code
   generation; their kernels (:func:`hwnas.ir.workloads.extract`) not yet
   measured join the pool.
2. **A random start.** ``initial`` kernels drawn at random from the pool
   (half the probability in proportion to their FLOPs and bytes) are
   compiled alone and timed (:func:`hwnas.ir.runtime.measure_kernel`, as the
   lookup table does) and written to the cache, under the lookup table's
   namespace and record (:func:`hwnas.cost.lut.kernel_entry`).
3. **Adaptive rounds** (nn-Meter's adaptive data sampler): the per-kind
   models are fitted on 80 % of the measured kernels and judged on the rest;
   the next ``per_round`` kernels are the pool's kernels nearest (in the
   standardised feature space, same kind) to the held-out kernels predicted
   worst (in milliseconds: the error a network's sum feels), so samples go
   where the error is highest.
4. Until the time budget is spent or the held-out share within +-10 %
   reaches ``error_target``; then the model is fitted on every measured
   kernel and saved with the runtime overhead the lookup table measures.
5. **Whole networks.** Every ``whole_every``-th candidate drawn is also
   compiled and measured whole; on those networks the predictor's traffic
   term is fitted (:meth:`~hwnas.cost.kernel_model.KernelPredictor.fit_traffic`:
   what a network takes beyond the sum of its kernels timed alone).

Every measured kernel is in the cache (a results store file) as soon as it is
timed: a killed build, started again on the same store, keeps what it had.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hwnas.errors import InvalidConfigError

log = logging.getLogger("hwnas.kernel_set")

#: the architecture spaces whose networks the kernels are drawn from
SPACES = ("mbv2", "fbnet", "nb201")
#: the store's namespace of the networks (``[space, genome]``) the kernel set was drawn from
NETWORKS_NAMESPACE = "kernel-set-networks"
#: the store's namespace of the networks measured whole (every ``whole_every``-th one drawn)
WHOLE_NAMESPACE = "kernel-set-whole"


def source_networks(cache) -> list[tuple[str, list[int]]]:
    """``(space, genome)`` of every network a kernel set on ``cache`` was drawn from."""
    return [(str(v[0]), [int(g) for g in v[1]]) for v in cache.values(NETWORKS_NAMESPACE)
            if isinstance(v, list) and len(v) == 2]


def _namespaces(target) -> list[tuple[int, str]]:
    """``(threads, cache namespace)`` of every thread count the target's space allows."""
    param = target.hardware_space.params["num_threads"]
    values = getattr(param, "values", None) or range(param.low, param.high + 1)
    return [(int(t), target.cost_namespace({"num_threads": int(t)})) for t in values]


def measured_kernels(target, cache) -> list[dict[str, Any]]:
    """Every kernel the cache holds for ``target`` (the lookup table's entries with a full record)."""
    entries = []
    for _, ns in _namespaces(target):
        entries.extend(e for e in cache.values(ns) if isinstance(e, dict) and "ms" in e and "input_bytes" in e)
    return entries


def pool_from_candidate(space, target, genome, hw, *, whole: bool = False):
    """The kernels of one candidate, scheduled and not compiled: ``{"workload", "func", "hw", "namespace"}``.

    With ``whole``, the candidate is also compiled and measured whole: ``(kernels, {"records", "hw", "ms"})``.
    """
    from hwnas.ir.workloads import extract, prim_funcs
    from hwnas.pipeline.evaluate import Candidate, schedule_candidate

    with tempfile.TemporaryDirectory(prefix="hwnas-kernels-") as tmp:
        _, mod, _ = schedule_candidate(Candidate.from_space(space, genome, hw), target, hw, workdir=tmp, timings={})
    funcs = prim_funcs(mod)
    ns = target.cost_namespace(hw)
    workloads = extract(mod)
    kernels = [{"workload": w, "func": funcs[w.func], "hw": dict(hw), "namespace": ns}
               for w in workloads if w.func in funcs]
    if not whole:
        return kernels
    built = target.build(mod, hw)
    ms = target.cost(built, method=target.reference_method)["latency_ms"]
    return kernels, {"records": [w.as_dict() for w in workloads], "hw": dict(hw), "ms": float(ms)}


def whole_networks(cache) -> list[dict[str, Any]]:
    """The networks a kernel set measured whole (:data:`WHOLE_NAMESPACE`), for the traffic term."""
    return [v for v in cache.values(WHOLE_NAMESPACE) if isinstance(v, dict) and {"records", "hw", "ms"} <= set(v)]


def build(target, cache, *, minutes: float, error_target: float = 0.95, initial: int = 40, per_round: int = 16,
          candidates_per_round: int = 2, whole_every: int = 2, seed: int = 0, spaces: Sequence[str] = SPACES,
          progress: Callable[[dict[str, Any]], None] | None = None, measure_fn=None):
    """Sample, time and model kernels until ``minutes`` pass or the held-out error target is met;
    returns the fitted :class:`~hwnas.cost.kernel_model.KernelPredictor`."""
    from hwnas.arch import get_space
    from hwnas.cost import kernel_model, lut
    from hwnas.ir import runtime

    if "lut" not in target.cost_methods or not hasattr(target, "cost_namespace"):
        raise InvalidConfigError(f"target {target.spec} has no lookup table to build a kernel predictor on "
                                 "(targets with the lut cost method: cpu)")
    if minutes <= 0:
        raise InvalidConfigError(f"--minutes must be > 0, got {minutes:g}")
    if not 0 < error_target <= 1:
        raise InvalidConfigError(f"--error-target must be in (0, 1], got {error_target:g}")
    measure_fn = measure_fn or (lambda func, tgt: runtime.measure_kernel(func, tgt))
    deadline = time.monotonic() + 60 * minutes
    # a resumed build draws other networks than the run before it
    rng = np.random.default_rng([seed, len(source_networks(cache))])
    hs = target.hardware_space
    space_objs = [get_space(s) for s in spaces]
    known = {(e["hw"].get("num_threads"), e["key"]) for e in measured_kernels(target, cache)}
    pool: list[dict[str, Any]] = []
    state: dict[str, Any] = {"measured": len(known), "pool": 0, "within_10pct": None, "mape_pct": None,
                             "time_within_10pct": None,
                             "round": 0, "resumed": len(known), "drawn": 0, "whole": len(whole_networks(cache))}

    def grow(n_candidates: int) -> None:
        for _ in range(n_candidates):
            space = space_objs[int(rng.integers(len(space_objs)))]
            genome = [int(v) for v in space.sample(rng)]
            hw = hs.sample(rng)
            # the networks the kernel set is drawn from, kept in the store: a held-out set must avoid them
            cache.put(NETWORKS_NAMESPACE, json.dumps([space.name, genome]), [space.name, genome])
            state["drawn"] += 1
            whole = whole_every > 0 and state["drawn"] % whole_every == 0
            try:
                kernels = pool_from_candidate(space, target, genome, hw, whole=whole)
                if whole:
                    kernels, net = kernels
                    cache.put(WHOLE_NAMESPACE, json.dumps([space.name, genome, hw], sort_keys=True, default=str), net)
                    state["whole"] += 1
            except Exception as exc:  # a candidate that fails to schedule gives no kernels
                log.warning("candidate of %s failed to schedule: %s", space.name, exc)
                continue
            for k in kernels:
                tag = (k["hw"]["num_threads"], k["workload"].key)
                if tag not in known and all((p["hw"]["num_threads"], p["workload"].key) != tag for p in pool):
                    pool.append(k)
        state["pool"] = len(pool)

    def measure(chosen: list[int]) -> None:
        for i in sorted(chosen, reverse=True):
            k = pool.pop(i)
            if time.monotonic() > deadline:
                return
            try:
                runtime.set_num_threads(int(k["hw"]["num_threads"]))
                ms = measure_fn(k["func"], target.tvm_target(k["hw"]))
            except Exception as exc:  # a kernel that fails alone is left out
                log.warning("kernel %s failed to time: %s", k["workload"].func, exc)
                continue
            cache.put(k["namespace"], k["workload"].key, lut.kernel_entry(k["workload"], ms, k["hw"]))
            known.add((k["hw"]["num_threads"], k["workload"].key))
            state["measured"] = len(known)
            state["pool"] = len(pool)
            if progress:
                progress(dict(state))

    def data():
        rows = kernel_model.training_rows(measured_kernels(target, cache), hs)
        return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]

    # random start
    while len(known) < initial and time.monotonic() < deadline:
        if len(pool) < initial:
            grow(candidates_per_round)
        take = min(len(pool), initial - len(known))
        measure(_draw(pool, take, rng) if take else [])
    names = None
    while time.monotonic() < deadline:
        kinds, rows, ms = data()
        if len(rows) < 10:
            grow(candidates_per_round)
            measure(list(range(min(per_round, len(pool)))))
            continue
        names = sorted(rows[0])
        err = kernel_model.heldout_errors(kinds, rows, ms, feature_names=names, seed=state["round"])
        state.update(round=state["round"] + 1, within_10pct=err["within_10pct"], mape_pct=err["mape_pct"],
                     time_within_10pct=err["time_within_10pct"], by_kind=err["by_kind"])
        if progress:
            progress(dict(state))
        if err["within_10pct"] >= error_target:
            break
        grow(candidates_per_round)
        if not pool:
            continue
        measure(_nearest_to_worst(pool, kinds, rows, err, names, hs, per_round))
    kinds, rows, ms = data()
    if len(rows) < 10:
        raise InvalidConfigError(f"only {len(rows)} kernels were measured in {minutes:g} min; give it more time")
    names = sorted(rows[0])
    err = kernel_model.heldout_errors(kinds, rows, ms, feature_names=names, seed=0)
    model = kernel_model.KernelPredictor(names).fit(kinds, rows, ms, seed=seed)
    model.overhead = {str(t): lut.runtime_overhead(target.tvm_target({"num_threads": t}),
                                                   cache=cache, namespace=ns, num_threads=t)
                      for t, ns in _namespaces(target)}
    traffic = model.fit_traffic(whole_networks(cache), hs)
    heldout = {k: v for k, v in err.items() if k not in ("index", "rel_error", "abs_error")}
    model.metadata = {"target": target.spec, "kernels": len(rows), "whole_networks": traffic, "heldout": heldout,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "spaces": list(spaces),
                      "networks": [[sp, g] for sp, g in source_networks(cache)]}
    return model


def _work(workload) -> float:
    """A kernel's size, for sampling: its FLOPs plus 8 per byte it moves."""
    return float(workload.flops) + 8.0 * float(workload.bytes_moved)


def _draw(pool, n: int, rng) -> list[int]:
    """``n`` pool indices, half of the probability uniform and half in proportion to the kernels' size:
    the kernels that make most of a network's time are few among many small ones (elementwise, casts,
    layout transforms), and a uniform draw would time mostly those."""
    size = np.array([_work(p["workload"]) for p in pool])
    prob = 0.5 / len(pool) + 0.5 * (size / size.sum() if size.sum() > 0 else 1.0 / len(pool))
    return [int(i) for i in rng.choice(len(pool), size=n, replace=False, p=prob / prob.sum())]


def _nearest_to_worst(pool, kinds, rows, err, names, hs, n: int) -> list[int]:
    """Indices of the ``n`` pool kernels nearest to the held-out kernels predicted worst (same kind); worst
    by the absolute error (ms, what a network's sum feels) when ``err`` has it, else the relative one."""
    from hwnas.cost import kernel_model

    X = np.array([[r[c] for c in names] for r in rows])
    mu, sd = X.mean(0), np.where(X.std(0) > 0, X.std(0), 1.0)
    order = np.argsort(err.get("abs_error", err["rel_error"]))[::-1]
    worst = [err["index"][i] for i in order[: max(1, len(order) // 5)]]  # the worst fifth
    P = np.array([[kernel_model.kernel_features(p["workload"].as_dict(), p["hw"], hs).get(c, 0.0) for c in names]
                  for p in pool])
    pool_kinds = [p["workload"].kind for p in pool]
    dist = np.full(len(pool), np.inf)
    for w in worst:
        z = (X[w] - mu) / sd
        d = np.sqrt((((P - mu) / sd - z) ** 2).sum(1))
        same = np.array([k == kinds[w] for k in pool_kinds])
        d = np.where(same, d, d + 1e3)  # another kind only when the pool has none of this one
        dist = np.minimum(dist, d)
    return [int(i) for i in np.argsort(dist)[:n]]

"""Surrogate screening for NSGA-II: each generation, a large pool of candidates is predicted by a
bootstrap XGBoost ensemble (:class:`~hwnas.search.surrogate.SurrogateEnsemble`) fitted on the points
evaluated so far, and only the most promising are evaluated for real."""

from __future__ import annotations

import math

import numpy as np

from hwnas.errors import InvalidConfigError
from hwnas.search.config import FAILED
from hwnas.search.objectives import is_feasible
from hwnas.search.space import point_key
from hwnas.search.surrogate import SurrogateEnsemble

#: pool per generation, in multiples of pop_size: mating offspring, uniform samples, front neighbours (at most)
SURROGATE_POOL_MATING = 40
SURROGATE_POOL_RANDOM = 40
SURROGATE_POOL_NEIGHBOURS = 40
#: optimism of the acquisition: candidates are ranked on mean - KAPPA * std of the ensemble's predictions
SURROGATE_KAPPA = 1.0
#: the ensemble (see :class:`~hwnas.search.surrogate.SurrogateEnsemble`)
SURROGATE_MODEL = {"n_models": 5, "n_estimators": 150, "max_depth": 4, "learning_rate": 0.1}


def _quantiles(ranked: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each column of ``values`` as its mid-rank quantile in the same (sorted) column of ``ranked``."""
    values = np.asarray(values, dtype=float).reshape(-1, ranked.shape[1])
    out = np.empty_like(values)
    for j in range(ranked.shape[1]):
        lo = np.searchsorted(ranked[:, j], values[:, j], side="left")
        hi = np.searchsorted(ranked[:, j], values[:, j], side="right")
        out[:, j] = (lo + hi) / (2.0 * len(ranked))
    return out


def select_by_prediction(known: np.ndarray, predicted: np.ndarray, violation: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` most promising candidates, in the order chosen.

    ``known``: the objective vectors (minimised) of the feasible points evaluated so far;
    ``predicted``: the candidates' (optimistic) predicted objective vectors; ``violation``:
    their predicted constraint violation (<= 0: predicted feasible). Predicted-feasible
    candidates come first, by non-dominated level among the known points and the candidates
    together (a candidate on level 0 is predicted to extend the known front); within the level
    that cannot be taken whole, greedily the candidate farthest (objective space normalised by
    the range of level 0) from the known points of its level and below and from the
    candidates already chosen, so that the choice spreads along the front and fills its
    gaps. Then the least violating others.
    """
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    predicted = np.asarray(predicted, dtype=float).reshape(len(violation), -1)
    known = np.asarray(known, dtype=float).reshape(-1, predicted.shape[1])
    n = min(n, len(predicted))
    feasible = np.flatnonzero(np.asarray(violation) <= 0)
    chosen: list[int] = []
    if len(feasible) and n:
        F = np.vstack([known, predicted[feasible]])
        _, rank = NonDominatedSorting().do(F, return_rank=True)
        lo = F[rank == 0].min(axis=0)
        span = F[rank == 0].max(axis=0) - lo
        span = np.where(span > 0, span, np.maximum(np.abs(F).max(axis=0), 1.0))
        Z = (F - lo) / span
        is_known = np.arange(len(F)) < len(known)
        for r in range(int(rank.max()) + 1):
            members = np.flatnonzero((rank == r) & ~is_known)
            if len(chosen) + len(members) <= n:
                chosen += [int(feasible[m - len(known)]) for m in members]
                if len(chosen) == n:
                    break
                continue
            anchors = Z[(rank <= r) & is_known]
            dist = (np.min(np.linalg.norm(Z[members, None, :] - anchors[None], axis=2), axis=1)
                    if len(anchors) else np.full(len(members), np.inf))
            if not len(anchors):  # start from the best on the first objective
                dist[np.argmin(Z[members, 0])] = np.inf
            while len(chosen) < n:
                j = int(np.argmax(dist))
                chosen.append(int(feasible[members[j] - len(known)]))
                dist = np.minimum(dist, np.linalg.norm(Z[members] - Z[members[j]], axis=1))
                dist[j] = -1.0
            break
    if len(chosen) < n:
        others = np.flatnonzero(np.asarray(violation) > 0)
        chosen += [int(i) for i in others[np.argsort(np.asarray(violation)[others], kind="stable")][: n - len(chosen)]]
    return np.array(chosen, dtype=int)


def _candidate_pool(search, algorithm, problem, rng: np.random.Generator) -> np.ndarray:
    """Distinct, valid, not yet evaluated candidates (rows of gene values), in a seed-fixed order."""
    cfg = search.config
    cards = np.array(search.joint.cardinalities)
    off = algorithm.mating.do(problem, algorithm.pop, SURROGATE_POOL_MATING * cfg.pop_size, algorithm=algorithm,
                              random_state=algorithm.random_state)
    rows = [tuple(x) for x in np.clip(np.rint(off.get("X")).astype(int), 0, cards - 1).tolist()] if len(off) else []
    rows += [tuple(int(v) for v in search.joint.sample(rng)) for _ in range(SURROGATE_POOL_RANDOM * cfg.pop_size)]
    # one-gene neighbours of the front (of the population while nothing is feasible)
    bases = [p.x for p in search.front()] or [tuple(int(v) for v in x) for x in np.rint(algorithm.pop.get("X"))]
    neighbours = [b[:i] + (v,) + b[i + 1:] for b in bases for i, c in enumerate(cards) for v in range(c)
                  if v != b[i]]
    cap = SURROGATE_POOL_NEIGHBOURS * cfg.pop_size
    if len(neighbours) > cap:
        neighbours = [neighbours[i] for i in np.sort(rng.choice(len(neighbours), cap, replace=False))]
    rows += neighbours
    pool, seen = [], set()
    for x in dict.fromkeys(rows):
        try:
            genome, hws = search.joint.split(x)
        except InvalidConfigError:
            continue
        canonical = search.canonical(genome)  # equivalent candidates are one candidate
        key = point_key(canonical, hws)
        if search.point(key) is not None or key in seen:
            continue
        seen.add(key)
        pool.append(canonical + x[len(canonical):])
    return np.array(pool, dtype=int).reshape(-1, len(cards))


def screen(search, algorithm, problem, rng: np.random.Generator, n: int) -> np.ndarray:
    """The ``n`` candidates of this generation's pool most promising by the surrogate's predictions.

    ``search``: the :class:`~hwnas.search.driver.Search` (its points, front and objective vectors);
    ``algorithm``, ``problem``: its pymoo NSGA-II and problem (the pool's mating offspring)."""
    pool = _candidate_pool(search, algorithm, problem, rng)
    if len(pool) <= n:
        return pool
    done = [p for p in search.all_points() if p.status in ("ok", "failed")]
    rows = [(p.x, search.F(p) + search.G(p)[:-1]) for p in done if p.status == "ok"]
    rows = [(x, y) for x, y in rows if all(math.isfinite(v) and abs(v) < FAILED for v in y)]
    if len(rows) < max(2 * search.config.pop_size, 4):
        return pool[np.sort(rng.choice(len(pool), n, replace=False))]
    seed = int(rng.integers(2**31))
    n_obj = len(search.objectives)
    Y = np.array([y for _, y in rows], dtype=float)
    # objectives are modelled and compared as quantiles among the evaluated points: scale-free and
    # robust to outliers (a collapsed network's accuracy, a huge latency); constraints stay in their units
    ranked = np.sort(Y[:, :n_obj], axis=0)
    Y[:, :n_obj] = _quantiles(ranked, Y[:, :n_obj])
    model = SurrogateEnsemble(search.joint.cardinalities, seed=seed, **SURROGATE_MODEL)
    model.fit([x for x, _ in rows], Y)
    mean, std = model.predict(pool)
    optimistic = mean - SURROGATE_KAPPA * std
    violation = np.maximum(optimistic[:, n_obj:], 0).sum(axis=1)
    if any(p.status == "failed" for p in done):  # a candidate predicted to fail counts as infeasible
        fails = SurrogateEnsemble(search.joint.cardinalities, seed=seed + 1, **{**SURROGATE_MODEL, "n_models": 1})
        fails.fit([p.x for p in done], [float(p.status == "failed") for p in done])
        violation = violation + np.maximum(fails.predict(pool)[0] - 0.5, 0)
    known = np.array([search.F(p) for p in search.all_points() if is_feasible(p, search.checks)], dtype=float)
    known = known[(np.abs(known) < FAILED).all(axis=1)] if len(known) else known.reshape(0, n_obj)
    return pool[select_by_prediction(_quantiles(ranked, known), optimistic[:, :n_obj], violation, n)]

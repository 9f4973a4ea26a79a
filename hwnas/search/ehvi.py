"""The default search (``surrogate="ehvi"``): a surrogate over canonical candidates whose acquisition is
the hypervolume improvement, with a bootstrap ensemble's spread for feasibility and when the mean
sees no gain.

Each generation:

1. the *pool*: every canonical point of the joint space when it has at most :data:`ENUMERATE_MAX`
   points (nb201 x a published device: its 15,625 genomes are 9,445 live genomes), else
   :data:`POOL_RANDOM` uniform samples, every one-gene neighbour of the current front and
   :data:`POOL_TWO_GENE` random two-gene neighbours of it (local search around the front),
   all canonicalised (:meth:`~hwnas.search.driver.Search.canonical`), those already evaluated dropped;
2. a bootstrap ensemble (:class:`~hwnas.search.surrogate.SurrogateEnsemble`; each member a ridge
   regression on the one-hot genes plus boosted trees on its residuals) fitted on every point
   evaluated so far predicts each objective and constraint of the pool;
3. a candidate's acquisition is the hypervolume its mean prediction adds to the front of the
   feasible points evaluated so far, times the share of members that predict it feasible (and,
   once some points failed, the chance that it does not fail);
4. the batch is chosen greedily: the best candidate, then the front is extended by its mean
   prediction (the "kriging believer") and the acquisition recomputed, until the batch is full.
   When no candidate's mean improves the believed front, the optimistic prediction
   (``mean - std`` of the members) is used; when that gains nothing either, a uniform choice.

The expected improvement over the members' predictions (EHVI with the ensemble as posterior)
was measured too: it explored more and found less within 200 evaluations on nb201
(``benchmarks/search_efficiency.py``), so the spread is used only where the mean sees nothing.

The reference point of the hypervolume is the median of every objective over the first
(uniform random) batch of :data:`INITIAL` points: an estimate of the space's median network, so
improvement counts in the part of the space better than a typical network. The batch is
``max(BATCH_MIN, workers)`` points (every worker busy, one fit per batch). Nothing depends on the
budget, so a run of 200 evaluations is the first 200 of a run of 500. Deterministic for the seed.

With more than two objectives the batch is chosen by
:func:`~hwnas.search.screening.select_by_prediction` on the optimistic predictions (the exact
hypervolume improvement here is the two-objective one).
"""

from __future__ import annotations

import math

import numpy as np

from hwnas.errors import InvalidConfigError
from hwnas.search.config import FAILED
from hwnas.search.objectives import is_feasible
from hwnas.search.screening import select_by_prediction
from hwnas.search.space import point_key
from hwnas.search.surrogate import SurrogateEnsemble

#: points per generation: at least this many, else one per worker
BATCH_MIN = 8
#: the first batch (uniform random canonical points) before the surrogate is used
INITIAL = 16
#: joint spaces of at most this many points are screened whole
ENUMERATE_MAX = 50_000
#: otherwise the pool: this many uniform samples, every one-gene neighbour of the front and this many
#: two-gene neighbours of it
POOL_RANDOM = 4_000
POOL_TWO_GENE = 2_000
#: the ensemble: small trees (hundreds of points), few enough that a fit costs well under a second
MODEL = {"n_models": 5, "n_estimators": 50, "max_depth": 3, "learning_rate": 0.1, "linear_alpha": 3.0}


def batch_size(workers: int) -> int:
    """Points per generation for ``workers`` workers (0: evaluated in this process)."""
    return max(BATCH_MIN, int(workers))


def staircase(front: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The dominated region of a two-objective ``front`` (minimised) bounded by ``ref``, as the edges
    ``e`` (length ``m + 2``) and heights ``h`` (length ``m + 1``) of its boundary: on
    ``[e[k], e[k+1])`` the region reaches down to ``h[k]``."""
    front = np.asarray(front, dtype=float).reshape(-1, 2)
    front = front[(front < ref).all(axis=1)]
    front = front[np.lexsort((front[:, 1], front[:, 0]))]
    keep = []
    best = math.inf
    for i, (_, b) in enumerate(front):
        if b < best:
            keep.append(i)
            best = b
    front = front[keep]
    edges = np.concatenate([[-math.inf], front[:, 0], [ref[0]]])
    heights = np.concatenate([[ref[1]], front[:, 1]])
    return edges, heights


def hv_improvement(Y: np.ndarray, edges: np.ndarray, heights: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The hypervolume each row of ``Y`` (two objectives, minimised) adds to the front of
    :func:`staircase`; ``Y`` may have leading batch axes (ensemble members)."""
    Y = np.asarray(Y, dtype=float)
    y1, y2 = Y[..., 0:1], Y[..., 1:2]
    width = np.clip(np.minimum(edges[1:], ref[0]) - np.maximum(edges[:-1], y1), 0.0, None)
    height = np.clip(heights - y2, 0.0, None)
    return (width * height).sum(axis=-1)


def choose_batch(mean: np.ndarray, weight: np.ndarray, front: np.ndarray, ref: np.ndarray, n: int,
                 optimistic: np.ndarray, rng: np.random.Generator) -> list[int]:
    """Greedy batch of ``n`` candidate indices by hypervolume improvement (see the module docstring).

    ``mean``: ``(n_candidates, 2)`` predicted objectives (minimised); ``weight``: each candidate's
    chance of being usable (feasible, not failing); ``front``: the known feasible objective vectors;
    ``ref``: the reference point; ``optimistic``: the predictions less the ensemble's spread, whose
    improvement counts once no candidate's mean improves the believed front; then a uniform choice."""
    front = np.asarray(front, dtype=float).reshape(-1, 2)
    chosen: list[int] = []
    free = np.ones(len(mean), dtype=bool)
    for _ in range(min(n, len(mean))):
        edges, heights = staircase(front, ref)
        score = np.where(free, hv_improvement(mean, edges, heights, ref) * weight, -1.0)
        if score.max() <= 0:
            score = np.where(free, hv_improvement(optimistic, edges, heights, ref) * weight, -1.0)
        j = int(np.argmax(score)) if score.max() > 0 else int(rng.choice(np.flatnonzero(free)))
        chosen.append(j)
        free[j] = False
        front = np.vstack([front, mean[j]])
    return chosen


class Pool:
    """The canonical candidates of a search's joint space: enumerated once when the space is small,
    else sampled each generation around the front."""

    def __init__(self, search) -> None:
        self.search = search
        cards = search.joint.cardinalities
        self.whole: np.ndarray | None = None
        if math.prod(cards) <= ENUMERATE_MAX:
            grids = np.stack(np.meshgrid(*[np.arange(c) for c in cards], indexing="ij"), axis=-1)
            self.whole = self.canonical_rows(grids.reshape(-1, len(cards)).tolist())
            self.whole_keys = self.keys

    def canonical_rows(self, rows) -> np.ndarray:
        """Distinct canonical rows of ``rows`` (valid ones, first occurrence order), as an int matrix;
        their point keys in ``self.keys``."""
        search = self.search
        n = search.joint.arch_size
        out, seen = [], set()
        for x in rows:
            x = tuple(int(v) for v in x)
            try:
                genome, hws = search.joint.split(x)
            except InvalidConfigError:
                continue
            canonical = search.canonical(genome)
            key = point_key(canonical, hws)
            if key not in seen:
                seen.add(key)
                out.append((key, canonical + x[n:]))
        self.keys = [k for k, _ in out]
        return np.array([x for _, x in out], dtype=int).reshape(-1, len(search.joint.cardinalities))

    def candidates(self, rng: np.random.Generator) -> np.ndarray:
        """This generation's pool, without the points already evaluated."""
        search = self.search
        if self.whole is not None:
            mask = np.array([k not in search.points for k in self.whole_keys], dtype=bool)
            return self.whole[mask]
        cards = np.array(search.joint.cardinalities)
        rows = [tuple(int(v) for v in search.joint.sample(rng)) for _ in range(POOL_RANDOM)]
        bases = [p.x for p in search.front()]
        rows += [b[:i] + (v,) + b[i + 1:] for b in bases for i, c in enumerate(cards) for v in range(c) if v != b[i]]
        for _ in range(POOL_TWO_GENE if bases else 0):
            b = list(bases[int(rng.integers(len(bases)))])
            for i in rng.choice(len(cards), size=min(2, len(cards)), replace=False):
                b[i] = int(rng.integers(cards[i]))
            rows.append(tuple(b))
        pool = self.canonical_rows(rows)
        mask = np.array([k not in search.points for k in self.keys], dtype=bool)
        return pool[mask] if len(pool) else pool


def propose(search, pool: Pool, rng: np.random.Generator, n: int, ref: np.ndarray | None) -> np.ndarray:
    """The next ``n`` points (rows of gene values) to evaluate; see the module docstring."""
    candidates = pool.candidates(rng)
    if len(candidates) <= n:
        return candidates
    n_obj = len(search.objectives)
    done = [p for p in search.all_points() if p.status in ("ok", "failed")]
    rows = [(p.x, search.F(p) + search.G(p)[:-1]) for p in done if p.status == "ok"]
    rows = [(x, y) for x, y in rows if all(math.isfinite(v) and abs(v) < FAILED for v in y)]
    if len(rows) < 4 or ref is None:
        return candidates[np.sort(rng.choice(len(candidates), n, replace=False))]
    seed = int(rng.integers(2**31))
    model = SurrogateEnsemble(search.joint.cardinalities, seed=seed, **MODEL)
    model.fit([x for x, _ in rows], np.array([y for _, y in rows], dtype=float))
    members = model.predict_members(candidates)  # (n_models, n_candidates, n_obj + n_constraints)
    mean, std = members.mean(axis=0), members.std(axis=0)
    weight = (members[:, :, n_obj:] <= 0).all(axis=2).mean(axis=0) if members.shape[2] > n_obj \
        else np.ones(len(candidates))
    if any(p.status == "failed" for p in done):  # the chance that a candidate does not fail
        fails = SurrogateEnsemble(search.joint.cardinalities, seed=seed + 1, **{**MODEL, "n_models": 1})
        fails.fit([p.x for p in done], [float(p.status == "failed") for p in done])
        weight = weight * np.clip(1.0 - fails.predict(candidates)[0], 0.0, 1.0)
    known = np.array([search.F(p) for p in search.all_points() if is_feasible(p, search.checks)], dtype=float)
    known = known.reshape(-1, n_obj)
    known = known[(np.abs(known) < FAILED).all(axis=1)]
    optimistic = mean - std
    if n_obj != 2 or not len(known):
        violation = np.maximum(optimistic[:, n_obj:], 0).sum(axis=1) + (weight <= 0)
        return candidates[select_by_prediction(known, optimistic[:, :n_obj], violation, n)]
    chosen = choose_batch(mean[:, :n_obj], weight, known, ref, n, optimistic[:, :n_obj], rng)
    return candidates[chosen]


def reference_point(search, first: list) -> np.ndarray | None:
    """The hypervolume's reference point: every objective's median over the first batch's usable
    points (see the module docstring), or None while it has none."""
    F = np.array([search.F(p) for p in first if p is not None and p.status == "ok"], dtype=float)
    F = F.reshape(-1, len(search.objectives))
    F = F[(np.abs(F) < FAILED).all(axis=1)]
    return np.median(F, axis=0) if len(F) else None

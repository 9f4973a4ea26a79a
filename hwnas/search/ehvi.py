"""The default search (``surrogate="ehvi"``): surrogates over canonical candidates whose acquisition is
the hypervolume improvement over the space's median network, their spread counting when the mean
sees no gain.

Each generation:

1. the *pool*: every canonical point of the joint space when it has at most :data:`ENUMERATE_MAX`
   points (nb201 x a published device: its 15,625 genomes are 9,445 live genomes), else
   :data:`POOL_RANDOM` uniform samples, every one-gene neighbour of the current front and
   :data:`POOL_TWO_GENE` random two-gene neighbours of it (local search around the front),
   all canonicalised (:meth:`~hwnas.search.driver.Search.canonical`), those already evaluated dropped;
2. a bootstrap ensemble (:class:`~hwnas.search.surrogate.SurrogateEnsemble`; each member a ridge
   regression on the one-hot genes plus boosted trees on its residuals) fitted on every point
   evaluated so far predicts each cost objective and constraint of the pool. An accuracy objective
   is predicted by a Gaussian process over the genes
   (:class:`~hwnas.search.surrogate.CategoricalGP`) fitted on its log error,
   ``log(U - accuracy)`` with ``U`` just above the scale's top (100.5 for percentages, 1.005 for
   fractions; :func:`accuracy_ceiling`): the differences that decide the front, between the best
   networks, are then as large to the model as the collapse of a bad one. On nb201 (raspi4, the
   best fifth of the networks, fitted on 300 random ones) the error of the predicted accuracy is
   0.61 points for the process on the log error, 1.02 for the ensemble on it, 1.05 for the
   process on the accuracy itself (root mean square, 3 draws);
3. a candidate's acquisition is the hypervolume its mean prediction adds to the front of the
   feasible points evaluated so far, times the share of members that predict it feasible (and,
   once some points failed, the chance that it does not fail);
4. the batch is chosen greedily: the best candidate, then the front is extended by its mean
   prediction (the "kriging believer") and the acquisition recomputed, until the batch is full.
   When no candidate's mean improves the believed front, the *expected* hypervolume improvement
   is used, each objective taken as a Gaussian of the members' mean and spread
   (:func:`expected_hv_improvement`, exact in two objectives; the accuracy's spread is the process's,
   the costs' the members'); when that gains nothing either (no spread), the optimistic prediction
   (``mean - std``), then a uniform choice;
5. when the last batch added no hypervolume to the front (:func:`stalled`), every
   :data:`WIDE_EVERY`-th pick of the next one (one per batch of 8) is made against a wider box
   (:func:`wide_reference`): the accuracy's median, but each cost's worst value over the space.
   The median box holds few of the front's networks (nb201 x raspi4: 13 of 30; x fpga: 4 of 15):
   most others are the accurate networks slower than the median, which the Gaussian process
   predicts well (within a few tenths of a point) and the box never asks for (the hypervolume inside
   the box rose too when they were evaluated, presumably from what they teach the process about the
   box's best networks). Only after a stalled batch, so the early batches, where the hypervolume is
   won, stay in the box.

The reference point of the hypervolume is the median network of the space: each objective's
median over the space's *genomes* (equivalent genomes each count, as each is a network a user may
draw), the evaluated points at their values and the others at their predicted means, when the
pool is the whole space (recomputed each generation); else the median over the first (uniform
random) batch of :data:`INITIAL` points. Improvement counts in the part of the space better than
a typical network. The batch is ``max(BATCH_MIN, workers)`` points (every worker busy, one fit
per batch). Nothing depends on the budget, so a run of 200 evaluations is the first 200 of a run
of 500. Deterministic for the seed.

What was measured against what (``benchmarks/search_efficiency.py``, nb201, 2 seeds per device;
see the README): wide picks (one in four of every batch, from the start) raised the hypervolume at
500 evaluations (median over devices and seeds 0.964 -> 0.987) and the front functions found
(54 % -> 68 %) but cost the early budgets (0.939 -> 0.861 at 200); one in four after a stalled
batch: 0.915 at 200, 0.979 at 500, 64 %; two in eight after two stalled batches: 0.918, 0.982,
67 %; one in eight after a stalled batch (kept): 0.943, 0.972, 64 % (on 5 seeds per device: 0.942,
0.971, 61 %); the expected improvement for every pick found less within 200 evaluations with the
ensemble's spread, and as much as the mean's improvement (within the seeds' spread) with the
process's, so it is only the fallback; the median over canonical genomes (functions) as the
reference leaves out the networks between it and the median over genomes, which are on the judged
front; a pick per batch by the probability of not being dominated, or by the improvement against a
looser reference (the 90th percentile), finds front functions outside the reference box but costs
hypervolume; the Gaussian process for the latency too is no better than the ensemble (the latency
is nearly additive over the genes, which the ridge base learns).

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
from hwnas.search.surrogate import CategoricalGP, SurrogateEnsemble

#: points per generation: at least this many, else one per worker
BATCH_MIN = 8
#: after a batch that added no hypervolume, every this-many-th pick of the next one is made in the wide box
#: (:func:`wide_reference`)
WIDE_EVERY = 8
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


def _expected_shortfall(c: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``E[max(c - y, 0)]`` for ``y ~ N(m, s^2)``, ``s > 0`` (0 where ``c`` is ``-inf``)."""
    from scipy.stats import norm

    finite = np.isfinite(c)
    c = np.where(finite, c, 0.0)
    z = (c - m) / s
    return np.where(finite, (c - m) * norm.cdf(z) + s * norm.pdf(z), 0.0)


def expected_hv_improvement(mean: np.ndarray, std: np.ndarray, edges: np.ndarray, heights: np.ndarray,
                            ref: np.ndarray) -> np.ndarray:
    """The expected :func:`hv_improvement` of each row's two objectives (minimised), taken as independent
    Gaussians ``N(mean, std^2)``, over the front of :func:`staircase`. Exact: on each strip of the
    staircase the improvement is a width that depends on the first objective alone times a height that
    depends on the second alone, so its expectation is the product of their expectations."""
    m = np.asarray(mean, dtype=float).reshape(-1, 2)
    s = np.maximum(np.asarray(std, dtype=float).reshape(-1, 2), 1e-12)
    right = np.minimum(edges[1:], ref[0])[None]
    width = np.clip(_expected_shortfall(right, m[:, :1], s[:, :1])
                    - _expected_shortfall(edges[:-1][None], m[:, :1], s[:, :1]), 0.0, None)
    height = _expected_shortfall(heights[None], m[:, 1:], s[:, 1:])
    return (width * height).sum(axis=1)


def hypervolume(front: np.ndarray, ref: np.ndarray) -> float:
    """The area a two-objective ``front`` (minimised) dominates, bounded by ``ref``."""
    edges, heights = staircase(front, ref)
    if len(edges) <= 2:
        return 0.0
    return float(((np.minimum(edges[2:], ref[0]) - edges[1:-1]) * (ref[1] - heights[1:])).sum())


def stalled(F: np.ndarray, ref: np.ndarray, n: int) -> bool:
    """Whether the last ``n`` rows of ``F`` (the feasible points' objective vectors, minimised, in the order they
    were evaluated) added no hypervolume (bounded by ``ref``) to the front of the rows before them."""
    before = F[:-n] if len(F) > n else F[:0]
    return hypervolume(F, ref) <= hypervolume(before, ref) * (1 + 1e-9)


def wide_reference(ref: np.ndarray, values: np.ndarray, keep) -> np.ndarray:
    """``ref`` with each objective not in ``keep`` moved just past its worst value in ``values`` (rows of
    objective vectors, minimised): the box of the accurate networks at any cost."""
    wide = np.array(ref, dtype=float)
    for k in range(len(wide)):
        if k not in keep:
            lo, hi = float(values[:, k].min()), float(values[:, k].max())
            wide[k] = max(wide[k], hi + 0.01 * (hi - lo) + 1e-12)
    return wide


def choose_batch(mean: np.ndarray, std: np.ndarray, weight: np.ndarray, front: np.ndarray, ref,
                 n: int, optimistic: np.ndarray, rng: np.random.Generator) -> list[int]:
    """Greedy batch of ``n`` candidate indices by hypervolume improvement (see the module docstring).

    ``mean``, ``std``: ``(n_candidates, 2)`` predicted objectives (minimised) and their spread;
    ``weight``: each candidate's chance of being usable (feasible, not failing); ``front``: the known
    feasible objective vectors; ``ref``: the reference point, or a list of them taken in turn, one per
    pick (the :func:`wide_reference` picks). Once no candidate's mean improves the
    believed front, the expected improvement under ``N(mean, std^2)`` counts; when that is nothing too,
    the improvement of ``optimistic`` (the predictions less the spread); then a uniform choice."""
    front = np.asarray(front, dtype=float).reshape(-1, 2)
    chosen: list[int] = []
    free = np.ones(len(mean), dtype=bool)
    refs = list(ref) if isinstance(ref, (list, tuple)) else [ref]
    for pick in range(min(n, len(mean))):
        ref = refs[pick % len(refs)]
        edges, heights = staircase(front, ref)
        score = np.where(free, hv_improvement(mean, edges, heights, ref) * weight, -1.0)
        if score.max() <= 0:
            score = np.where(free, expected_hv_improvement(mean, std, edges, heights, ref) * weight, -1.0)
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
            #: how many genomes of the space each canonical point stands for
            self.whole_counts = self.counts

    def canonical_rows(self, rows) -> np.ndarray:
        """Distinct canonical rows of ``rows`` (valid ones, first occurrence order), as an int matrix;
        their point keys in ``self.keys``, how many of ``rows`` each stands for in ``self.counts``."""
        search = self.search
        n = search.joint.arch_size
        out, seen, counts = [], {}, []
        for x in rows:
            x = tuple(int(v) for v in x)
            try:
                genome, hws = search.joint.split(x)
            except InvalidConfigError:
                continue
            canonical = search.canonical(genome)
            key = point_key(canonical, hws)
            if key not in seen:
                seen[key] = len(out)
                out.append((key, canonical + x[n:]))
                counts.append(0)
            counts[seen[key]] += 1
        self.keys = [k for k, _ in out]
        self.counts = np.array(counts, dtype=float)
        return np.array([x for _, x in out], dtype=int).reshape(-1, len(search.joint.cardinalities))

    def candidates(self, rng: np.random.Generator) -> np.ndarray:
        """This generation's pool, without the points already evaluated."""
        search = self.search
        if self.whole is not None:
            mask = np.array([search.point(k) is None for k in self.whole_keys], dtype=bool)
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
        mask = np.array([search.point(k) is None for k in self.keys], dtype=bool)
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
    X = [x for x, _ in rows]
    Y = np.array([y for _, y in rows], dtype=float)
    mean, std = np.empty((len(candidates), Y.shape[1])), np.empty((len(candidates), Y.shape[1]))
    # an accuracy objective (minimised as -accuracy): a Gaussian process on its log error
    ceilings = {k: accuracy_ceiling(-Y[:, k]) for k, t in enumerate(search.objectives)
                if t.metric == "accuracy" and t.maximize}
    for k, top in ceilings.items():
        log_mean, log_std = CategoricalGP(search.joint.cardinalities).fit(
            X, np.log(np.maximum(top + Y[:, k], 1e-12))).predict(candidates)
        mean[:, k] = np.exp(log_mean) - top
        std[:, k] = np.exp(log_mean) * log_std  # to first order
    # the costs and the constraints: the bootstrap ensemble, whose members also vote on feasibility
    others = [k for k in range(Y.shape[1]) if k not in ceilings]
    weight = np.ones(len(candidates))
    if others:
        model = SurrogateEnsemble(search.joint.cardinalities, seed=seed, **MODEL).fit(X, Y[:, others])
        members = model.predict_members(candidates)  # (n_models, n_candidates, len(others))
        mean[:, others], std[:, others] = members.mean(axis=0), members.std(axis=0)
        constraints = [i for i, k in enumerate(others) if k >= n_obj]
        if constraints:
            weight = (members[:, :, constraints] <= 0).all(axis=2).mean(axis=0)
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
    if pool.whole is not None:
        ref = space_median(search, pool, candidates, mean[:, :n_obj])
    if ceilings and stalled(known, ref, n):
        ref = [ref] * (WIDE_EVERY - 1) + [wide_reference(ref, np.vstack([known, mean[:, :n_obj]]), ceilings)]
    chosen = choose_batch(mean[:, :n_obj], std[:, :n_obj], weight, known, ref, n, optimistic[:, :n_obj], rng)
    return candidates[chosen]


def accuracy_ceiling(accuracy: np.ndarray) -> float:
    """``U`` of the log error ``log(U - accuracy)``: just above the top of the scale (percent, or a fraction
    when every value is at most 1), and above every value seen."""
    top = 100.0 if np.max(accuracy, initial=0.0) > 1.0 else 1.0
    return max(top, float(np.max(accuracy, initial=0.0))) + 0.005 * top


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The smallest value at which the cumulative weight reaches half the total."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][min(int(np.searchsorted(cumulative, 0.5 * cumulative[-1])), len(values) - 1)])


def space_median(search, pool: Pool, candidates: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Every objective's median over the genomes of an enumerated space (:attr:`Pool.whole_counts` weights):
    the evaluated points at their values (failed ones at :data:`~hwnas.search.config.FAILED`), the others
    (``candidates``, in the pool's order) at ``predicted``."""
    n_obj = predicted.shape[1]
    values = np.empty((len(pool.whole), n_obj))
    evaluated = np.array([search.point(k) is not None for k in pool.whole_keys], dtype=bool)
    values[~evaluated] = predicted
    values[evaluated] = np.array([search.F(search.point(k)) for k, e in zip(pool.whole_keys, evaluated) if e],
                                 dtype=float).reshape(-1, n_obj)
    return np.array([weighted_median(values[:, k], pool.whole_counts) for k in range(n_obj)])


def reference_point(search, first: list) -> np.ndarray | None:
    """The hypervolume's reference point: every objective's median over the first batch's usable
    points (see the module docstring), or None while it has none."""
    F = np.array([search.F(p) for p in first if p is not None and p.status == "ok"], dtype=float)
    F = F.reshape(-1, len(search.objectives))
    F = F[(np.abs(F) < FAILED).all(axis=1)]
    return np.median(F, axis=0) if len(F) else None

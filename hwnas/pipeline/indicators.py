"""Quality indicators of a set of objective vectors (all objectives minimised).

* :func:`pareto_mask`: which points are non-dominated;
* :func:`hypervolume_2d`: the exact area dominated by a 2-D point set and
  bounded by a reference point (sort and sweep, O(n log n)).

A maximised objective (accuracy) is negated before it is passed here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["hypervolume_2d", "pareto_mask"]


def _as_matrix(points: Sequence[Sequence[float]] | np.ndarray, dims: int | None = None) -> np.ndarray:
    F = np.asarray(points, dtype=float)
    if F.size == 0:
        return F.reshape(0, dims or (F.shape[-1] if F.ndim == 2 else 0))
    if F.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n points x m objectives), got shape {F.shape}")
    if dims is not None and F.shape[1] != dims:
        raise ValueError(f"points must have {dims} objectives, got {F.shape[1]}")
    if not np.all(np.isfinite(F)):
        raise ValueError("points must be finite")
    return F


def pareto_mask(points: Sequence[Sequence[float]] | np.ndarray, *, chunk: int = 1024) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` (minimisation).

    A row is dominated when another row is <= in every objective and < in at
    least one. Identical rows do not dominate each other: all copies of a
    non-dominated vector are kept.
    """
    F = _as_matrix(points)
    n = len(F)
    mask = np.ones(n, dtype=bool)
    if n == 0:
        return mask
    if F.shape[1] == 2:
        # sweep in (f1, f2) order: a point is non-dominated iff its f2 is below every f2 seen at a smaller f1,
        # and equal to the smallest f2 among the points with the same f1
        order = np.lexsort((F[:, 1], F[:, 0]))
        best = np.inf  # smallest f2 among points with a strictly smaller f1
        i = 0
        while i < n:
            j = i
            f1 = F[order[i], 0]
            while j < n and F[order[j], 0] == f1:
                j += 1
            group = order[i:j]  # same f1, sorted by f2
            lowest = F[group[0], 1]
            mask[group] = (F[group, 1] == lowest) & (lowest < best)
            best = min(best, lowest)
            i = j
        return mask
    for start in range(0, n, chunk):
        block = F[start : start + chunk]
        le = np.all(F[None, :, :] <= block[:, None, :], axis=2)
        lt = np.any(F[None, :, :] < block[:, None, :], axis=2)
        mask[start : start + chunk] = ~np.any(le & lt, axis=1)
    return mask


def hypervolume_2d(points: Sequence[Sequence[float]] | np.ndarray, ref: Sequence[float]) -> float:
    """The area dominated by ``points`` and bounded by ``ref`` (both objectives minimised).

    Points that do not strictly dominate ``ref`` in both objectives add
    nothing. Exact up to floating-point rounding.
    """
    r = np.asarray(ref, dtype=float)
    if r.shape != (2,) or not np.all(np.isfinite(r)):
        raise ValueError(f"ref must be two finite numbers, got {ref!r}")
    F = _as_matrix(points, dims=2)
    F = F[np.all(F < r, axis=1)]
    if len(F) == 0:
        return 0.0
    # by f1 ascending (ties: smaller f2 first); a point below every earlier f2 adds the horizontal strip
    # between its f2 and that lowest earlier f2 (or ref's), from its f1 to ref's
    F = F[np.lexsort((F[:, 1], F[:, 0]))]
    above = np.minimum.accumulate(np.concatenate(([r[1]], F[:-1, 1])))
    return float(np.sum((r[0] - F[:, 0]) * np.maximum(above - F[:, 1], 0.0)))

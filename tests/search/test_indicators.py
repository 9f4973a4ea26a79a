"""hypervolume_2d and pareto_mask: hand-computed cases, and pymoo's HV / a brute force on random sets."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.pipeline.indicators import hypervolume_2d, pareto_mask


def brute_mask(F):
    F = np.asarray(F, dtype=float)
    return np.array([not any(np.all(g <= f) and np.any(g < f) for g in F) for f in F], dtype=bool)


# ------------------------------------------------------------------ hypervolume_2d, by hand


def test_single_point_is_a_rectangle():
    assert hypervolume_2d([[1.0, 2.0]], [4.0, 5.0]) == pytest.approx(3.0 * 3.0)


def test_staircase():
    # (1,3), (2,2), (3,1) against (4,4): strips y in [3,4) x 3 wide, [2,3) x 2, [1,2) x 1: 3 + 2 + 1
    assert hypervolume_2d([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)
    # order does not matter
    assert hypervolume_2d([[3, 1], [1, 3], [2, 2]], [4, 4]) == pytest.approx(6.0)


def test_dominated_and_duplicate_points_add_nothing():
    base = hypervolume_2d([[1, 3], [3, 1]], [4, 4])
    assert base == pytest.approx(3 * 1 + 1 * 2)  # y in [3,4) x 3 wide, y in [1,3) x 1 wide
    assert hypervolume_2d([[1, 3], [3, 1], [3.5, 3.5], [1, 3], [3, 1], [2, 3]], [4, 4]) == pytest.approx(base)


def test_points_not_strictly_better_than_ref_are_ignored():
    # on the reference's boundary or beyond: zero area
    assert hypervolume_2d([[4, 1], [1, 4], [5, 0], [0, 5]], [4, 4]) == 0.0
    assert hypervolume_2d([[4, 1], [2, 2]], [4, 4]) == pytest.approx(4.0)


def test_empty_and_ties():
    assert hypervolume_2d(np.zeros((0, 2)), [1, 1]) == 0.0
    assert hypervolume_2d([], [1, 1]) == 0.0
    # same f1, different f2: only the lower one counts
    assert hypervolume_2d([[1, 2], [1, 1]], [3, 3]) == pytest.approx(4.0)
    # same f2, different f1
    assert hypervolume_2d([[2, 1], [1, 1]], [3, 3]) == pytest.approx(4.0)


def test_negative_coordinates_maximised_objective():
    # accuracy 90 and 80 (negated), latency 10 and 5; ref: accuracy 50, latency 20
    points = [[-90, 10], [-80, 5]]
    # strip 1: latency in [10,20) x accuracy 50..90 = 10*40; strip 2: latency [5,10) x 50..80 = 5*30
    assert hypervolume_2d(points, [-50, 20]) == pytest.approx(400 + 150)


def test_bad_input():
    with pytest.raises(ValueError):
        hypervolume_2d([[1, 2, 3]], [4, 4])
    with pytest.raises(ValueError):
        hypervolume_2d([[1, 2]], [4, 4, 4])
    with pytest.raises(ValueError):
        hypervolume_2d([[1, np.nan]], [4, 4])


# ------------------------------------------------------------------ against pymoo


@pytest.mark.parametrize("seed", range(20))
def test_matches_pymoo_on_random_sets(seed):
    hv_module = pytest.importorskip("pymoo.indicators.hv")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    F = rng.random((n, 2)) * rng.uniform(0.1, 100, size=2) - rng.uniform(0, 50, size=2)
    if seed % 3 == 0:  # discrete values: many ties and duplicates
        F = np.round(F / 5) * 5
    # a reference that some points miss
    ref = np.quantile(F, rng.uniform(0.3, 1.0), axis=0) + (seed % 2) * 1.0
    expected = float(hv_module.HV(ref_point=ref)(F)) if np.any(np.all(F < ref, axis=1)) else 0.0
    assert hypervolume_2d(F, ref) == pytest.approx(expected, rel=1e-9, abs=1e-9)


# ------------------------------------------------------------------ pareto_mask


def test_pareto_mask_by_hand():
    F = [[1, 3], [2, 2], [3, 1], [2, 3], [3, 3], [1, 3]]
    assert pareto_mask(F).tolist() == [True, True, True, False, False, True]
    assert pareto_mask(np.zeros((0, 2))).tolist() == []
    assert pareto_mask([[1, 2]]).tolist() == [True]


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("m", [2, 3])
def test_pareto_mask_matches_brute_force(seed, m):
    rng = np.random.default_rng(seed)
    F = rng.integers(0, 8 if seed % 2 else 1000, size=(int(rng.integers(1, 150)), m)).astype(float)
    assert pareto_mask(F, chunk=7).tolist() == brute_mask(F).tolist()


def test_front_has_the_same_hypervolume_as_the_set():
    rng = np.random.default_rng(1)
    F = rng.random((500, 2))
    assert hypervolume_2d(F[pareto_mask(F)], [1, 1]) == pytest.approx(hypervolume_2d(F, [1, 1]))

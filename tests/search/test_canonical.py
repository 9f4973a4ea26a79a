"""Canonical candidates (no budget spent twice on one function) and the default EHVI search.

The searches run on the toy plugin target (a formula over the evaluated genome), which tests the
plumbing: canonicalisation, budget, reproducibility across runs, budgets and executors.
"""

from pathlib import Path

import numpy as np
import pytest
from pymoo.indicators.hv import HV

from hwnas.arch import get_space
from hwnas.arch.nb201 import NUM_ARCHS, index_to_genome, live_genome
from hwnas.search import ehvi
from hwnas.search.config import SearchConfig
from hwnas.search.driver import Search
from hwnas.search.space import point_key

TOY = str(Path(__file__).with_name("toy_target.py"))
HW = [{"speed": 2, "mode": "a"}]


def config(**kw):
    # no accuracy: the toy's two costs are the objectives (fast; the accuracy evaluators have their own tests)
    base = dict(targets=("toy",), space="nb201", objectives=("latency_ms", "peak_memory_kb"), budget=40, workers=0,
                plugins=(TOY,))
    base.update(kw)
    return SearchConfig(**base)


def test_canonicalisation_merges_every_equivalent_nb201_cell_and_never_two_functions(tmp_path):
    """All 15,625 cells: two cells share a search key exactly when they share a live genome."""
    search = Search(config(), tmp_path / "run")
    space = get_space("nb201")
    by_key: dict[str, set] = {}
    by_live: dict[tuple, set] = {}
    for i in range(NUM_ARCHS):
        genome = index_to_genome(i)
        canonical = search.canonical(genome)
        assert live_genome(canonical) == canonical == live_genome(genome)  # a member of its own class
        assert space.canonical(canonical) == canonical
        by_key.setdefault(point_key(canonical, HW), set()).add(i)
        by_live.setdefault(live_genome(genome), set()).add(i)
    assert sorted(map(sorted, by_key.values())) == sorted(map(sorted, by_live.values()))
    assert len(by_key) == 9445  # the distinct live genomes of the 15,625 cells


def test_an_equivalent_candidate_takes_the_stored_result_and_costs_no_evaluation(tmp_path):
    search = Search(config(formulation="random"), tmp_path / "run")
    # edge 1<-0 is none, so node 1 holds nothing and edge 2<-1 (a conv here) is dead
    live = (0, 1, 0, 3, 0, 1)
    dead = (0, 1, 2, 3, 0, 1)
    assert live_genome(dead) == live
    x = lambda g: list(g) + search.joint.join((), HW)  # noqa: E731
    [a] = search.evaluate([x(live)])
    [b, c] = search.evaluate([x(dead), x(dead)])
    assert search.evaluated == 1 and a is b is c and a.genome == live
    assert search.store.count(Search.RUN_ID) == 1
    alias = search.store.get(search.equivalent_namespace, point_key(dead, HW))
    assert alias == {"genome": list(dead), "hws": HW, "canonical": list(live), "same_as": a.key, "by": "genome"}
    # a candidate first met in its dead form is evaluated as its canonical form
    other = next(g for g in map(index_to_genome, range(NUM_ARCHS)) if live_genome(g) not in (g, live))
    [d] = search.evaluate([x(other)])
    assert d.genome == live_genome(other) and search.evaluated == 2


def test_the_default_search_is_identical_across_runs_budgets_and_executors(tmp_path):
    def points(name, **kw):
        s = Search(config(seed=5, **{"budget": 32, **kw}), tmp_path / name)
        s.run()
        assert s.config.surrogate == "ehvi" and s.surrogate_generations > 0
        return s, [(p.key, p.status, p.metrics) for p in s.all_points()]

    a, pa = points("a")
    _, pool = points("pool", workers=2)  # a second run, in worker processes
    _, short = points("short", budget=24)
    assert pa == pool
    assert short == pa[:24]  # the budget only stops it
    assert a.evaluated == 32 and len({k for k, *_ in pa}) == 32
    assert all(p.genome == live_genome(p.genome) for p in a.all_points())


def test_the_default_search_honours_constraints_and_aims_at_feasible_points(tmp_path):
    cons = ("latency_ms<=16", "peak_memory_kb<=30")

    def feasible(p):
        return p.status == "ok" and p.metrics["toy"]["latency_ms"] <= 16 and p.metrics["toy"]["peak_memory_kb"] <= 30

    s = Search(config(budget=48, constraints=cons), tmp_path / "run")
    front = s.run()
    assert s.evaluated == 48 and front and all(feasible(p) for p in front)
    r = Search(config(budget=48, constraints=cons, formulation="random"), tmp_path / "random")
    r.run()
    late = s.all_points()[ehvi.INITIAL:]
    share, random_share = (sum(map(feasible, late)) / len(late),
                           sum(map(feasible, r.all_points())) / len(r.all_points()))
    assert share >= random_share + 0.2, (share, random_share)


def test_hypervolume_improvement_is_the_exact_two_objective_gain():
    rng = np.random.default_rng(0)
    ref = np.array([1.0, 1.0])
    for _ in range(20):
        front = rng.random((int(rng.integers(0, 8)), 2))
        Y = rng.random((50, 2)) * 1.2 - 0.1
        edges, heights = ehvi.staircase(front, ref)
        got = ehvi.hv_improvement(Y, edges, heights, ref)
        base = HV(ref_point=ref)(front) if len(front) else 0.0
        want = [HV(ref_point=ref)(np.vstack([front, y])) - base for y in Y]
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_expected_improvement_is_the_mean_improvement_over_gaussian_objectives():
    rng = np.random.default_rng(1)
    ref = np.array([1.0, 1.0])
    front = rng.random((5, 2))
    edges, heights = ehvi.staircase(front, ref)
    mean, std = rng.random((6, 2)) * 1.2 - 0.1, rng.random((6, 2)) * 0.3 + 0.01
    draws = mean + std * rng.standard_normal((100_000, 6, 2))
    want = ehvi.hv_improvement(draws, edges, heights, ref).mean(axis=0)
    got = ehvi.expected_hv_improvement(mean, std, edges, heights, ref)
    np.testing.assert_allclose(got, want, rtol=0.03, atol=2e-4)
    # no spread: the improvement of the mean itself
    np.testing.assert_allclose(ehvi.expected_hv_improvement(mean, 0 * std, edges, heights, ref),
                               ehvi.hv_improvement(mean, edges, heights, ref), atol=1e-9)


def test_the_reference_is_the_median_over_genomes_and_accuracy_is_learnt_as_log_error():
    assert ehvi.weighted_median(np.array([3.0, 1.0, 2.0]), np.array([1.0, 1.0, 1.0])) == 2.0
    # the genomes' median, not the canonical points': one point standing for many genomes pulls it
    assert ehvi.weighted_median(np.array([3.0, 1.0, 2.0]), np.array([5.0, 1.0, 1.0])) == 3.0
    assert ehvi.accuracy_ceiling(np.array([93.5, 10.0])) == 100.5
    assert ehvi.accuracy_ceiling(np.array([0.93, 0.1])) == 1.005


def test_batch_takes_the_largest_gains_then_the_optimistic_ones():
    ref = np.array([10.0, 10.0])
    front = np.array([[2.0, 8.0], [5.0, 5.0], [8.0, 2.0]])
    mean = np.array([[9.5, 9.5], [1.0, 9.0], [5.5, 5.5], [6.0, 6.0], [3.0, 3.0]])
    optimistic = mean.copy()
    optimistic[3] = [2.5, 2.5]
    weight = np.ones(len(mean))
    std = np.zeros_like(mean)  # no spread: the expected improvement is the mean's
    rng = np.random.default_rng(0)
    # [3,3] gains most, then [1,9] (1 x 1); then no mean gains beside [3,3]'s believed point: [6,6] by its
    # optimistic [2.5,2.5]; then the rest at random ([9.5,9.5] and [5.5,5.5] gain nothing either way)
    chosen = ehvi.choose_batch(mean, std, weight, front, ref, 5, optimistic, rng)
    assert chosen[:3] == [4, 1, 3] and sorted(chosen[3:]) == [0, 2]
    weight[4] = 0.0  # predicted infeasible: its gain does not count
    assert ehvi.choose_batch(mean, std, weight, front, ref, 1, optimistic, rng) == [1]
    # with a spread, once the means gain nothing the expected improvement decides: [5.5,5.5] with a wide
    # spread before [6,6] with a narrow one (whatever their optimistic values)
    std[2], std[3], weight[4] = [2.0, 2.0], [0.1, 0.1], 1.0
    assert ehvi.choose_batch(mean, std, weight, front, ref, 3, optimistic, rng)[:3] == [4, 1, 2]


def test_a_stalled_batch_sends_a_pick_to_the_accurate_networks_past_the_median_cost():
    # objectives (-accuracy, latency): the box ends at the median (-90, 10)
    ref = np.array([-90.0, 10.0])
    known = np.array([[-92.0, 6.0], [-91.0, 4.0], [-80.0, 1.0], [-94.0, 30.0]])
    wide = ehvi.wide_reference(ref, known, keep={0})
    assert wide[0] == -90.0 and wide[1] > 30.0  # the accuracy's median kept, the latency past its worst
    # candidates: a small gain inside the box, and a more accurate network slower than the median
    mean = np.array([[-92.5, 5.0], [-95.0, 20.0], [-89.0, 2.0]])
    std, weight, rng = np.zeros_like(mean), np.ones(len(mean)), np.random.default_rng(0)
    assert ehvi.choose_batch(mean, std, weight, known, ref, 2, mean, rng)[0] == 0
    # the box alone never asks for the slow accurate one (it gains nothing there); the wide pick does
    assert ehvi.choose_batch(mean, std, weight, known, [ref, wide], 2, mean, rng) == [0, 1]
    # stalled: the last batch added no hypervolume inside the box
    assert ehvi.stalled(np.array([[-92.0, 6.0], [-91.0, 4.0], [-94.0, 30.0], [-85.0, 9.0]]), ref, 2)
    assert not ehvi.stalled(np.array([[-92.0, 6.0], [-94.0, 30.0], [-91.0, 4.0]]), ref, 2)
    assert ehvi.hypervolume(np.array([[-92.0, 6.0], [-91.0, 4.0]]), ref) == pytest.approx(2 * 4 + 1 * 2)

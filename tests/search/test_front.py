"""Pareto fronts and hypervolumes are pymoo's; these hand-checked cases pin how hwnas uses them: the search's
:func:`~hwnas.search.objectives.pareto_front` (``NonDominatedSorting``) and the search_efficiency benchmark's
front and hypervolume (``NonDominatedSorting``, ``HV``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from hwnas.search.config import Bound
from hwnas.search.objectives import Point, Term, pareto_front

ACC = Term("accuracy", None, True)
LAT = Term("latency_ms", "toy", False)


def point(key, acc, lat, status="ok"):
    metrics = {"toy": {"accuracy": acc, "latency_ms": lat}} if lat is not None else {"toy": {"accuracy": acc}}
    return Point(x=(0,), genome=(0,), hws=[{}], key=key, status=status, metrics=metrics)


POINTS = [point("a", 90, 10), point("b", 80, 5), point("c", 85, 12), point("d", 90, 10), point("e", 70, 5),
          point("f", 95, 30), point("g", 99, 1, status="failed"), point("h", 92, 20), point("i", 99, None)]


def test_pareto_front_by_hand():
    # c is dominated by a, e by b (same latency, lower accuracy); d is a copy of a (the first is kept);
    # g failed and i lacks a latency: neither counts. Order: by -accuracy, then latency.
    assert [p.key for p in pareto_front(POINTS, [ACC, LAT], [])] == ["f", "h", "a", "b"]
    # a constraint removes f and h before the front is taken: c stays dominated by a
    assert [p.key for p in pareto_front(POINTS, [ACC, LAT], [(LAT, Bound.parse("latency_ms<=15"))])] == ["a", "b"]
    assert pareto_front(POINTS, [ACC, LAT], [(LAT, Bound.parse("latency_ms<=1"))]) == []


def _benchmark():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "search_efficiency.py"
    spec = importlib.util.spec_from_file_location("search_efficiency", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_front_and_hypervolume_by_hand():
    bench = _benchmark()
    # accuracy 90 and 80 (negated), latency 10 and 5; a dominated point; a copy of a front point (kept)
    F = np.array([[-90, 10], [-80, 5], [-70, 8], [-90, 10]], dtype=float)
    assert bench.front_rows(F) == {0, 1, 3}
    # reference accuracy 50, latency 20: latency [10, 20) x accuracy 50..90 = 400, [5, 10) x 50..80 = 150
    assert bench.hypervolume(F, [-50, 20]) == pytest.approx(550)
    # the staircase (1,3), (2,2), (3,1) against (4,4): strips 3 + 2 + 1 wide
    assert bench.hypervolume([[3, 1], [1, 3], [2, 2]], [4, 4]) == pytest.approx(6)
    # points on or beyond the reference add nothing
    assert bench.hypervolume([[4, 1], [1, 4], [5, 0], [2, 2]], [4, 4]) == pytest.approx(4)
    assert bench.hypervolume([[5, 5]], [4, 4]) == 0.0
    assert bench.hypervolume(np.zeros((0, 2)), [1, 1]) == 0.0

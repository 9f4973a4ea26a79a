"""The cost ladder on the real CPU target: every candidate priced by the lookup table, the front re-measured."""

from __future__ import annotations

import pytest

from hwnas.cli.report import ladder_rows, write_report
from hwnas.search.config import LADDER_TOLERANCE, SearchConfig
from hwnas.search.driver import Search


def test_ladder_reprices_every_front_point_and_reports_disagreements(tmp_path):
    cfg = SearchConfig(targets=("cpu",), space="nb201", space_options={"cells_per_stage": 1},
                       objectives=("accuracy", "latency_ms"), accuracy="proxy",
                       accuracy_options={"kind": "synflow"}, cost="analytical", ladder="measure", budget=3, pop_size=2,
                       workers=0, repeats=3, surrogate="none")
    search = Search(cfg, tmp_path / "run")
    front = search.run()
    repriced = search.repriced()
    # the final front, and every earlier front, was re-priced; nothing else was
    assert {p.key for p in front} <= set(repriced) <= {p.key for p in search.all_points()}
    rows = ladder_rows(search.all_points(), repriced, search.objectives, "measure", "analytical")
    assert rows and all(r["metric"] == "latency_ms" and r["target"] == "cpu" for r in rows)
    for r in rows:
        assert r["measure"] > 0 and r["analytical"] > 0
        assert r["rel_err"] == pytest.approx((r["analytical"] - r["measure"]) / r["measure"])
        assert r["disagree"] == (abs(r["rel_err"]) > LADDER_TOLERANCE)
    # the cheap method's measured machine figures (peaks, runtime overhead) are kept in the run's store
    # (the lookup table's kernel times likewise: tests/cost/test_costmodels.py)
    namespace = search.evaluator.targets[0].cost_namespace(front[0].hws[0])
    assert len(search.store.values(namespace)) >= 2
    html = write_report(tmp_path / "run")["html"].read_text()
    assert "Cost ladder: analytical against measure" in html

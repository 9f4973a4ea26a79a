"""Multi-target search: objectives aggregated over the targets, every target's metrics in the report, the
transfer table, and one clear line for each bad multi-target input.

The searches are real: NB201 cells (one cell per stage) compiled for the analytical accelerator targets
(deterministic, so a cell of the transfer table can be compared with a direct evaluation exactly) and, in
the CLI test, for the measured CPU.
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys

import pytest

from hwnas.arch import get_space
from hwnas.pipeline.evaluate import Candidate, evaluate
from hwnas.cli.report import write_report
from hwnas.search.config import EXTRA_RUN_ID, REFERENCE_KEY, REFERENCE_NAMESPACE, SearchConfig
from hwnas.search.driver import Search
from hwnas.search.objectives import apply_aggregate
from hwnas.targets import get_target

TARGETS = ("asic:eyeriss", "fpga:eyeriss")
SPACE_OPTIONS = {"cells_per_stage": 1}


def accel_config(**kw):
    base = dict(targets=TARGETS, space="nb201", space_options=SPACE_OPTIONS,
                objectives=("latency_ms@worst", "energy_mj@geomean"), formulation="random", budget=4, pop_size=2,
                workers=0, seed=0)
    base.update(kw)
    return SearchConfig(**base)


@pytest.fixture(scope="module")
def accel_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("multi") / "run"
    search = Search(accel_config(), out)
    front = search.run()
    files = write_report(out)
    return search, front, files, out


def direct(genome, spec, hw):
    """The metrics of one evaluation made here, outside the search."""
    space = get_space("nb201", **SPACE_OPTIONS)
    return evaluate(Candidate.from_space(space, genome, hw), get_target(spec)).metrics


def test_aggregated_objectives_are_the_stored_metrics_over_the_reference(accel_run):
    search, front, _, _ = accel_run
    store = search.store
    space = get_space("nb201", **SPACE_OPTIONS)
    # the reference network: the space's middle genome with each target's default hardware, evaluated for
    # real (it matches an evaluation made here) and recorded in the store
    reference = store.get(REFERENCE_NAMESPACE, REFERENCE_KEY)
    assert tuple(reference["genome"]) == space.reference_genome() == (2,) * 6
    ref = {}
    for spec, hw in zip(TARGETS, reference["hws"]):
        assert hw == get_target(spec).hardware_space.default()
        row = store.lookup(EXTRA_RUN_ID, Candidate.from_space(space, reference["genome"], hw).key(hw), spec)
        assert row is not None and row.ok
        assert row.metrics == pytest.approx(direct(reference["genome"], spec, hw))
        ref[spec] = row.metrics
    # every point's aggregated values from its stored per-target rows
    rows = {(r.candidate_key, r.target): r for r in store.evaluations(Search.RUN_ID)}
    worst, geomean = search.objectives
    checked = 0
    for p in search.all_points():
        if p.status != "ok":
            continue
        lat = [rows[(Candidate.from_space(space, p.genome, hw).key(hw), spec)].metrics["latency_ms"]
               / ref[spec]["latency_ms"] for spec, hw in zip(TARGETS, p.hws)]
        energy = [rows[(Candidate.from_space(space, p.genome, hw).key(hw), spec)].metrics["energy_mj"]
                  / ref[spec]["energy_mj"] for spec, hw in zip(TARGETS, p.hws)]
        assert p.value(worst) == pytest.approx(max(lat), rel=1e-12)
        assert p.value(geomean) == pytest.approx(math.sqrt(energy[0] * energy[1]), rel=1e-12)
        checked += 1
    assert checked >= 4
    # the front is the non-dominated feasible set under the aggregated objectives
    feasible = [p for p in search.all_points() if p.status == "ok"
                and all(p.metrics[s]["resource_use"] <= 1 for s in TARGETS)]
    vec = {p.key: (p.value(worst), p.value(geomean)) for p in feasible}
    expected = {k for k, v in vec.items()
                if not any(w[0] <= v[0] and w[1] <= v[1] and w != v for w in vec.values())}
    assert {p.key for p in front} == expected


def test_report_shows_every_targets_metrics_and_a_transfer_table_of_real_evaluations(accel_run):
    search, front, files, out = accel_run
    rows = list(csv.DictReader(open(files["csv"])))
    assert len(rows) == len(front)
    for row, p in zip(rows, front):
        for spec in TARGETS:
            for metric in ("latency_ms", "energy_mj", "area_mm2" if spec.startswith("asic") else "resource_use"):
                assert float(row[f"{metric}@{spec}"]) == pytest.approx(p.metrics[spec][metric], rel=1e-5)
        assert float(row["latency_ms@worst"]) == pytest.approx(p.value(search.objectives[0]), rel=1e-5)
    transfer = files["transfer_table"]
    cells = {(c["best_for"], c["on"]): c for c in transfer["cells"]}
    assert set(cells) == {(a, b) for a in TARGETS for b in TARGETS}
    made = 0
    for (a, b), c in cells.items():
        j = TARGETS.index(b)
        own = cells[(b, b)]
        # the architecture best for A on B, with the hardware config of B's best point
        assert c["hw"] == own["hw"]
        if c["run"] == "search":  # the search evaluated this architecture with this hardware on B
            assert any(tuple(p.genome) == tuple(c["genome"]) and p.hws[j] == c["hw"]
                       and p.metrics[b]["latency_ms"] == c["value"] for p in search.all_points())
        else:  # evaluated for the table: as a direct evaluation gives
            assert c["value"] == pytest.approx(direct(c["genome"], b, c["hw"])["latency_ms"], rel=1e-9)
        assert c["ratio"] == pytest.approx(c["value"] / own["value"])
        candidates = [p for p in search.all_points() if p.status == "ok"
                      and all(p.metrics[s]["resource_use"] <= 1 for s in TARGETS)]
        assert c["rank"] == 1 + sum(p.metrics[b]["latency_ms"] < c["value"] for p in candidates)
        assert c["of"] == len(candidates)
        if a == b:  # B's own best: the lowest latency on B among the candidates
            assert c["value"] == min(p.metrics[b]["latency_ms"] for p in candidates) and c["run"] == "search"
        if c["run"] == EXTRA_RUN_ID:  # made for the table: recorded in the store
            made += 1
            space = get_space("nb201", **SPACE_OPTIONS)
            row = search.store.lookup(EXTRA_RUN_ID, Candidate.from_space(space, c["genome"], c["hw"]).key(c["hw"]), b)
            assert row is not None and row.metrics["latency_ms"] == c["value"]
        assert c["hw"] == search.points[transfer["best"][b]].hws[j]
    assert made >= 1, "the seed should give targets different best architectures"
    assert list(csv.DictReader(open(files["transfer"])))[0]["best_for"] == TARGETS[0]
    html = files["html"].read_text()
    assert "Transfer: latency_ms" in html and "Aggregation over targets" in html
    assert all(f"metrics on {spec}" in html for spec in TARGETS)
    # a rebuilt report reads the table's evaluations back from the store
    extra = search.store.count(EXTRA_RUN_ID)
    again = write_report(out)["transfer_table"]
    assert again["cells"] == transfer["cells"] and search.store.count(EXTRA_RUN_ID) == extra


def test_resumed_aggregated_run_reuses_points_and_reference(accel_run):
    search, _, _, out = accel_run
    extra = search.store.count(EXTRA_RUN_ID)
    resumed = Search(accel_config(), out, resume=True)
    resumed.run()
    assert resumed.from_store == 4 and resumed.evaluated == 4
    assert resumed.store.count(EXTRA_RUN_ID) == extra  # the reference was not evaluated again
    assert [t.references for t in resumed.objectives] == [t.references for t in search.objectives]


def test_aggregate_option_rewrites_the_cost_objectives_only():
    assert apply_aggregate(["accuracy", "latency_ms", "energy_mj@cpu"], "worst") == \
        ("accuracy", "latency_ms@worst", "energy_mj@cpu")
    assert apply_aggregate(["accuracy", "latency"], "none") == ("accuracy", "latency")




@pytest.mark.parametrize(
    "args, message",
    [
        (["--aggregate", "median"], "unknown --aggregate 'median'; known: none, worst, geomean"),
        (["--objectives", "accuracy,latency_ms@median"],
         "'latency_ms@median' names 'median', which is neither a searched target \\(cpu, asic:eyeriss\\) nor an "
         "aggregation over the targets \\(worst, geomean\\)"),
        (["--constraint", "latency_ms@max<=2"], "'latency_ms@max' names 'max', which is neither"),
        (["--objectives", "accuracy@worst,latency_ms"], "accuracy is not a cost and cannot be aggregated"),
        (["--objectives", "accuracy,area_mm2@worst"],
         "'area_mm2@worst' cannot be aggregated: target\\(s\\) cpu do not define area_mm2"),
        (["--objectives", "accuracy,energy_mj", "--aggregate", "geomean"],
         "'energy_mj@geomean' cannot be aggregated: target\\(s\\) cpu do not define energy_mj"),
        (["--aggregate", "worst", "--objectives", "accuracy,latency_ms@cpu"],
         "--aggregate worst has no objective to aggregate"),
        (["--objectives", "accuracy,latency_ms,latency_ms@cpu"], "objective latency_ms@cpu is named twice"),
        (["--target", "asic:eyeriss"], "target asic:eyeriss is named twice; give each --target once"),
    ],
)
def test_bad_multi_target_input_gets_one_line(cli, tmp_path, args, message):
    out = tmp_path / "o"
    code, _, err = cli("search", "--space", "nb201", "--target", "cpu", "--target", "asic:eyeriss",
                        "--out", str(out), *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwnas: error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()  # refused before anything is written


def test_aggregating_over_one_target_is_refused(cli, tmp_path):
    code, _, err = cli("search", "--space", "nb201", "--target", "asic:eyeriss", "--aggregate", "worst",
                        "--out", str(tmp_path / "o"))
    assert code == 2 and "aggregates over targets but only asic:eyeriss is searched; add another --target" in err


@pytest.mark.slow  # ~30 s: a measured CPU target in a worker process; the accelerator run above covers the logic
def test_cli_multi_target_search_on_cpu_and_accelerator(tmp_path):
    """A real search with the measured CPU: the reference network is measured in the parent process before
    the worker starts, aggregated values and every target's metrics reach the summary and the files."""
    out = tmp_path / "cpu"
    res = subprocess.run(
        [sys.executable, "-m", "hwnas", "search", "--space", "nb201", "--space-option", "cells_per_stage=1",
         "--target", "cpu", "--target", "asic:eyeriss@32", "--accuracy", "proxy:synflow", "--aggregate", "worst",
         "--formulation", "random", "--budget", "2", "--pop-size", "2", "--workers", "1", "--repeats", "2",
         "--artifacts", "0", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    header = next(line for line in res.stdout.splitlines() if line.startswith("accuracy"))
    assert header.split()[:4] == ["accuracy", "latency_ms@worst", "latency_ms@cpu", "latency_ms@asic:eyeriss@32"]
    assert "transfer (latency_ms" in res.stdout and "best for cpu" in res.stdout
    from hwnas.pipeline.store import ResultStore

    store = ResultStore(out / "results.db")
    rows = store.evaluations(Search.RUN_ID)
    assert len(rows) == 4 and all(r.ok for r in rows), [r.error for r in rows]  # a worker sees every core
    ref = store.get(REFERENCE_NAMESPACE, REFERENCE_KEY)["metrics"]
    front = list(csv.DictReader(open(out / "pareto.csv")))
    assert front
    for row in front:
        expected = max(float(row["latency_ms@cpu"]) / ref["cpu"]["latency_ms"],
                       float(row["latency_ms@asic:eyeriss@32"]) / ref["asic:eyeriss@32"]["latency_ms"])
        assert float(row["latency_ms@worst"]) == pytest.approx(expected, rel=1e-5)
    transfer = list(csv.DictReader(open(out / "transfer.csv")))
    specs = ("cpu", "asic:eyeriss@32")
    assert [(r["best_for"], r["on"]) for r in transfer] == [(a, b) for a in specs for b in specs]
    assert all(float(r["value"]) > 0 and json.loads(r["hw"]) for r in transfer)


def test_an_aggregated_constraint_is_honoured(tmp_path):
    """Search plumbing only (the toy target under two names): ``latency_ms@worst<=0.5`` keeps the points
    at most 0.5x the reference network's latency on every target (a bound well below 1: the search
    evaluates canonical cells, whose dead edges are gone, and few of those are slower than the reference)."""
    from pathlib import Path

    toy = str(Path(__file__).with_name("toy_target.py"))
    search = Search(SearchConfig(targets=("toy", "toy:slow:0"), space="nb201", plugins=(toy,), accuracy="proxy",
                                 accuracy_options={"kind": "synflow"}, objectives=("accuracy", "latency_ms@geomean"),
                                 constraints=("latency_ms@worst<=0.5",), budget=24, pop_size=8, workers=0),
                    tmp_path / "toy")
    front = search.run()
    ref = search.store.get(REFERENCE_NAMESPACE, REFERENCE_KEY)["metrics"]
    ok = [p for p in search.all_points() if p.status == "ok"]
    slower = [p for p in ok
              if any(p.metrics[s]["latency_ms"] > 0.5 * ref[s]["latency_ms"] for s in ("toy", "toy:slow:0"))]
    assert front and slower, "the constraint should cut something"
    assert not {p.key for p in slower} & {p.key for p in front}
    assert all(max(p.metrics[s]["latency_ms"] / ref[s]["latency_ms"] for s in ref) <= 0.5 for p in front)

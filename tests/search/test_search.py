"""The search loop: formulations, constraints, failures, timeouts, reproducibility, kill and resume.

The toy target (a formula, no compiler) tests the plumbing only; one test at
the end runs a real search on the CPU target.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwnas.errors import InvalidConfigError
from hwnas.cli.report import load_run, write_report
from hwnas.search.config import FORMULATIONS, SearchConfig
from hwnas.search.driver import Search
from hwnas.search.objectives import pareto_front

TOY = str(Path(__file__).with_name("toy_target.py"))
PROXY = {"accuracy": "proxy", "accuracy_options": {"kind": "synflow"}}


def config(**kw):
    base = dict(targets=("toy",), space="nb201", budget=24, pop_size=8, workers=0, plugins=(TOY,), **PROXY)
    base.update(kw)
    return SearchConfig(**base)


def run(tmp_path, name="run", **kw):
    s = Search(config(**kw), tmp_path / name)
    front = s.run()
    return s, front


def test_nsga2_is_reproducible_from_the_seed(tmp_path):
    a, front_a = run(tmp_path, "a", seed=3)
    b, front_b = run(tmp_path, "b", seed=3)
    c, _ = run(tmp_path, "c", seed=4)
    assert [p.key for p in a.all_points()] == [p.key for p in b.all_points()]
    assert [p.key for p in front_a] == [p.key for p in front_b]
    assert [p.key for p in a.all_points()] != [p.key for p in c.all_points()]
    assert a.evaluated == 24 and len({p.key for p in a.all_points()}) == 24  # never evaluated twice


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_every_formulation_spends_its_budget_and_returns_a_front(tmp_path, formulation):
    extra = {"constraints": ("latency_ms<=20",)} if formulation == "constrained" else {}
    s, front = run(tmp_path, formulation=formulation, budget=20, **extra)
    assert s.evaluated == 20
    assert front, "no feasible point found"
    front_keys = {p.key for p in front}
    # the front is exactly the non-dominated feasible subset of everything evaluated
    for p in s.all_points():
        if p.key in front_keys or p.status != "ok" or (extra and p.metrics["toy"]["latency_ms"] > 20):
            continue
        assert any(q.metrics["toy"]["accuracy"] >= p.metrics["toy"]["accuracy"]
                   and q.metrics["toy"]["latency_ms"] <= p.metrics["toy"]["latency_ms"] for q in front)


def test_constraints_are_honoured_by_every_returned_point(tmp_path):
    for formulation in ("nsga2", "random", "constrained"):
        s, front = run(tmp_path, formulation, formulation=formulation, budget=32,
                       constraints=("latency_ms<=16", "peak_memory_kb<=40"))
        assert front, formulation
        assert all(p.metrics["toy"]["latency_ms"] <= 16 and p.metrics["toy"]["peak_memory_kb"] <= 40 for p in front)
        infeasible = [p for p in s.all_points() if p.status == "ok" and p.metrics["toy"]["latency_ms"] > 16]
        assert infeasible, "the test constraint should cut something"


def test_a_failing_candidate_is_recorded_and_the_search_goes_on(tmp_path):
    s, front = run(tmp_path, budget=30, formulation="random")
    failed = [p for p in s.all_points() if p.status == "failed"]
    assert failed and all("toy compiler refuses mode boom" in p.error for p in failed)
    assert all(p.hws[0]["mode"] != "boom" for p in front)
    rows = s.store.evaluations(Search.RUN_ID, status="failed")
    assert len(rows) == len(failed) and all("refuses mode boom" in r.error for r in rows)
    assert s.evaluated == 30


def test_a_candidate_past_its_timeout_is_recorded_as_failed(tmp_path):
    s = Search(config(targets=("toy:slow:3",), workers=1, budget=2, pop_size=2, timeout_s=1.0,
                      formulation="random"), tmp_path / "t")
    t0 = time.monotonic()
    s.run()
    assert time.monotonic() - t0 < 60
    assert [p.status for p in s.all_points()] == ["failed", "failed"]
    assert all(p.error == "timed out after 1 s" for p in s.all_points())
    assert {r.error for r in s.store.evaluations(Search.RUN_ID)} == {"timed out after 1 s"}


@pytest.mark.slow  # ~6 s; by default tests/search/test_canonical.py checks the default search across executors
def test_worker_processes_give_the_same_results_as_in_process(tmp_path):
    a, _ = run(tmp_path, "local", workers=0, budget=16)
    b, _ = run(tmp_path, "pool", workers=2, budget=16)
    assert [(p.key, p.status, p.metrics) for p in a.all_points()] == [(p.key, p.status, p.metrics) for p in b.all_points()]


def test_resume_refuses_a_different_configuration_but_accepts_a_larger_budget(tmp_path):
    run(tmp_path, budget=10)
    with pytest.raises(InvalidConfigError, match="already exists"):
        Search(config(budget=10), tmp_path / "run")
    with pytest.raises(InvalidConfigError, match="cannot resume: setting 'seed' was 0, now 1"):
        Search(config(budget=10, seed=1), tmp_path / "run", resume=True)
    s = Search(config(budget=14), tmp_path / "run", resume=True)
    s.run()
    assert s.evaluated == 14 and s.from_store == 10


def test_report_is_rebuilt_from_the_store(tmp_path):
    s, front = run(tmp_path, budget=16)
    files = write_report(tmp_path / "run")
    rows = (tmp_path / "run" / "pareto.csv").read_text().splitlines()
    assert len(rows) == len(front) + 1 and rows[0].startswith("rank,key,genome")
    html = files["html"].read_text()
    assert "Pareto front" in html and "pareto.png" in html and f"{len(front)} on the Pareto front" in html
    assert files["plot"].stat().st_size > 1000
    _, points, objectives, checks = load_run(tmp_path / "run")
    assert [p.key for p in pareto_front(points, objectives, checks)] == [p.key for p in front]


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "hwnas", *args], capture_output=True, text=True, timeout=300, **kw)


def test_killed_search_resumes_without_losing_or_repeating_an_evaluation(tmp_path):
    out = tmp_path / "killed"
    args = ["search", "--space", "nb201", "--target", "toy:slow:0.25", "--plugin", TOY, "--accuracy", "proxy:synflow",
            "--budget", "16", "--pop-size", "6", "--workers", "1", "--out", str(out), "--artifacts", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "hwnas", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    db = out / "results.db"
    deadline = time.monotonic() + 120
    done_before = []
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if db.is_file():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                    done_before = c.execute("SELECT candidate_key, finished FROM evaluations").fetchall()
            except sqlite3.Error:
                continue
            if len(done_before) >= 6:
                break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as c:
        before = dict(c.execute("SELECT candidate_key, finished FROM evaluations").fetchall())
    assert 6 <= len(before) < 16
    res = _cli(*args, "--resume")
    assert res.returncode == 0, res.stderr
    # every point evaluated before the kill is read back, none is evaluated again
    assert f"16 points evaluated ({len(before)} from the store)" in res.stdout, res.stdout
    with sqlite3.connect(db) as c:
        after = dict(c.execute("SELECT candidate_key, finished FROM evaluations").fetchall())
    assert len(after) == 16
    assert all(after[k] == v for k, v in before.items()), "an evaluation done before the kill was repeated"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--objectives", "accuracy,speed"], "unknown metric 'speed'"),
        (["--objectives", "accuracy,energy_mj"], "metric energy_mj is not defined by target\\(s\\) toy"),
        (["--constraint", "latency_ms<5"], "malformed constraint 'latency_ms<5'"),
        (["--constraint", "latency<=fast"], "malformed constraint"),
        (["--budget", "0"], "budget must be a positive integer, got 0"),
        (["--formulation", "annealing"], "unknown formulation 'annealing'; known: nsga2"),
        (["--formulation", "constrained"], "constrained formulation needs at least one --constraint"),
        (["--accuracy", "oracle"], "unknown accuracy evaluator|unknown"),
    ],
)
def test_bad_search_input_gets_one_line(tmp_path, args, message):
    import re

    res = _cli("search", "--space", "nb201", "--target", "toy", "--plugin", TOY, "--out", str(tmp_path / "o"), *args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwnas: error: "), res.stderr
    assert re.search(message, lines[0]), lines[0]


def test_missing_accuracy_table_and_corrupt_store_are_one_line_errors(tmp_path):
    env = {**os.environ, "HWNAS_DATA": str(tmp_path / "nowhere")}
    res = _cli("search", "--space", "nb201", "--target", "toy", "--plugin", TOY, "--accuracy", "table",
               "--out", str(tmp_path / "o"), env=env)
    assert res.returncode == 2 and "nowhere/nb201/accuracy.csv not found" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.db").write_bytes(b"definitely not sqlite" * 100)
    before = (bad / "results.db").read_bytes()
    res = _cli("search", "--space", "nb201", "--target", "toy", "--plugin", TOY, "--out", str(bad), "--resume")
    assert res.returncode == 2 and "not an SQLite database" in res.stderr and "Traceback" not in res.stderr
    assert (bad / "results.db").read_bytes() == before


def test_golden_search_on_published_tables(tmp_path):
    """NB201 accuracies and raspi4 latencies from the published tables: a fixed seed gives a fixed front
    (the JSON says when and why it last changed)."""
    from hwnas.data import data_dir

    if not (data_dir() / "nb201" / "latency.csv").is_file():
        pytest.skip(f"published data not found in {data_dir()} (set HWNAS_DATA)")
    s = Search(SearchConfig(targets=("published:raspi4",), space="nb201", accuracy="table", budget=60,
                            pop_size=12, workers=0, seed=7), tmp_path / "golden")
    front = s.run()
    from hwnas.arch.nb201 import genome_to_index

    indices = [genome_to_index(p.genome) for p in front]
    golden = json.loads((Path(__file__).with_name("golden_nb201_raspi4.json")).read_text())
    assert indices == golden["front_nb201_indices"]


# ~50 s (four nb201 compiles); by default a real cpu search with its report runs in tests/search/test_ladder.py,
# one through the CLI in tests/targets/test_remote.py, a search's artifacts in tests/pipeline/test_temp_folders.py
@pytest.mark.slow
def test_a_real_cpu_search_writes_report_and_artifacts(tmp_path):
    out = tmp_path / "cpu"
    res = _cli("search", "--space", "nb201", "--space-option", "cells_per_stage=1", "--target", "cpu",
               "--accuracy", "proxy:synflow", "--budget", "3", "--pop-size", "3", "--workers", "1",
               "--repeats", "3", "--artifacts", "1", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "3 points evaluated" in res.stdout
    bundles = list((out / "artifacts").glob("*/manifest.json"))
    assert len(bundles) == 1
    manifest = json.loads(bundles[0].read_text())
    assert manifest["target"] == "cpu" and manifest["metrics"]["latency_ms"] > 0
    assert (out / "report.html").read_text().count("manifest.json") == 1

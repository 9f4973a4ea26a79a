"""Executors: the process pool, Dask and Ray run the same evaluations into the same store.

A seeded search on an analytical target (compiled with TVM, priced by a
model) with synflow scores stores identical results with every executor; a
worker process killed mid-evaluation has its task run again and the store
ends complete. One local Dask cluster serves the module (worker start-up is
slow on two cores); Ray's start-up is slower still, so its tests are opt-in.
"""

import importlib.util
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from hwnas.errors import InvalidConfigError
from hwnas.cli.commands import main
from hwnas.pipeline.executor import make_executor, require
from hwnas.search.config import SearchConfig
from hwnas.search.driver import Search

TOY = str(Path(__file__).resolve().parents[1] / "search" / "toy_target.py")
HAS_DASK = importlib.util.find_spec("distributed") is not None
HAS_RAY = importlib.util.find_spec("ray") is not None


@pytest.fixture(scope="module")
def dask_cluster():
    """The address of a local Dask cluster of two single-threaded worker processes."""
    if not HAS_DASK:
        pytest.skip("dask is not installed (pip install 'hwnas[dask]')")
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


def _analytical(**kw):
    """A seeded NSGA-II on asic:eyeriss (TVM-compiled, analytical cost) with synflow scores (deterministic)."""
    base = dict(targets=("asic:eyeriss",), space="nb201", space_options={"cells_per_stage": 1}, accuracy="proxy",
                accuracy_options={"kind": "synflow"}, objectives=("accuracy", "latency_ms", "energy_mj"), budget=4,
                pop_size=2, seed=5, workers=2, timeout_s=300.0)
    base.update(kw)
    return SearchConfig(**base)


def _stored(search):
    """What a run stored, independent of the order evaluations finished in and of when."""
    rows = search.store.evaluations(Search.RUN_ID)
    return sorted((r.candidate_key, r.target, tuple(r.genome), sorted(r.hw.items()), sorted(r.metrics.items()),
                   r.status, r.error) for r in rows)


@pytest.mark.slow  # ~15 s; dask is an optional extra
def test_a_seeded_search_stores_the_same_results_with_the_process_pool_and_dask(tmp_path, dask_cluster):
    a = Search(_analytical(executor="process"), tmp_path / "process")
    front_a = a.run()
    b = Search(_analytical(executor="dask", cluster=dask_cluster), tmp_path / "dask")
    front_b = b.run()
    assert a.evaluated == b.evaluated == 4
    assert [p.key for p in a.all_points()] == [p.key for p in b.all_points()]  # the same points, in task order
    assert _stored(a) == _stored(b)
    assert all(r[5] == "ok" for r in _stored(b)), _stored(b)
    assert [p.key for p in front_a] == [p.key for p in front_b]
    # the accuracies the Dask workers computed were journaled back into the one store too
    ns = a.evaluator.accuracy_namespace
    assert sorted(map(str, a.store.values(ns))) == sorted(map(str, b.store.values(ns))) != []


def _kill_when_marked(marker: Path, killed: list) -> threading.Thread:
    """Kill, for real, the process that writes its id to ``marker`` (the toy target's hang mode)."""
    def watch():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if marker.exists():
                pid = int(marker.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.1)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


# dask (~5 s) is the same retry through another executor: opt-in
@pytest.mark.parametrize("executor", ["process", pytest.param("dask", marks=pytest.mark.slow)])
def test_a_worker_killed_mid_evaluation_is_retried_and_the_store_ends_complete(tmp_path, executor, request):
    marker = tmp_path / "hung.pid"
    cluster = request.getfixturevalue("dask_cluster") if executor == "dask" else None
    cfg = SearchConfig(targets=(f"toy:hang:{marker}",), space="nb201", objectives=("latency_ms",), plugins=(TOY,),
                       formulation="random", budget=6, pop_size=6, workers=2 if executor == "dask" else 1,
                       executor=executor, cluster=cluster, timeout_s=200.0)
    killed: list[int] = []
    watcher = _kill_when_marked(marker, killed)
    s = Search(cfg, tmp_path / "run")
    s.run()
    watcher.join(5)
    assert killed and killed[0] != os.getpid()
    rows = s.store.evaluations(Search.RUN_ID)
    assert s.evaluated == 6 and len(rows) == 6  # nothing lost: the killed task ran again
    assert not [r.error for r in rows if r.error and ("died" in r.error or "lost" in r.error)]
    assert all(r.ok or "refuses mode boom" in r.error for r in rows)


@pytest.mark.slow  # restarting the worker that ran it takes ~10 s
def test_a_dask_task_past_its_timeout_is_recorded_as_failed_and_the_search_goes_on(tmp_path, dask_cluster):
    cfg = SearchConfig(targets=("toy:slow:30",), space="nb201", objectives=("latency_ms",), plugins=(TOY,),
                       formulation="random", budget=2, pop_size=2, workers=2, executor="dask", cluster=dask_cluster,
                       timeout_s=1.0)
    t0 = time.monotonic()
    s = Search(cfg, tmp_path / "run")
    s.run()
    assert time.monotonic() - t0 < 25  # the tasks did not run to their end
    rows = s.store.evaluations(Search.RUN_ID)
    assert len(rows) == 2 and all(not r.ok and "timed out after 1 s" in r.error for r in rows)


def test_executor_errors_are_one_line(capsys, tmp_path):
    with pytest.raises(InvalidConfigError, match="unknown executor 'spark'; known: process, dask, ray"):
        require("spark")
    with pytest.raises(InvalidConfigError, match="--cluster names a Dask or Ray cluster"):
        SearchConfig(targets=("cpu",), cluster="tcp://127.0.0.1:8786")
    with pytest.raises(InvalidConfigError, match="--workers 0 evaluates in this process"):
        SearchConfig(targets=("cpu",), executor="dask", workers=0)
    assert main(["search", "--space", "nb201", "--target", "cpu", "--executor", "spark", "--out",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown executor 'spark'" in err


def test_a_missing_executor_package_names_the_extra(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(InvalidConfigError, match=r"executor ray needs the ray package, which is not installed: "
                                                 r"pip install 'hwnas\[ray\]'"):
        make_executor("ray", workers=1, init=None, init_arg=None, work=None)
    assert main(["search", "--space", "nb201", "--target", "toy", "--plugin", TOY, "--executor", "ray",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'hwnas[ray]'" in err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_an_unreachable_dask_scheduler_is_one_line(capsys, tmp_path):
    if not HAS_DASK:
        pytest.skip("dask is not installed")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    assert main(["search", "--space", "nb201", "--target", "toy", "--plugin", TOY, "--executor", "dask",
                 "--cluster", f"tcp://127.0.0.1:{port}", "--objectives", "latency_ms", "--budget", "2",
                 "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot reach the dask cluster at tcp://127.0.0.1:{port}" in err, err
    assert "dask scheduler" in err and time.monotonic() - t0 < 30
    assert not (tmp_path / "d").exists()  # refused before anything was written


# ---------------------------------------------------------------------------------------------
# Ray (opt-in: a local Ray cluster takes tens of seconds to start on two cores)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'hwnas[ray]')")
def test_ray_gives_the_process_pool_results_and_retries_a_killed_worker(tmp_path):
    a = Search(_analytical(executor="process"), tmp_path / "process")
    a.run()
    b = Search(_analytical(executor="ray"), tmp_path / "ray")
    b.run()
    assert _stored(a) == _stored(b) and len(_stored(b)) == 4

    marker = tmp_path / "hung.pid"
    cfg = SearchConfig(targets=(f"toy:hang:{marker}",), space="nb201", objectives=("latency_ms",), plugins=(TOY,),
                       formulation="random", budget=6, pop_size=6, workers=2, executor="ray", timeout_s=200.0)
    killed: list[int] = []
    watcher = _kill_when_marked(marker, killed)
    s = Search(cfg, tmp_path / "killed")
    s.run()
    watcher.join(5)
    rows = s.store.evaluations(Search.RUN_ID)
    assert killed and s.evaluated == 6 and len(rows) == 6
    assert all(r.ok or "refuses mode boom" in r.error for r in rows)

"""The results store: round trips, resume rules, corrupt and locked files, concurrent and killed writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hwnas.errors import HwnasError, InvalidConfigError, StoreError
from hwnas.pipeline.store import SCHEMA_VERSION, EvaluationRow, ResultStore

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {"space": "nb201", "target": "cpu", "budget": 200, "search": {"workers": 2, "seed": 0}}
VERSIONS = {"hwnas": "0.1.0", "tvm": "0.27"}


@pytest.fixture
def store(tmp_path):
    with ResultStore(tmp_path / "out" / "results.sqlite") as s:
        s.open_run("demo", SETTINGS, VERSIONS, resume=False)
        yield s


def test_round_trip_keeps_values_and_floats_exactly(store):
    floats = {"a": 0.1 + 0.2, "b": 1e-300, "c": 5e-324, "d": 1.7976931348623157e308, "e": -0.0,
              "f": 123456789.12345679, "g": float(np.float32(0.3))}
    row_id = store.record(
        "demo", "k1", (3, 1, np.int64(2)), {"tile_oc": np.int64(16), "vector": True}, "cpu",
        {"latency_ms": np.float64(1.25), **floats}, "ok", None, {"compile": 2.5},
        started=100.0, finished=101.5,
    )
    row = store.lookup("demo", "k1", "cpu")
    assert isinstance(row, EvaluationRow) and row.id == row_id and row.ok
    assert row.genome == [3, 1, 2]
    assert row.hw == {"tile_oc": 16, "vector": True}
    assert row.metrics == {"latency_ms": 1.25, **floats}
    assert all(row.metrics[k].hex() == v.hex() for k, v in floats.items())  # bit-exact, -0.0 included
    assert (row.status, row.error, row.timings) == ("ok", None, {"compile": 2.5})
    assert (row.started, row.finished) == (100.0, 101.5)
    store.record("demo", "k2", None, {}, "cpu", {}, "failed", "CompileError: tile too large", {})
    assert store.count("demo") == 2 and store.count("demo", status="failed") == 1
    assert [r.candidate_key for r in store.evaluations("demo")] == ["k1", "k2"]
    assert store.evaluations("demo", status="failed")[0].error == "CompileError: tile too large"
    assert store.lookup("demo", "k3", "cpu") is None and store.lookup("demo", "k1", "gpu") is None
    # a retried candidate replaces its row
    store.record("demo", "k2", None, {}, "cpu", {"latency_ms": 3.0}, "ok", None, {})
    assert store.count("demo") == 2 and store.lookup("demo", "k2", "cpu").metrics == {"latency_ms": 3.0}
    # JSON columns are written with sorted keys
    with sqlite3.connect(store.path) as raw:
        (text,) = raw.execute("SELECT hw FROM evaluations WHERE candidate_key = 'k1'").fetchone()
        (version,) = raw.execute("PRAGMA user_version").fetchone()
        (mode,) = raw.execute("PRAGMA journal_mode").fetchone()
    assert text == '{"tile_oc":16,"vector":true}'
    assert version == SCHEMA_VERSION and mode == "wal"


def test_bad_records_are_refused_with_one_line(store):
    with pytest.raises(InvalidConfigError, match="run other is not in store"):
        store.record("other", "k", [1], {}, "cpu", {})
    with pytest.raises(InvalidConfigError, match="cannot store the metrics: NaN or infinite"):
        store.record("demo", "k", [1], {}, "cpu", {"latency_ms": float("nan")})
    with pytest.raises(InvalidConfigError, match="status is 'ok' or 'failed'"):
        store.record("demo", "k", [1], {}, "cpu", {}, "maybe")
    with pytest.raises(InvalidConfigError, match="a genome is a list of integers"):
        store.record("demo", "k", "[1, 2]", {}, "cpu", {})
    with pytest.raises(InvalidConfigError, match="cannot store the hardware config: .*not JSON-able"):
        store.record("demo", "k", [1], {"f": object()}, "cpu", {})
    assert store.count("demo") == 0


def test_runs_resume_only_with_allowed_changes(store):
    with pytest.raises(InvalidConfigError, match=r"run demo already exists in .*results.sqlite; pass --resume to "
                                                  r"continue it or choose another --out"):
        store.open_run("demo", SETTINGS, VERSIONS, resume=False)
    grown = {**SETTINGS, "budget": 300}
    with pytest.raises(InvalidConfigError, match="cannot resume: setting 'budget' was 200, now 300"):
        store.open_run("demo", grown, VERSIONS, resume=True)
    other = {**SETTINGS, "search": {"workers": 2, "seed": 1}}
    with pytest.raises(InvalidConfigError, match="cannot resume: setting 'search.seed' was 0, now 1"):
        store.open_run("demo", other, VERSIONS, resume=True, allowed_to_change={"budget", "search.workers"})
    with pytest.raises(InvalidConfigError, match="setting 'objectives' was absent, now"):
        store.open_run("demo", {**SETTINGS, "objectives": ["latency_ms"]}, VERSIONS, resume=True)
    store.record("demo", "k1", [1], {}, "cpu", {"latency_ms": 1.0})
    changed = {**SETTINGS, "budget": 300, "search": {"workers": 8, "seed": 0}}
    run = store.open_run("demo", changed, {"hwnas": "0.1.1"}, resume=True,
                         allowed_to_change={"budget", "search.workers"})
    assert run.resumed and run.settings == changed and run.status == "running"
    assert store.get_run("demo").settings["budget"] == 300 and store.get_run("demo").versions == {"hwnas": "0.1.1"}
    assert store.count("demo") == 1  # resuming keeps what was recorded
    fresh = store.open_run("other", SETTINGS, VERSIONS, resume=True)  # resume of a new run creates it
    assert not fresh.resumed
    store.set_run_status("demo", "finished")
    assert [r.run_id for r in store.runs()] == ["demo", "other"] and store.get_run("demo").status == "finished"
    assert store.get_run("absent") is None


def test_cache_get_put(store):
    assert store.get("kernels", "conv_3x3_16") is None
    assert store.get("kernels", "conv_3x3_16", default=-1) == -1
    store.put("kernels", "conv_3x3_16", {"ms": 0.125, "tile": [4, 8]})
    store.put("schedules", "conv_3x3_16", "3")
    assert store.get("kernels", "conv_3x3_16") == {"ms": 0.125, "tile": [4, 8]}
    assert store.get("schedules", "conv_3x3_16") == "3"  # text stays text
    store.put("kernels", "conv_3x3_16", 0.5)
    assert store.get("kernels", "conv_3x3_16") == 0.5
    assert ResultStore(store.path).get("kernels", "conv_3x3_16") == 0.5


@pytest.mark.parametrize("content", [b"this is not a database\n" * 50, b"SQLite format 3\x00" + b"\x07" * 2000])
def test_corrupt_file_is_refused_and_left_untouched(tmp_path, content):
    path = tmp_path / "results.sqlite"
    path.write_bytes(content)
    with pytest.raises(StoreError) as err:
        ResultStore(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert isinstance(err.value, HwnasError) and isinstance(err.value, RuntimeError)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]


def test_damaged_store_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "results.sqlite"
    with ResultStore(path) as s:
        s.open_run("demo", SETTINGS, VERSIONS, resume=False)
        for i in range(50):
            s.record("demo", f"k{i}", [i], {}, "cpu", {"latency_ms": float(i)})
    data = bytearray(path.read_bytes())
    data[100:120] = b"\xff" * 20  # the b-tree header of page 1 (the schema)
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt|not an hwnas results store"):
        ResultStore(path)
    assert path.read_bytes() == bytes(data)


def test_other_databases_and_newer_schemas_are_refused(tmp_path):
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as raw:
        raw.execute("CREATE TABLE photos (id INTEGER)")
    with pytest.raises(StoreError, match="an SQLite database but not an hwnas results store"):
        ResultStore(foreign)
    newer = tmp_path / "newer.sqlite"
    ResultStore(newer).close()
    with sqlite3.connect(newer) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, written by a newer hwnas"):
        ResultStore(newer)
    (tmp_path / "folder.sqlite").mkdir()
    with pytest.raises(StoreError, match="is not a file"):
        ResultStore(tmp_path / "folder.sqlite")


def test_locked_store_times_out_with_a_clear_error(store):
    holder = sqlite3.connect(store.path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process's write lock
        impatient = ResultStore(store.path, timeout_s=0.2)
        assert impatient.count("demo") == 0  # readers are not blocked in WAL mode
        with pytest.raises(StoreError, match=r"store .* is locked by another process \(waited 0.2 s\)"):
            impatient.record("demo", "k1", [1], {}, "cpu", {})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    impatient.record("demo", "k1", [1], {}, "cpu", {})
    assert store.count("demo") == 1


def _write_rows(store: ResultStore, worker: int, n: int) -> None:
    for i in range(n):
        store.record("demo", f"w{worker}-{i}", [worker, i], {"worker": worker}, "cpu", {"latency_ms": i / 7})


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method")
def test_concurrent_writers_lose_no_rows(store):
    n = 150
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_write_rows, args=(store, w, n)) for w in range(3)]
    for p in workers:
        p.start()
    _write_rows(store, 99, n)  # the parent writes too, through its own connection
    for p in workers:
        p.join(timeout=60)
    assert [p.exitcode for p in workers] == [0, 0, 0]
    assert store.count("demo") == 4 * n
    keys = {r.candidate_key for r in store.evaluations("demo")}
    assert keys == {f"w{w}-{i}" for w in (0, 1, 2, 99) for i in range(n)}
    # a store travels to a worker pickled, too
    clone = pickle.loads(pickle.dumps(store))
    clone.record("demo", "pickled", [0], {}, "cpu", {})
    assert store.lookup("demo", "pickled", "cpu") is not None


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_writer_loses_none_of_its_committed_rows(store):
    n = 40
    script = textwrap.dedent(f"""
        import os, signal
        from hwnas.pipeline.store import ResultStore
        store = ResultStore({str(store.path)!r})
        for i in range({n}):
            store.record("demo", f"k{{i}}", [i], {{}}, "cpu", {{"latency_ms": i * 0.5}}, "ok", None, {{}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    reopened = ResultStore(store.path)
    assert reopened.count("demo") == n
    assert [r.metrics["latency_ms"] for r in reopened.evaluations("demo")] == [i * 0.5 for i in range(n)]
    reopened.record("demo", "after", [0], {}, "cpu", {})
    assert json.loads(json.dumps(reopened.lookup("demo", "after", "cpu").genome)) == [0]

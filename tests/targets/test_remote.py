"""Measurement over TVM RPC: a tracker and a server on 127.0.0.1, started with `hwnas rpc`, measured through.

One tracker and one server (real processes, as a user starts them) serve the
whole module; the remote latency must be a real measurement of the same
module (close to a local one) and its outputs must match ONNX Runtime.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from hwnas.arch import get_space
from hwnas.errors import InvalidConfigError
from hwnas.cli.commands import main
from hwnas.pipeline.evaluate import Candidate, evaluate
from hwnas.search.config import SearchConfig
from hwnas.search.driver import Search
from hwnas.ir import runtime as measure
from hwnas.targets import get_target
from hwnas.targets.remote import RemoteDevice, RemoteError, measure_remote

KEY = "hwnas-test"
SMALL = {"cells_per_stage": 1}
GENOME = (1, 2, 3, 1, 0, 2)  # conv3x3, conv1x1, avg_pool, ...: every kind of NB201 op


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hwnas(*args):
    return subprocess.Popen([sys.executable, "-m", "hwnas", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _stop(proc):
    with_group = [signal.SIGTERM, signal.SIGKILL]
    for sig in with_group:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def tracker():
    """``HOST:PORT`` of a tracker with one server registered under KEY (both bound to 127.0.0.1)."""
    tport, sport = free_port(), free_port()
    procs = [_hwnas("rpc", "tracker", "--port", str(tport))]
    try:
        line = procs[0].stdout.readline()  # the tracker says where it listens once it does
        assert f"RPC tracker listening on 127.0.0.1:{tport}" in line, line + procs[0].stdout.read()
        procs.append(_hwnas("rpc", "server", "--tracker", f"127.0.0.1:{tport}", "--key", KEY, "--port", str(sport)))
        device = RemoteDevice("127.0.0.1", tport, KEY, timeout_s=5)
        deadline = time.monotonic() + 120
        while True:
            try:
                device.check()
                break
            except RemoteError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    out = "\n".join(p.stdout.read() if p.poll() is not None else "(running)" for p in procs)
                    pytest.fail(f"tracker/server did not come up:\n{out}")
                time.sleep(0.5)
        yield f"127.0.0.1:{tport}"
    finally:
        for p in reversed(procs):
            _stop(p)


def test_the_helpers_bind_loopback_and_report_the_key(tracker):
    host, port = tracker.split(":")
    keys = RemoteDevice(host, int(port), KEY).keys()
    assert keys[KEY]["servers"] == 1
    server_info = RemoteDevice(host, int(port), KEY)._tracker()[1]["server_info"]
    assert all(item["addr"][0] == "127.0.0.1" for item in server_info)


@pytest.mark.timing
def test_remote_measurement_is_real_and_computes_what_onnx_runtime_computes(tracker, tmp_path):
    import onnxruntime as ort

    host, port = tracker.split(":")
    device = RemoteDevice(host, int(port), KEY, timeout_s=60)
    space = get_space("nb201", **SMALL)
    target = get_target("cpu")
    target.set_measure_options(repeats=5)
    target.use_remote(device)
    hw = {"num_threads": 1}
    ev = evaluate(Candidate.from_space(space, GENOME, hw), target, workdir=tmp_path)
    assert ev.device == f"rpc:{KEY}@{tracker}"
    assert ev.metrics["latency_ms"] > 0

    # the same library measured here: a remote figure on the same machine is close to the local one
    measure.set_num_threads(1)
    local = measure.measure_vm(ev.built.executable, list(measure.random_inputs(ev.built.inputs).values()), repeats=5)
    remote, outputs = measure_remote(ev.built.executable, list(measure.random_inputs(ev.built.inputs).values()),
                                     device, num_threads=1, repeats=5)
    assert 1 / 3 < remote.median_ms / local.median_ms < 3, (remote.median_ms, local.median_ms)
    assert 1 / 3 < ev.metrics["latency_ms"] / local.median_ms < 3, (ev.metrics["latency_ms"], local.median_ms)

    # the outputs come back from the device and match ONNX Runtime on the exported model
    inputs = measure.random_inputs(ev.built.inputs)
    sess = ort.InferenceSession(str(ev.onnx_path), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {sess.get_inputs()[0].name: next(iter(inputs.values()))})[0]
    np.testing.assert_allclose(outputs[0], expected, rtol=1e-4, atol=1e-4)


def test_a_search_measures_through_the_tracker_and_records_the_device(tracker, tmp_path):
    cfg = SearchConfig(targets=("cpu",), space="nb201", space_options=SMALL, objectives=("latency_ms",),
                       formulation="random", budget=2, pop_size=2, workers=0, repeats=2, rpc_tracker=tracker,
                       rpc_key=KEY, rpc_timeout_s=60)
    s = Search(cfg, tmp_path / "run")
    s.run()
    rows = s.store.evaluations(Search.RUN_ID)
    assert len(rows) == 2 and all(r.ok for r in rows), [r.error for r in rows]
    assert all(r.timings["device"] == f"rpc:{KEY}@{tracker}" and r.metrics["latency_ms"] > 0 for r in rows)
    assert s.store.get_run(Search.RUN_ID).settings["rpc_key"] == KEY


def test_a_key_with_no_free_device_is_one_error_after_the_timeout(tracker):
    host, port = tracker.split(":")
    device = RemoteDevice(host, int(port), KEY, timeout_s=2)
    with device.session():  # the only device of the key is taken
        t0 = time.monotonic()
        with pytest.raises(RemoteError, match=r"no free device with key 'hwnas-test' .* within 2 s"):
            with device.session():
                pass
        assert time.monotonic() - t0 < 15


def test_unreachable_tracker_and_unknown_key_are_one_line_errors(tracker, tmp_path, capsys):
    common = ["search", "--space", "nb201", "--target", "cpu", "--budget", "1", "--rpc-timeout", "3"]
    t0 = time.monotonic()
    assert main([*common, "--rpc-tracker", f"127.0.0.1:{free_port()}", "--rpc-key", KEY,
                 "--out", str(tmp_path / "a")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "RPC tracker at 127.0.0.1" in err and "cannot be reached" in err and "hwnas rpc tracker" in err
    assert main([*common, "--rpc-tracker", tracker, "--rpc-key", "nosuchboard", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no RPC server is registered with key 'nosuchboard'" in err
    assert f"registered: {KEY} (1 server(s))" in err and "hwnas rpc server" in err  # what to do
    assert main(["compile", "--space", "nb201", "--target", "cpu", "--rpc-tracker", tracker, "--rpc-key", KEY,
                 "--cost", "lut", "--out", str(tmp_path / "c")]) == 2
    assert "prices on this machine, not on the remote device" in capsys.readouterr().err
    assert time.monotonic() - t0 < 30
    assert not any((tmp_path / d).exists() for d in "abc")  # nothing written


def test_remote_options_are_checked():
    with pytest.raises(InvalidConfigError, match="HOST:PORT"):
        RemoteDevice.parse("localhost", KEY)
    with pytest.raises(InvalidConfigError, match="go together"):
        SearchConfig(targets=("cpu",), rpc_tracker="127.0.0.1:9190")
    with pytest.raises(InvalidConfigError, match="cannot measure on a remote device"):
        get_target("asic:eyeriss").use_remote(RemoteDevice("127.0.0.1", 9190, KEY))


def test_remote_measurement_sizes_the_thread_pool_as_a_local_one_does(tracker):
    """The device's pool is configured by the same function as here (affinity mode -3: every thread may run on
    every core); mode 1 pinned a worker to one core, which the serving thread shared (about 2x slower)."""
    from hwnas.ir.runtime import REMOTE_THREAD_CORES, host_cores, set_remote_num_threads

    host, port = tracker.split(":")
    device = RemoteDevice(host, int(port), KEY, timeout_s=60)
    with device.session() as sess:
        set_remote_num_threads(sess, 2)
        per_thread = [int(c) for c in str(sess.get_function(REMOTE_THREAD_CORES)()).split(",")]
    assert len(per_thread) >= 2  # the serving thread and the pool's worker(s)
    assert per_thread == [host_cores()] * len(per_thread)  # the server runs on this machine; nothing pinned

"""The measurement gate: workers compile in parallel, but measure alone."""

import multiprocessing
import threading
import time

from hwnas.pipeline.executor import MeasureGate


def _gate(slots=3):
    return MeasureGate(multiprocessing.get_context("spawn"), slots)


def _waiting(gate, n=1, timeout=5.0):
    """Wait until ``n`` threads are blocked in the gate's condition (``Condition.wait``, as multiprocessing's own
    ``Condition.__repr__`` counts them: sleepers minus woken); True once they are. A thread counted here has
    released the lock and sleeps until a ``notify_all``, so what it guards cannot have happened yet."""
    cond = gate._cond
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond._sleeping_count._semlock._get_value() - cond._woken_count._semlock._get_value() == n:
            return True
        time.sleep(0.001)
    return False


def _start(fn):
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_a_measurement_waits_for_other_workers_to_finish_their_work():
    gate = _gate()
    a, b = gate.handle(0), gate.handle(1)
    log = []
    release, started = threading.Event(), threading.Event()

    def compiling():
        with a.busy():
            log.append("compile start")
            started.set()
            release.wait(5)
            log.append("compile end")

    def measuring():
        with b.quiet():
            log.append("measure")

    t1 = _start(compiling)
    assert started.wait(5)
    t2 = _start(measuring)
    assert _waiting(gate)  # the measurement is blocked in the gate
    assert log == ["compile start"]
    release.set()
    t1.join(5), t2.join(5)
    assert log == ["compile start", "compile end", "measure"]


def test_new_work_waits_while_a_measurement_runs():
    gate = _gate()
    a, b = gate.handle(0), gate.handle(1)
    log = []
    done, started = threading.Event(), threading.Event()

    def measuring():
        with b.quiet():
            log.append("measure start")
            started.set()
            done.wait(5)
            log.append("measure end")

    t1 = _start(measuring)
    assert started.wait(5)
    t2 = _start(lambda: (a.busy().__enter__(), log.append("work")))
    assert _waiting(gate)  # the new work is blocked in the gate
    assert log == ["measure start"]
    done.set()
    t1.join(5), t2.join(5)
    assert log == ["measure start", "measure end", "work"]


def test_a_worker_may_measure_after_its_own_work_and_a_killed_worker_is_cleared():
    gate = _gate()
    a, b = gate.handle(0), gate.handle(1)
    with a.busy():
        pass
    with a.quiet():  # its own slot is idle again
        pass
    killed = b.busy()  # a worker killed while busy never leaves
    killed.__enter__()
    log = []
    t = _start(lambda: (a.quiet().__enter__(), log.append("measured")))
    assert _waiting(gate)  # the measurement is blocked by the killed worker's slot
    assert log == []
    gate.clear(1)  # what the pool does when it kills worker 1
    t.join(5)
    assert log == ["measured"]

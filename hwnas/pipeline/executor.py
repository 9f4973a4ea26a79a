"""Evaluations in worker processes: one context per worker, a timeout per task.

Workers are started with ``spawn`` (TVM and torch do not survive ``fork``
well), build their context once (imports, targets, evaluators) and then take
tasks one at a time. A task that outlives the timeout, or whose worker dies,
ends as a failure with its reason and the worker is replaced; the other
tasks go on. ``workers=0`` runs the tasks in this process (no timeout).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from hwnas.errors import HwnasError, RunError
from hwnas.util import error_line

log = logging.getLogger(__name__)

#: seconds a worker may take to start (import TVM, build its context)
START_TIMEOUT_S = 300.0


class NullGate:
    """The gate of a single worker or of in-process evaluation: nothing to wait for."""

    def busy(self):
        return contextlib.nullcontext()

    def quiet(self):
        return contextlib.nullcontext()


class MeasureGate:
    """Workers compile in parallel but measure alone, on an otherwise idle machine.

    Each worker owns a slot. ``busy()`` marks its slot while it compiles or
    trains; ``quiet()`` waits until no other slot is busy and keeps new busy
    work from starting until the measurement ends (one measurement at a time).
    The pool clears the slot of a worker it kills, so a killed worker never
    blocks the others.
    """

    def __init__(self, mp_context, slots: int) -> None:
        self._cond = mp_context.Condition(mp_context.Lock())
        self._busy = mp_context.Array("i", slots, lock=False)
        self._measuring = mp_context.Value("i", 0, lock=False)

    def handle(self, slot: int) -> GateHandle:
        return GateHandle(self, slot)

    def clear(self, slot: int) -> None:
        with self._cond:
            self._busy[slot] = 0
            if self._measuring.value == slot + 1:
                self._measuring.value = 0
            self._cond.notify_all()


@dataclasses.dataclass
class GateHandle:
    gate: MeasureGate
    slot: int

    @contextlib.contextmanager
    def busy(self):
        g = self.gate
        with g._cond:
            while g._measuring.value:
                g._cond.wait()
            g._busy[self.slot] = 1
        try:
            yield
        finally:
            with g._cond:
                g._busy[self.slot] = 0
                g._cond.notify_all()

    @contextlib.contextmanager
    def quiet(self):
        g = self.gate
        with g._cond:
            while g._measuring.value:
                g._cond.wait()
            g._measuring.value = self.slot + 1
            while any(b for i, b in enumerate(g._busy) if i != self.slot):
                g._cond.wait()
        try:
            yield
        finally:
            with g._cond:
                g._measuring.value = 0
                g._cond.notify_all()


@dataclasses.dataclass(frozen=True)
class Outcome:
    ok: bool
    #: the task's result when ok, else None
    value: Any
    #: one line saying why the task failed
    error: str | None
    seconds: float


def describe(exc: BaseException) -> str:
    """One line for a task's failure: our errors as they are, others with their type."""
    return str(exc) if isinstance(exc, HwnasError) else error_line(exc, with_type=True)


def _run_task(work: Callable, ctx: Any, task: Any) -> Outcome:
    t0 = time.perf_counter()
    try:
        value = work(ctx, task)
    except Exception as exc:  # a candidate's failure must not end the search
        log.debug("task failed: %s", traceback.format_exc())
        return Outcome(False, None, describe(exc), time.perf_counter() - t0)
    return Outcome(True, value, None, time.perf_counter() - t0)


def _worker_main(conn, init: Callable, init_arg: Any, work: Callable, parent_pid: int, gate) -> None:
    try:
        ctx = init(init_arg, gate)
    except Exception as exc:
        conn.send(("init-failed", describe(exc)))
        return
    conn.send(("ready", None))
    while True:
        if not conn.poll(1.0):
            if os.getppid() != parent_pid:  # the search was killed: do not linger
                return
            continue
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        index, task = message
        conn.send(("done", (index, _run_task(work, ctx, task))))


@dataclasses.dataclass
class _Worker:
    process: Any
    conn: Any
    ready: bool = False
    task: int | None = None
    started: float = 0.0
    spawned: float = 0.0


class WorkerPool:
    """``workers`` processes running ``work(init(init_arg, gate), task)``.

    ``gate`` (a :class:`GateHandle`, or :class:`NullGate` for one worker or
    in-process work) lets each worker keep its measurements apart from the
    other workers' compiling.
    """

    def __init__(
        self,
        *,
        workers: int,
        init: Callable[[Any], Any],
        init_arg: Any,
        work: Callable[[Any, Any], Any],
        timeout_s: float | None = None,
    ) -> None:
        if workers < 0:
            raise RunError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        self.init, self.init_arg, self.work = init, init_arg, work
        self.timeout_s = timeout_s
        self._ctx = None
        self._pool: list[_Worker] = []
        self._mp = multiprocessing.get_context("spawn")
        self._gate = MeasureGate(self._mp, workers) if workers > 1 else None

    # -- in-process --------------------------------------------------------------------------
    def _local(self, tasks: Sequence[Any], on_done: Callable[[int, Outcome], None]) -> None:
        if self._ctx is None:
            self._ctx = self.init(self.init_arg, NullGate())
        for i, task in enumerate(tasks):
            on_done(i, _run_task(self.work, self._ctx, task))

    # -- processes ---------------------------------------------------------------------------
    def _spawn(self, slot: int) -> _Worker:
        parent, child = self._mp.Pipe()
        gate = self._gate.handle(slot) if self._gate is not None else NullGate()
        proc = self._mp.Process(
            target=_worker_main, args=(child, self.init, self.init_arg, self.work, os.getpid(), gate), daemon=True
        )
        proc.start()
        child.close()
        return _Worker(process=proc, conn=parent, spawned=time.monotonic())

    def _kill(self, w: _Worker) -> None:
        if w.process.is_alive():
            w.process.kill()
        w.process.join(timeout=10)
        w.conn.close()

    def run(self, tasks: Sequence[Any], on_done: Callable[[int, Outcome], None]) -> None:
        """Run every task; ``on_done(index, outcome)`` is called in this process as each ends."""
        if self.workers == 0:
            self._local(tasks, on_done)
            return
        pending = deque(range(len(tasks)))
        remaining = len(tasks)
        while len(self._pool) < min(self.workers, max(1, len(tasks))):
            self._pool.append(self._spawn(len(self._pool)))
        while remaining:
            for w in self._pool:
                if w.ready and w.task is None and pending:
                    w.task = pending.popleft()
                    w.started = time.monotonic()
                    w.conn.send((w.task, tasks[w.task]))
            ready = multiprocessing.connection.wait([w.conn for w in self._pool], timeout=1.0)
            for w in list(self._pool):
                if w.conn not in ready:
                    continue
                try:
                    kind, payload = w.conn.recv()
                except (EOFError, OSError):
                    w.process.join(timeout=5)
                    if not w.ready:  # it died while starting: starting again would fail the same way
                        self.close()
                        raise RunError(f"a worker process died while starting (exit code {w.process.exitcode})")
                    remaining -= self._replace(w, on_done, f"worker process died (exit code {w.process.exitcode})")
                    continue
                if kind == "ready":
                    w.ready = True
                elif kind == "init-failed":
                    self.close()
                    raise RunError(f"a worker could not start: {payload}")
                else:
                    index, outcome = payload
                    w.task = None
                    remaining -= 1
                    on_done(index, outcome)
            now = time.monotonic()
            for w in list(self._pool):
                if w.task is not None and self.timeout_s and now - w.started > self.timeout_s:
                    remaining -= self._replace(w, on_done, f"timed out after {self.timeout_s:g} s")
                elif not w.ready and now - w.spawned > START_TIMEOUT_S:
                    self.close()
                    raise RunError(f"a worker did not start within {START_TIMEOUT_S:g} s")

    def _replace(self, w: _Worker, on_done, reason: str) -> int:
        """End ``w`` (its task fails with ``reason``), start a fresh worker; return tasks ended (0 or 1)."""
        index, started = w.task, w.started
        self._kill(w)
        slot = self._pool.index(w)
        if self._gate is not None:
            self._gate.clear(slot)
        self._pool[slot] = self._spawn(slot)
        if index is None:
            return 0
        on_done(index, Outcome(False, None, reason, time.monotonic() - started))
        return 1

    def close(self) -> None:
        for w in self._pool:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in self._pool:
            w.process.join(timeout=5)
            self._kill(w)
        self._pool = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

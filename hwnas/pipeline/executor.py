"""Where evaluations run: an executor runs ``work(context, task)`` for every task and reports each outcome.

Three implementations share one interface (:class:`Executor`: ``run(tasks,
on_done)`` and ``close()``), chosen by name with :func:`make_executor`:

* ``process`` (:class:`WorkerPool`): worker processes on this machine, started
  with ``spawn`` (TVM and torch do not survive ``fork`` well); they compile in
  parallel but measure alone (:class:`MeasureGate`);
* ``dask`` (:class:`DaskExecutor`) and ``ray`` (:class:`RayExecutor`): the same
  tasks on a Dask or Ray cluster, a local one started here or one at an
  address. Optional extras: ``pip install 'hwnas[dask]'`` / ``'hwnas[ray]'``.

Every worker builds its context once (imports, targets, evaluators) and then
takes tasks one at a time; no more tasks are in flight than there are
workers, so a task's time is its own. A task that outlives the timeout ends as
a failure with its reason (its worker is replaced); a task whose worker is
lost (killed, out of memory) is run again, up to :data:`MAX_ATTEMPTS` times in
all, and only then recorded as failed. ``workers=0`` runs the tasks in this
process (no timeout).
"""

from __future__ import annotations

import abc
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

from hwnas.errors import HwnasError, InvalidConfigError, RunError
from hwnas.util import error_line

log = logging.getLogger(__name__)

#: seconds a worker may take to start (import TVM, build its context)
START_TIMEOUT_S = 300.0
#: times a task is started before a lost worker counts as its failure (Ray's and Dask's defaults: 4)
MAX_ATTEMPTS = 3
#: the executors by name; the first is the default
EXECUTORS = ("process", "dask", "ray")
#: the optional package each distributed executor needs (the extra of the same name installs it)
_PACKAGES = {"dask": "distributed", "ray": "ray"}


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
        attempts = [0] * len(tasks)
        remaining = len(tasks)
        while len(self._pool) < min(self.workers, max(1, len(tasks))):
            self._pool.append(self._spawn(len(self._pool)))
        while remaining:
            for w in self._pool:
                if w.ready and w.task is None and pending:
                    w.task = pending.popleft()
                    attempts[w.task] += 1
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
                    index = w.task
                    reason = f"worker process died (exit code {w.process.exitcode})"
                    if index is not None and attempts[index] < MAX_ATTEMPTS:  # lost, not failed: run it again
                        log.warning("%s during task %d; running it again (attempt %d of %d)", reason, index,
                                    attempts[index] + 1, MAX_ATTEMPTS)
                        pending.appendleft(index)
                        w.task = None
                    elif index is not None:
                        reason += f" {attempts[index]} times"
                    remaining -= self._replace(w, on_done, reason)
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
        """End ``w`` (its task, if any, fails with ``reason``), start a fresh worker; return tasks ended (0 or 1)."""
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


# ---------------------------------------------------------------------------------------------
# distributed executors: the same tasks on a Dask or Ray cluster


class Executor(abc.ABC):
    """What a search needs of an executor: run tasks, report each outcome, close."""

    @abc.abstractmethod
    def run(self, tasks: Sequence[Any], on_done: Callable[[int, Outcome], None]) -> None:
        """Run every task; ``on_done(index, outcome)`` is called in this process as each ends."""

    @abc.abstractmethod
    def close(self) -> None:
        """Give back the workers (and the cluster, when this executor started it)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


Executor.register(WorkerPool)

#: worker-side contexts of the distributed executors, by executor token: built on a worker's first task
_CONTEXTS: dict[str, Any] = {}


def _cluster_task(token: str, init: Callable, init_arg: Any, work: Callable, task: Any) -> tuple[str, Any]:
    """One task on a cluster worker: ("done", Outcome), or ("init-failed", reason) when the context cannot be built."""
    ctx = _CONTEXTS.get(token)
    if ctx is None:
        try:
            ctx = init(init_arg, NullGate())
        except Exception as exc:
            return "init-failed", describe(exc)
        _CONTEXTS[token] = ctx
    return "done", _run_task(work, ctx, task)


def require(kind: str) -> None:
    """:class:`InvalidConfigError` naming the extra to install when executor ``kind`` is unknown or missing."""
    import importlib.util

    if kind not in EXECUTORS:
        raise InvalidConfigError(f"unknown executor {kind!r}; known: {', '.join(EXECUTORS)}")
    package = _PACKAGES.get(kind)
    if package is not None and importlib.util.find_spec(package) is None:
        raise InvalidConfigError(f"executor {kind} needs the {package} package, which is not installed: "
                                 f"pip install 'hwnas[{kind}]' (or use --executor process)")


def probe(kind: str, address: str, timeout_s: float = 10.0) -> None:
    """:class:`RunError` in one line when the cluster at ``address`` (``SCHEME://HOST:PORT``) does not answer."""
    import socket
    from urllib.parse import urlsplit

    try:
        where = urlsplit(address if "://" in address else f"tcp://{address}")
        host, port = where.hostname, where.port
    except ValueError:
        host = port = None
    if not host or not port:  # "auto" and the like: the cluster's own client finds it
        return
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        start = "`dask scheduler` and `dask worker ADDRESS`" if kind == "dask" else "`ray start --head`"
        raise RunError(f"cannot reach the {kind} cluster at {address} ({exc.strerror or exc}); start one with "
                       f"{start}, or leave --cluster out for a local cluster") from None


def package_root() -> str:
    """The folder hwnas is imported from (cluster workers started here import the same copy)."""
    import hwnas

    return os.path.dirname(os.path.dirname(os.path.abspath(hwnas.__file__)))


class ClusterExecutor(Executor):
    """Tasks on a cluster: at most as many in flight as the cluster has worker slots, a timeout per task.

    A lost worker's task is run again by the cluster itself (Dask reschedules it, Ray
    retries it) up to :data:`MAX_ATTEMPTS` times. Worker contexts are built with
    :class:`NullGate`: on a cluster, measurements are not kept apart from other work
    (measure remotely over RPC instead, where the tracker gives each session a device
    of its own).
    """

    kind = ""

    def __init__(self, *, workers: int, init: Callable, init_arg: Any, work: Callable,
                 timeout_s: float | None = None, address: str | None = None) -> None:
        require(self.kind)
        if workers < 1 and not address:
            raise RunError(f"executor {self.kind} needs workers >= 1 or a cluster address, got {workers}")
        self.workers = workers
        self.init, self.init_arg, self.work = init, init_arg, work
        self.timeout_s = timeout_s
        self.address = address
        self.token = os.urandom(8).hex()
        self._started = False

    # -- what each cluster implements -----------------------------------------------------------
    @abc.abstractmethod
    def _start(self) -> None: ...

    @abc.abstractmethod
    def _slots(self) -> int: ...

    @abc.abstractmethod
    def _submit(self, task: Any) -> Any: ...

    @abc.abstractmethod
    def _wait(self, handles: list, timeout_s: float) -> list: ...

    @abc.abstractmethod
    def _result(self, handle: Any) -> tuple[str, Any]:
        """The task's ("done", Outcome) or ("init-failed", reason); raises when its worker was lost too often."""

    @abc.abstractmethod
    def _cancel(self, handle: Any) -> None: ...

    def _lost(self, exc: BaseException) -> str:
        return f"worker lost {MAX_ATTEMPTS} times ({describe(exc)})"

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, tasks: Sequence[Any], on_done: Callable[[int, Outcome], None]) -> None:
        if not self._started:
            self._start()
            self._started = True
        pending = deque(range(len(tasks)))
        inflight: dict[Any, tuple[int, float]] = {}
        try:
            while pending or inflight:
                slots = max(1, self._slots())
                while pending and len(inflight) < slots:
                    index = pending.popleft()
                    inflight[self._submit(tasks[index])] = (index, time.monotonic())
                for handle in self._wait(list(inflight), 1.0):
                    index, started = inflight.pop(handle)
                    try:
                        kind, payload = self._result(handle)
                    except Exception as exc:  # the cluster gave up on it: its worker was lost every time
                        log.debug("task %d lost: %s", index, traceback.format_exc())
                        on_done(index, Outcome(False, None, self._lost(exc), time.monotonic() - started))
                        continue
                    if kind == "init-failed":
                        raise RunError(f"a {self.kind} worker could not start: {payload}")
                    on_done(index, payload)
                now = time.monotonic()
                for handle, (index, started) in list(inflight.items()):
                    if self.timeout_s and now - started > self.timeout_s:
                        del inflight[handle]
                        self._cancel(handle)
                        on_done(index, Outcome(False, None, f"timed out after {self.timeout_s:g} s", now - started))
        finally:
            for handle in inflight:
                with contextlib.suppress(Exception):
                    self._cancel(handle)


class DaskExecutor(ClusterExecutor):
    """Tasks on a Dask cluster: ``address`` (``tcp://host:8786``), or a local one of ``workers`` processes."""

    kind = "dask"

    def _start(self) -> None:
        import dask
        from distributed import Client, LocalCluster

        self._cluster = None
        if not log.isEnabledFor(logging.INFO):  # Dask logs every connection at INFO; hwnas -v shows them
            logging.getLogger("distributed").setLevel(logging.WARNING)
        try:
            if self.address:
                self._client = Client(self.address, timeout=10)
            else:
                # worker processes are spawned with this process's sys.path: they import this hwnas
                with dask.config.set({"distributed.scheduler.allowed-failures": MAX_ATTEMPTS - 1}):
                    self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                                 dashboard_address=None, silence_logs=logging.ERROR)
                self._client = Client(self._cluster)
        except OSError as exc:
            raise RunError(f"cannot reach the Dask scheduler at {self.address}: {error_line(exc)}; start one with "
                           f"`dask scheduler` and `dask worker ADDRESS`, or leave --cluster out for a local "
                           f"cluster") from None

    def _slots(self) -> int:
        return sum(self._client.nthreads().values())

    def _submit(self, task: Any):
        return self._client.submit(_cluster_task, self.token, self.init, self.init_arg, self.work, task, pure=False)

    def _wait(self, handles: list, timeout_s: float) -> list:
        from distributed import wait

        try:
            done, _ = wait(handles, timeout=timeout_s, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return []
        return [h for h in handles if h in done]

    def _result(self, handle):
        return handle.result()

    def _cancel(self, handle) -> None:
        # the worker running it is restarted: Dask cannot stop a running task otherwise
        running = [w for w, keys in self._client.processing().items() if handle.key in keys]
        handle.cancel()
        if running:
            with contextlib.suppress(Exception):
                self._client.restart_workers(running, raise_for_error=False)

    def close(self) -> None:
        if not self._started:
            return
        with contextlib.suppress(Exception):
            self._client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()
        self._started = False


class RayExecutor(ClusterExecutor):
    """Tasks on a Ray cluster: ``address`` (``ray://host:10001`` or ``auto``), or a local one of ``workers`` CPUs."""

    kind = "ray"

    def _start(self) -> None:
        import ray

        self._owns = not ray.is_initialized()
        if self._owns:
            try:
                if self.address:
                    ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False)
                else:
                    ray.init(num_cpus=self.workers, include_dashboard=False, logging_level=logging.ERROR,
                             log_to_driver=False,
                             runtime_env={"env_vars": {"PYTHONPATH": package_root(), "RAY_DEDUP_LOGS": "0"}})
            except ConnectionError as exc:
                raise RunError(f"cannot reach the Ray cluster at {self.address}: {error_line(exc)}; start one with "
                               f"`ray start --head`, or leave --cluster out for a local cluster") from None
        self._ray = ray
        self._fn = ray.remote(num_cpus=1, max_retries=MAX_ATTEMPTS - 1)(_cluster_task)

    def _slots(self) -> int:
        return int(self._ray.cluster_resources().get("CPU", 1))

    def _submit(self, task: Any):
        return self._fn.remote(self.token, self.init, self.init_arg, self.work, task)

    def _wait(self, handles: list, timeout_s: float) -> list:
        ready, _ = self._ray.wait(handles, num_returns=len(handles), timeout=timeout_s, fetch_local=False)
        if not ready:
            ready, _ = self._ray.wait(handles, num_returns=1, timeout=0)
        return ready

    def _result(self, handle):
        return self._ray.get(handle)

    def _cancel(self, handle) -> None:
        self._ray.cancel(handle, force=True)  # ends the worker process running it

    def close(self) -> None:
        if self._started and self._owns:
            with contextlib.suppress(Exception):
                self._ray.shutdown()
        self._started = False


def make_executor(kind: str, *, workers: int, init: Callable, init_arg: Any, work: Callable,
                  timeout_s: float | None = None, address: str | None = None) -> Executor:
    """The executor named ``kind`` (see :data:`EXECUTORS`); ``address`` names a running cluster (not ``process``)."""
    require(kind)
    if kind == "process":
        if address:
            raise InvalidConfigError("--cluster names a Dask or Ray cluster; it needs --executor dask or ray")
        return WorkerPool(workers=workers, init=init, init_arg=init_arg, work=work, timeout_s=timeout_s)
    cls = {"dask": DaskExecutor, "ray": RayExecutor}[kind]
    return cls(workers=workers, init=init, init_arg=init_arg, work=work, timeout_s=timeout_s, address=address)

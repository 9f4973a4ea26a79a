"""The results store: every evaluation of a search, written to SQLite as it finishes.

    store = ResultStore("runs/demo/results.sqlite")
    run = store.open_run("demo", settings, versions, resume=False)
    store.record("demo", key, genome, hw, "cpu", {"latency_ms": 1.25}, "ok", None, {"compile": 3.1})

Tables (schema version :data:`SCHEMA_VERSION`, kept in ``PRAGMA user_version``):

* ``runs``: one row per run: its id, creation time, the whole run
  configuration (``settings``), the software versions, its status;
* ``evaluations``: one row per (run, candidate key, target): genome,
  hardware config, metrics, ``ok``/``failed``, the error, timings, start and
  finish times; recording the same (run, key, target) again replaces the row
  (a retried candidate keeps its latest outcome);
* ``cache``: ``(namespace, key) -> value`` for results worth keeping across
  runs (a measured kernel, a tuned schedule), namespaced by their producer.

JSON columns are written with sorted keys and compact separators; floats
round-trip exactly; NaN and infinities are refused (strict JSON). Times are
Unix seconds (``time.time()``).

Several processes may write one store at once: the file is in WAL mode,
every write is one ``BEGIN IMMEDIATE`` transaction committed (and synced)
before :meth:`ResultStore.record` returns, and a writer waits up to
``timeout_s`` for another's lock. A process killed mid-search loses no row it
committed. A store object may be pickled to a worker process or survive a
``fork``: it opens its own connection in each process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hwnas.errors import InvalidConfigError, StoreError

log = logging.getLogger(__name__)

__all__ = ["EVALUATION_STATUSES", "RUN_STATUSES", "SCHEMA_VERSION", "EvaluationRow", "Journal", "ResultStore", "Run"]

#: the schema this module writes and reads (``PRAGMA user_version``)
SCHEMA_VERSION = 1
#: an evaluation's outcome
EVALUATION_STATUSES: tuple[str, ...] = ("ok", "failed")
#: a run's state
RUN_STATUSES: tuple[str, ...] = ("running", "finished", "failed", "interrupted")

_TABLES = ("runs", "evaluations", "cache")
# JSON columns are TEXT: a column declared JSON would get NUMERIC affinity and turn "3" into 3
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        settings TEXT NOT NULL,
        versions TEXT NOT NULL,
        status TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS evaluations (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        candidate_key TEXT NOT NULL,
        genome TEXT,
        hw TEXT NOT NULL,
        target TEXT NOT NULL,
        metrics TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
        error TEXT,
        timings TEXT NOT NULL,
        started REAL,
        finished REAL,
        UNIQUE (run_id, candidate_key, target)
    )""",
    """CREATE TABLE IF NOT EXISTS cache (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (namespace, key)
    )""",
)
# connections inherited through fork: never used and never closed in the child (closing
# one there could checkpoint or release the parent's locks), kept alive so GC leaves them
_ABANDONED: list[sqlite3.Connection] = []
_MISSING = object()


@dataclasses.dataclass(frozen=True)
class Run:
    """A run as stored: its id, creation time, configuration, versions and status."""

    run_id: str
    created: float
    settings: dict[str, Any]
    versions: dict[str, Any]
    status: str
    #: True when :meth:`ResultStore.open_run` continued an existing run
    resumed: bool = False


@dataclasses.dataclass(frozen=True)
class EvaluationRow:
    """One recorded evaluation."""

    id: int
    run_id: str
    candidate_key: str
    genome: Any
    hw: dict[str, Any]
    target: str
    metrics: dict[str, Any]
    status: str
    error: str | None
    timings: dict[str, Any]
    started: float | None
    finished: float | None

    @property
    def ok(self) -> bool:
        """True when the evaluation succeeded."""
        return self.status == "ok"


def _json_default(value: Any) -> Any:
    """JSON for the values a search produces besides the built-ins: numpy scalars and arrays, paths."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy scalars (and 0-d arrays)
    tolist = getattr(value, "tolist", None)  # numpy arrays
    if callable(tolist) and getattr(value, "ndim", 0) > 0:
        return tolist()
    if callable(item):
        return item()
    raise TypeError(f"a value of type {type(value).__name__} is not JSON-able")


def _dumps(value: Any, what: str) -> str:
    """``value`` as JSON text (sorted keys, compact, strict: no NaN), or :class:`InvalidConfigError`."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        reason = "NaN or infinite numbers are not stored" if "Out of range float" in str(exc) else str(exc)
        raise InvalidConfigError(f"cannot store {what}: {reason}") from None


def _normalised(value: Any, what: str) -> Any:
    """``value`` as it reads back from the store (tuples become lists, keys strings)."""
    return json.loads(_dumps(value, what))


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, bool) != isinstance(new, bool):
        return False
    return old == new


def _allowed(path: str, allowed: frozenset[str]) -> bool:
    """True when the setting at dotted ``path`` or one of its parents may change."""
    parts = path.split(".")
    return any(".".join(parts[:i]) in allowed for i in range(1, len(parts) + 1))


def _first_difference(
    old: Any, new: Any, allowed: frozenset[str], prefix: str = ""
) -> tuple[str, Any, Any] | None:
    """The first (in sorted key order) dotted setting that differs and may not, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}{key}"
            if _allowed(path, allowed):
                continue
            a, b = old.get(key, _MISSING), new.get(key, _MISSING)
            if isinstance(a, dict) and isinstance(b, dict):
                found = _first_difference(a, b, allowed, f"{path}.")
                if found is not None:
                    return found
            elif a is _MISSING or b is _MISSING or not _same(a, b):
                return path, a, b
        return None
    return None if _same(old, new) else (prefix.rstrip(".") or "(settings)", old, new)


def _show(value: Any) -> str:
    return "absent" if value is _MISSING else json.dumps(value, sort_keys=True)


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidConfigError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _check_genome(genome: object) -> list[int] | None:
    if genome is None:
        return None
    if isinstance(genome, (str, bytes)) or not isinstance(genome, Iterable):
        raise InvalidConfigError(f"a genome is a list of integers or None, got {genome!r}")
    genes = list(genome)
    for g in genes:
        if isinstance(g, bool) or not hasattr(g, "__index__"):
            raise InvalidConfigError(f"a genome is a list of integers, got {genes!r}")
    return [int(g) for g in genes]


def _check_time(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidConfigError(f"{what} must be a time in seconds (a finite number), got {value!r}")
    return float(value)


class ResultStore:
    """An SQLite file of runs, their evaluations and a generic cache (see the module docstring).

    Opening a file that is not a store (not SQLite, corrupt, another
    program's database, a newer schema) raises :class:`StoreError` and leaves
    the file untouched; a new or empty file becomes an empty store.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 30.0) -> None:
        """``path`` of the store file (created with its folder when absent); ``timeout_s``:
        how long a write waits for another process's lock before :class:`StoreError`."""
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, (int, float))
            or not math.isfinite(timeout_s)
            or timeout_s < 0
        ):
            raise InvalidConfigError(f"store timeout_s must be a number >= 0, got {timeout_s!r}")
        self.path = Path(path)
        self.timeout_s = float(timeout_s)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._connection()  # fail now on a bad file

    # ------------------------------------------------------------------ connection

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "timeout_s": self.timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.timeout_s = state["timeout_s"]
        self._lock = threading.RLock()
        self._conn = None
        self._pid = 0

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this process's connection (a later call opens a new one)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
            elif self._conn is not None:
                _ABANDONED.append(self._conn)
            self._conn = None

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """One clear line for an SQLite error."""
        name = getattr(exc, "sqlite_errorname", "") or ""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
            return StoreError(
                f"store {self.path} is locked by another process (waited {self.timeout_s:g} s); "
                f"try again when it is done"
            )
        if name.startswith("SQLITE_NOTADB") or "not a database" in text:
            return StoreError(f"{self.path} is not an hwnas results store: not an SQLite database")
        if name.startswith("SQLITE_CORRUPT") or "malformed" in text:
            return StoreError(f"store {self.path} is corrupt ({text}); it was left as it is")
        return StoreError(f"store {self.path}: {text}")

    def _check_file(self) -> None:
        """Refuse a path that is a folder; create the folder of a new store.

        The file itself is only ever opened through SQLite: closing any other
        descriptor of it would drop the POSIX locks this process's other
        connections hold, and another process could then delete the WAL under
        them. A file that is not a database is refused by SQLite's first read
        (SQLITE_NOTADB), which writes nothing.
        """
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"store {self.path} is not a file")
        if not self.path.exists():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of store {self.path}: {exc.strerror or exc}") from None

    def _connection(self) -> sqlite3.Connection:
        """This process's connection, opened and checked on first use."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                return self._conn
            if self._conn is not None:  # inherited through fork
                _ABANDONED.append(self._conn)
                self._conn = None
            self._check_file()
            try:
                conn = sqlite3.connect(
                    str(self.path), timeout=self.timeout_s, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            try:
                self._prepare(conn)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
                raise
            self._conn, self._pid = conn, os.getpid()
            return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check the schema (reading only), then create it in a new store; set the pragmas."""
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            self._check_schema(conn, create=False)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def _check_schema(self, conn: sqlite3.Connection, *, create: bool) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version == SCHEMA_VERSION and set(_TABLES) <= tables:
            return
        if version == 0 and not tables:
            if create:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                return
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("store %s: the file system refused WAL mode (%s); concurrent writers wait longer",
                            self.path, mode)
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._check_schema(conn, create=True)  # another process may have created it meanwhile
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            return
        if version == 0:
            raise StoreError(
                f"{self.path} is an SQLite database but not an hwnas results store "
                f"(tables: {', '.join(sorted(tables))})"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}, written by a newer hwnas; "
                f"this one reads version {SCHEMA_VERSION}: upgrade hwnas"
            )
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}; this hwnas reads version {SCHEMA_VERSION}"
            )
        raise StoreError(
            f"store {self.path} lacks table(s) {', '.join(sorted(set(_TABLES) - tables))}; it is damaged"
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT``; SQLite errors become :class:`StoreError`."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    # ------------------------------------------------------------------ runs

    @staticmethod
    def _run(row: Sequence[Any], *, resumed: bool = False) -> Run:
        run_id, created, settings, versions, status = row
        return Run(run_id=run_id, created=created, settings=json.loads(settings),
                   versions=json.loads(versions), status=status, resumed=resumed)

    def open_run(
        self,
        run_id: str,
        settings: Mapping[str, Any],
        versions: Mapping[str, Any],
        *,
        resume: bool,
        allowed_to_change: Iterable[str] = (),
    ) -> Run:
        """Create run ``run_id``, or continue it when ``resume`` is True (a run that does
        not exist yet is created either way: ``Run.resumed`` tells which happened).

        ``settings`` is the whole run configuration (JSON-able). Resuming
        refuses settings that differ from the stored ones, except those named
        in ``allowed_to_change`` (dotted paths into nested settings, e.g.
        ``"budget"`` or ``"search.workers"``; a name allows everything below
        it); the stored settings and versions then become the new ones.
        A run that exists without ``resume`` is an :class:`InvalidConfigError`.
        """
        _check_text(run_id, "a run id")
        if not isinstance(settings, Mapping) or not isinstance(versions, Mapping):
            raise InvalidConfigError("a run's settings and versions are mappings (JSON objects)")
        new_settings = _normalised(dict(settings), f"the settings of run {run_id}")
        new_versions = _normalised(dict(versions), f"the versions of run {run_id}")
        allowed = frozenset(allowed_to_change)
        settings_json = _dumps(new_settings, "settings")
        versions_json = _dumps(new_versions, "versions")
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT run_id, created, settings, versions, status FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                created = time.time()
                conn.execute(
                    "INSERT INTO runs (run_id, created, settings, versions, status) VALUES (?, ?, ?, ?, ?)",
                    (run_id, created, settings_json, versions_json, "running"),
                )
                return Run(run_id, created, new_settings, new_versions, "running", resumed=False)
            if not resume:
                raise InvalidConfigError(
                    f"run {run_id} already exists in {self.path}; pass --resume to continue it "
                    f"or choose another --out"
                )
            old = self._run(row)
            diff = _first_difference(old.settings, new_settings, allowed)
            if diff is not None:
                name, was, now = diff
                raise InvalidConfigError(
                    f"cannot resume: setting {name!r} was {_show(was)}, now {_show(now)} "
                    f"(run {run_id} in {self.path})"
                )
            if old.versions != new_versions:
                log.warning("run %s was started with versions %s and resumes with %s",
                            run_id, _show(old.versions), _show(new_versions))
            conn.execute(
                "UPDATE runs SET settings = ?, versions = ?, status = ? WHERE run_id = ?",
                (settings_json, versions_json, "running", run_id),
            )
            return Run(run_id, old.created, new_settings, new_versions, "running", resumed=True)

    def get_run(self, run_id: str) -> Run | None:
        """The stored run ``run_id``, or None."""
        rows = self._query(
            "SELECT run_id, created, settings, versions, status FROM runs WHERE run_id = ?", (run_id,)
        )
        return self._run(rows[0]) if rows else None

    def runs(self) -> list[Run]:
        """Every stored run, oldest first."""
        rows = self._query("SELECT run_id, created, settings, versions, status FROM runs ORDER BY created, run_id")
        return [self._run(r) for r in rows]

    def set_run_status(self, run_id: str, status: str) -> None:
        """Mark run ``run_id`` as one of :data:`RUN_STATUSES`."""
        if status not in RUN_STATUSES:
            raise InvalidConfigError(f"a run's status is one of {', '.join(RUN_STATUSES)}, got {status!r}")
        with self._transaction() as conn:
            if conn.execute("UPDATE runs SET status = ? WHERE run_id = ?", (status, run_id)).rowcount == 0:
                raise InvalidConfigError(f"run {run_id} is not in store {self.path}")

    # ------------------------------------------------------------------ evaluations

    def record(
        self,
        run_id: str,
        key: str,
        genome: Sequence[int] | None,
        hw: Mapping[str, Any],
        target: str,
        metrics: Mapping[str, Any],
        status: str = "ok",
        error: str | None = None,
        timings: Mapping[str, Any] | None = None,
        *,
        started: float | None = None,
        finished: float | None = None,
    ) -> int:
        """Write one evaluation and commit it before returning; the row's id.

        ``status`` is ``"ok"`` or ``"failed"`` (with ``error``, one line).
        ``finished`` defaults to now. Recording the same (run, key, target)
        again replaces the earlier row. Values must be JSON-able (numpy
        scalars and arrays are converted); NaN and infinities are refused.
        """
        _check_text(run_id, "a run id")
        _check_text(key, "a candidate key")
        _check_text(target, "a target name")
        if status not in EVALUATION_STATUSES:
            raise InvalidConfigError(f"an evaluation's status is 'ok' or 'failed', got {status!r}")
        if error is not None and not isinstance(error, str):
            raise InvalidConfigError(f"an evaluation's error is a string or None, got {type(error).__name__}")
        values = (
            run_id,
            key,
            None if genome is None else _dumps(_check_genome(genome), "the genome"),
            _dumps(dict(hw), "the hardware config"),
            target,
            _dumps(dict(metrics), "the metrics"),
            status,
            error,
            _dumps(dict(timings or {}), "the timings"),
            _check_time(started, "started"),
            _check_time(time.time() if finished is None else finished, "finished"),
        )
        try:
            with self._transaction() as conn:
                conn.execute(
                    """INSERT INTO evaluations
                           (run_id, candidate_key, genome, hw, target, metrics, status, error, timings,
                            started, finished)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT (run_id, candidate_key, target) DO UPDATE SET
                           genome = excluded.genome, hw = excluded.hw, metrics = excluded.metrics,
                           status = excluded.status, error = excluded.error, timings = excluded.timings,
                           started = excluded.started, finished = excluded.finished""",
                    values,
                )
                (row_id,) = conn.execute(
                    "SELECT id FROM evaluations WHERE run_id = ? AND candidate_key = ? AND target = ?",
                    (run_id, key, target),
                ).fetchone()
        except StoreError as exc:
            if "FOREIGN KEY" in str(exc):
                raise InvalidConfigError(
                    f"run {run_id} is not in store {self.path}; open the run before recording"
                ) from None
            raise
        return int(row_id)

    _COLUMNS = ("id, run_id, candidate_key, genome, hw, target, metrics, status, error, timings, "
                "started, finished")

    @staticmethod
    def _row(row: Sequence[Any]) -> EvaluationRow:
        (id_, run_id, key, genome, hw, target, metrics, status, error, timings, started, finished) = row
        return EvaluationRow(
            id=id_, run_id=run_id, candidate_key=key,
            genome=None if genome is None else json.loads(genome),
            hw=json.loads(hw), target=target, metrics=json.loads(metrics), status=status, error=error,
            timings=json.loads(timings), started=started, finished=finished,
        )

    def lookup(self, run_id: str, key: str, target: str) -> EvaluationRow | None:
        """The recorded evaluation of (run, candidate key, target), or None."""
        rows = self._query(
            f"SELECT {self._COLUMNS} FROM evaluations WHERE run_id = ? AND candidate_key = ? AND target = ?",
            (run_id, key, target),
        )
        return self._row(rows[0]) if rows else None

    def evaluations(self, run_id: str, *, status: str | None = None) -> list[EvaluationRow]:
        """The evaluations of ``run_id`` (only those with ``status`` when given), in recording order."""
        if status is None:
            rows = self._query(f"SELECT {self._COLUMNS} FROM evaluations WHERE run_id = ? ORDER BY id", (run_id,))
        else:
            rows = self._query(
                f"SELECT {self._COLUMNS} FROM evaluations WHERE run_id = ? AND status = ? ORDER BY id",
                (run_id, status),
            )
        return [self._row(r) for r in rows]

    def count(self, run_id: str, *, status: str | None = None) -> int:
        """How many evaluations ``run_id`` has (with ``status`` when given)."""
        if status is None:
            rows = self._query("SELECT COUNT(*) FROM evaluations WHERE run_id = ?", (run_id,))
        else:
            rows = self._query("SELECT COUNT(*) FROM evaluations WHERE run_id = ? AND status = ?", (run_id, status))
        return int(rows[0][0])

    # ------------------------------------------------------------------ cache

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        """The cached value of ``(namespace, key)``, or ``default``."""
        rows = self._query("SELECT value FROM cache WHERE namespace = ? AND key = ?", (namespace, key))
        return json.loads(rows[0][0]) if rows else default

    def values(self, namespace: str) -> list[Any]:
        """Every cached value of ``namespace``, in the order they were first written."""
        rows = self._query("SELECT value FROM cache WHERE namespace = ? ORDER BY rowid", (namespace,))
        return [json.loads(r[0]) for r in rows]

    def put(self, namespace: str, key: str, value: Any) -> None:
        """Cache ``value`` (JSON-able) as ``(namespace, key)``, replacing an earlier value; committed."""
        _check_text(namespace, "a cache namespace")
        _check_text(key, "a cache key")
        text = _dumps(value, f"cache value {namespace}/{key}")
        with self._transaction() as conn:
            conn.execute(
                """INSERT INTO cache (namespace, key, value, created) VALUES (?, ?, ?, ?)
                   ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, created = excluded.created""",
                (namespace, key, text, time.time()),
            )


class Journal:
    """Stands in for a :class:`ResultStore` on a worker that cannot reach the store's file (a cluster node).

    It takes the same writes (:meth:`record`, :meth:`put`) and keeps them in
    order until :meth:`drain` hands them over; the search process then replays
    them into the one store (:meth:`replay`), so the store stays the single
    record. :meth:`get` answers from this worker's own writes.
    """

    def __init__(self) -> None:
        self._entries: list[tuple[str, tuple, dict]] = []
        self._cache: dict[tuple[str, str], Any] = {}

    def record(self, run_id: str, key: str, genome, hw, target: str, metrics, status: str = "ok",
               error: str | None = None, timings=None, *, started: float | None = None,
               finished: float | None = None) -> None:
        args = (run_id, key, _normalised(genome, "the genome"), _normalised(dict(hw), "the hardware config"), target,
                _normalised(dict(metrics), "the metrics"), status, error, _normalised(dict(timings or {}), "timings"))
        self._entries.append(("record", args, {"started": started,
                                               "finished": time.time() if finished is None else finished}))

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        return self._cache.get((namespace, key), default)

    def put(self, namespace: str, key: str, value: Any) -> None:
        value = _normalised(value, f"cache value {namespace}/{key}")
        self._cache[(namespace, key)] = value
        self._entries.append(("put", (namespace, key, value), {}))

    def drain(self) -> list[tuple[str, tuple, dict]]:
        """The writes since the last drain, in order."""
        entries, self._entries = self._entries, []
        return entries

    @staticmethod
    def replay(entries: Iterable[Sequence[Any]], store: ResultStore) -> None:
        """Write ``entries`` (from :meth:`drain`) into ``store``."""
        for kind, args, kwargs in entries:
            if kind == "record":
                store.record(*args, **kwargs)
            elif kind == "put":
                store.put(*args)
            else:
                raise StoreError(f"unknown journal entry {kind!r}")

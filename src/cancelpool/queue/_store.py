"""The SQLite store: one file, WAL mode, every state transition its own commit.

::

    producers (Queue, cancelpool submit/cancel)        servers (cancelpool serve)
    -------------------------------------------        --------------------------
    INSERT jobs (status queued)       --+         +--  BEGIN IMMEDIATE; claim queued
    UPDATE queued -> cancelled          |  SQLite |    UPDATE ... WHERE status='queued'
    UPDATE running: cancel_requested=1  +-- WAL --+--  record outcomes, progress
    poke the owner's FIFO  ---------------------------> wakes the server at once

Writers serialise on SQLite's write lock (``BEGIN IMMEDIATE``), so a claim is atomic:
the row changes from ``queued`` to ``running`` in one transaction that checks the old
status, and two servers never start the same job. ``synchronous=NORMAL`` in WAL mode
keeps every commit across a crash of any process (not across power loss, which would
need ``FULL`` and an fsync per job).
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import _sql
from ._exceptions import QueueFileError
from ._files import check_db_files, check_queue_dir, directory_lock, resolve_db_path
from ._liveness import poke_server, remove_fifo, server_alive, valid_server_id, wake_path
from ._model import JobRecord, decode_json
from ._records import CancelOutcome as CancelOutcome
from ._records import ClaimedJob, NodeInfo, Outcome

T = TypeVar("T")

#: How long a writer waits for another process's transaction before giving up. Long
#: enough to ride out a burst of commits from several servers; a real deadlock (none is
#: possible with BEGIN IMMEDIATE) would surface as an error after it.
BUSY_TIMEOUT_MS = 30_000

#: 2: ``jobs.trace_context`` (the submitter's OpenTelemetry context). A queue of an
#: older version is upgraded when it is opened (see ``_MIGRATIONS``).
SCHEMA_VERSION = 2
#: The statements that bring a queue of version ``key`` to ``key + 1``: additive only,
#: so that a node of the previous version still running on the file goes on working.
_MIGRATIONS = {1: ("ALTER TABLE jobs ADD COLUMN trace_context TEXT",)}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL,
    args TEXT NOT NULL,
    kwargs TEXT NOT NULL,
    name TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    timeout REAL,
    parent INTEGER,
    status TEXT NOT NULL DEFAULT 'queued',
    owner TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    submitted_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    progress_message TEXT,
    progress TEXT,
    result TEXT,
    partial_result TEXT,
    error TEXT,
    traceback TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    cancel_reason TEXT,
    cancel_message TEXT,
    trace_context TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (priority DESC, id) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (owner) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_parent ON jobs (parent) WHERE parent IS NOT NULL;
CREATE TABLE IF NOT EXISTS servers (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    proc_start REAL NOT NULL,
    wake_path TEXT NOT NULL,
    allow TEXT NOT NULL,
    workers INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat REAL NOT NULL,
    stopped_at REAL,
    stop_reason TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def default_db_target() -> str | Path:
    """Like :func:`default_db_path`, but a ``postgresql://`` URL in ``$CANCELPOOL_DB``
    stays text (a Path would fold its ``//``)."""
    env = os.environ.get("CANCELPOOL_DB")
    if env and env.startswith(("postgresql://", "postgres://")):
        return env
    return default_db_path()


def default_db_path() -> Path:
    """``$CANCELPOOL_DB``, else ``queue.db`` in the user's state directory as
    ``platformdirs`` knows it (Linux: ``$XDG_STATE_HOME/cancelpool``, by default
    ``~/.local/state/cancelpool``; macOS: ``~/Library/Application Support/cancelpool``)."""
    env = os.environ.get("CANCELPOOL_DB")
    if env:
        return Path(env)
    import platformdirs  # loaded by the verbs that need a default, not by the package

    return platformdirs.user_state_path("cancelpool", appauthor=False) / "queue.db"


@dataclass(frozen=True)
class ServerInfo:
    """A server registered in the database."""

    id: str
    pid: int
    proc_start: float
    wake_path: str
    allow: tuple[str, ...]
    workers: int
    started_at: float
    heartbeat: float
    stopped_at: float | None
    stop_reason: str | None
    host: str = ""
    label: str | None = None
    lease_until: float | None = None


def _decode_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _name_matches(name: str | None, pattern: str) -> bool:
    return name is not None and fnmatch.fnmatchcase(name, pattern)


@functools.lru_cache(maxsize=16)
def _compiled(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


def _regexp(regex: str, text: str | None) -> bool:
    """SQL ``cancelpool_regexp(regex, text)``: the claim's filter (``Tx.task_matches``)."""
    return text is not None and _compiled(regex).search(text) is not None


class SQLiteStore:
    """One connection to a SQLite queue file. Thread-safe (a lock per call)."""

    kind = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        """Open the queue at ``path`` after checking its files (see ``_files``).

        Args:
            create: make the directory (0700), database (0600) and schema if missing;
                otherwise a path with no queue raises and nothing is created.

        Raises:
            QueueFileError: no queue there (``create=False``), or a file that is not
                private, not SQLite, or a SQLite database of something else.
        """
        self.path = resolve_db_path(path)
        self._lock = threading.RLock()
        check_queue_dir(self.path.parent, create=create)
        with directory_lock(self.path.parent):
            check_db_files(self.path, create=create)
            uri = self.path.as_uri() + "?mode=rw"  # never let SQLite create the file
            try:
                self._conn = sqlite3.connect(
                    uri,
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                )
            except sqlite3.Error as exc:
                raise QueueFileError(f"cannot open the queue at {self.path}: {exc}") from None
            try:
                self._prepare(create)
            except BaseException:
                self._conn.close()
                raise

    def _prepare(self, create: bool) -> None:
        conn = self._conn
        conn.row_factory = sqlite3.Row
        # A text column holding bytes that are not UTF-8 (written by another program)
        # is read with U+FFFD in their place: it never stops ls, result or a claim.
        conn.text_factory = _decode_text
        conn.create_function("name_matches", 2, _name_matches, deterministic=True)
        conn.create_function("cancelpool_regexp", 2, _regexp, deterministic=True)
        conn.create_function("cancelpool_now", 0, time.time)  # the Tx.now of _sql
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            schema = (
                conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if "meta" in tables
                else None
            )
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise QueueFileError(
                f"{self.path} cannot be read as a cancelpool queue ({exc}); nothing was changed"
            ) from None
        #: The schema version found on opening (None: there was no queue).
        self.found_version: int | None = None
        if schema is not None:
            version = schema[0]
            known = _sql.schema_number(version) in _MIGRATIONS
            if version != str(SCHEMA_VERSION) and not known:
                raise QueueFileError(
                    f"{self.path} is a queue of schema version {version}; this cancelpool "
                    f"reads version {SCHEMA_VERSION}"
                )
            self.found_version = _sql.schema_number(version)
        elif tables:
            raise QueueFileError(
                f"{self.path} is a SQLite database of something else, not a cancelpool "
                "queue (nothing was changed); give the queue its own file"
            )
        elif not create:
            raise QueueFileError(f"no queue at {self.path}: the file is empty")
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode != "wal":
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise QueueFileError(
                    f"{self.path}: could not switch the database to WAL mode ({mode})"
                )
        conn.execute("PRAGMA synchronous = NORMAL")
        if schema is None:
            with self.transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                    (str(SCHEMA_VERSION),),
                )
        else:
            self.upgrade()
        # SQLite gives the side files the database's mode (0600); check what it made.
        check_db_files(self.path, create=False)

    def upgrade(self) -> tuple[int | None, int]:
        """Bring an older queue to this version, one version per step, each in the
        transaction that re-reads the version (two processes opening the file at once
        upgrade it once). Returns the version found on opening and the version now."""
        while True:
            with self.transaction() as conn:
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                version = int(row[0])
                if version >= SCHEMA_VERSION:
                    break
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(version + 1),))
        return self.found_version, SCHEMA_VERSION

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @property
    def display(self) -> str:
        """The queue file's path, as printed."""
        return str(self.path)

    def wake(self, owners: Collection[str] | None = None) -> None:
        """Write a byte to the FIFO of each live server (all, or ``owners``)."""
        for info in self.servers(live_only=True):
            if owners is None or info.id in owners:
                poke_server(self.path, info.id)

    def _read(self, fn: Callable[[_SQLiteTx], T]) -> T:
        with self._lock:
            return fn(_SQLiteTx(self._conn))

    def _write(self, fn: Callable[[_SQLiteTx], T]) -> T:
        with self.transaction() as conn:
            return fn(_SQLiteTx(conn))

    def nodes(self) -> list[NodeInfo]:
        """The live servers with their running-job counts."""
        running = self._read(_sql.running_per_owner)
        now = time.time()
        host = socket.gethostname()
        return [
            NodeInfo(
                info.id,
                host,
                info.pid,
                None,
                running.get(info.id, 0),
                max(0.0, now - info.heartbeat),
                info.workers,
                info.allow,
            )
            for info in self.servers(live_only=True)
        ]

    def owned(self, owner: str) -> set[int]:
        return self._read(lambda tx: _sql.owned(tx, owner))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any error)."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- producers ------------------------------------------------------------------------
    def submit(
        self,
        task: str,
        args: str,
        kwargs: str,
        *,
        name: str | None,
        priority: int,
        timeout: float | None,
        parent: int | None,
        trace_context: str | None = None,
    ) -> int:
        return self._write(
            lambda tx: _sql.submit(
                tx,
                task,
                args,
                kwargs,
                name=name,
                priority=priority,
                timeout=timeout,
                parent=parent,
                trace_context=trace_context,
            )
        )

    def request_cancel(
        self,
        ids: Sequence[int] = (),
        *,
        pattern: str | None = None,
        reason: str = "manual",
        message: str | None = None,
        cascade: bool = True,
    ) -> CancelOutcome:
        """Cancel jobs by id or name pattern, and (``cascade``) their descendants.

        Queued jobs become ``cancelled`` at once; running ones get ``cancel_requested``
        and their servers (``owners``) must be woken. Unknown ids: JobNotFound, nothing
        changes.
        """
        return self._write(
            lambda tx: _sql.request_cancel(
                tx, ids, pattern=pattern, reason=reason, message=message, cascade=cascade
            )
        )

    # -- reading ----------------------------------------------------------------------------
    def get(self, job_id: int) -> JobRecord | None:
        return self._read(lambda tx: _sql.get(tx, job_id))

    def status_of(self, job_id: int) -> str | None:
        return self._read(lambda tx: _sql.status_of(tx, job_id))

    def list_jobs(
        self,
        *,
        status: Sequence[str] = (),
        pattern: str | None = None,
        ids: Sequence[int] = (),
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[JobRecord]:
        return self._read(
            lambda tx: _sql.list_jobs(
                tx,
                status=status,
                pattern=pattern,
                ids=ids,
                limit=limit,
                newest_first=newest_first,
            )
        )

    def counts(self) -> dict[str, int]:
        return self._read(_sql.counts)

    def servers(self, *, live_only: bool = True) -> list[ServerInfo]:
        """Registered servers; ``live_only``: those whose liveness is derived as alive
        (see ``_liveness``), whatever their rows say. Rows that no server could have
        written (a malformed id or allow list) are left out."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM servers"
                + (" WHERE stopped_at IS NULL" if live_only else "")
                + " ORDER BY started_at"
            ).fetchall()
        infos: list[ServerInfo] = []
        for row in rows:
            info = self._server_info(row)
            if info is None:
                continue
            if live_only and not server_alive(self.path, info.id, info.pid, info.proc_start):
                continue
            infos.append(info)
        return infos

    def _server_info(self, row: sqlite3.Row) -> ServerInfo | None:
        if not valid_server_id(row["id"]):
            return None
        try:
            allow = decode_json(row["allow"])
        except (ValueError, TypeError):
            return None
        if not isinstance(allow, list) or not all(isinstance(p, str) for p in allow):
            return None
        return ServerInfo(
            id=row["id"],
            pid=row["pid"],
            proc_start=row["proc_start"],
            wake_path=str(wake_path(self.path, row["id"])),  # derived, never the column
            allow=tuple(allow),
            workers=row["workers"],
            started_at=row["started_at"],
            heartbeat=row["heartbeat"],
            stopped_at=row["stopped_at"],
            stop_reason=row["stop_reason"],
        )

    # -- servers ----------------------------------------------------------------------------
    def register_server(self, info: ServerInfo) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO servers (id, pid, proc_start, wake_path, allow, workers, "
                "started_at, heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.id,
                    info.pid,
                    info.proc_start,
                    str(wake_path(self.path, info.id)),
                    _json_list(info.allow),
                    info.workers,
                    info.started_at,
                    info.heartbeat,
                ),
            )

    def heartbeat(self, server_id: str) -> bool:
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE servers SET heartbeat = ? WHERE id = ? AND stopped_at IS NULL",
                (time.time(), server_id),
            )
            if cursor.rowcount == 1:
                return True
            conn.execute(  # recovered as dead while alive: come back without old claims
                "UPDATE servers SET stopped_at = NULL, stop_reason = NULL, heartbeat = ? "
                "WHERE id = ? AND stop_reason = 'died'",
                (time.time(), server_id),
            )
        return False

    def unregister_server(self, server_id: str, reason: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE servers SET stopped_at = ?, stop_reason = ? WHERE id = ?",
                (time.time(), reason, server_id),
            )

    def claim(self, owner: str, limit: int, allow: Sequence[str]) -> tuple[list[ClaimedJob], int]:
        """Move up to ``limit`` queued jobs to ``running`` for ``owner``, priority first
        (see ``_sql.claim``); one ``BEGIN IMMEDIATE`` makes it atomic."""
        return self._write(lambda tx: _sql.claim(tx, owner, limit, allow))

    def cancel_requests(self, owner: str) -> list[tuple[int, str | None]]:
        """Running jobs of ``owner`` whose cancellation was requested: (id, message)."""
        return self._read(lambda tx: _sql.cancel_requests(tx, owner))

    def record_outcomes(self, owner: str, outcomes: Sequence[Outcome]) -> list[int]:
        """Store finished jobs (one transaction). Returns the ids of cancelled jobs whose
        descendants must be cancelled too."""
        return self._write(lambda tx: _sql.record_outcomes(tx, owner, outcomes))

    def cascade_cancel(self, parents: Sequence[int]) -> CancelOutcome:
        """Cancel the unfinished descendants of jobs that ended cancelled."""
        return self._write(lambda tx: _sql.cascade_cancel(tx, parents))

    def save_progress(self, updates: dict[int, tuple[str, str, str | None]]) -> None:
        """Store the last progress (message, metadata JSON, partial JSON) of running jobs."""
        self._write(lambda tx: _sql.save_progress(tx, updates))

    def release(
        self,
        owner: str,
        jobs: Sequence[tuple[int, str | None]],
        *,
        requeue: bool,
        message: str,
    ) -> None:
        """Jobs a stopping server gave up, as (id, partial result JSON): back to the queue
        (or cancelled, reason signal), keeping their progress and partial results. A job
        whose cancellation was requested ends cancelled either way."""
        self._write(lambda tx: _sql.release(tx, owner, jobs, requeue=requeue, message=message))

    def settle_orphan_cancel(self, job_id: int, owner: str) -> bool:
        """Mark ``cancelled`` a running job whose cancellation was requested and whose
        server ``owner`` is dead (derived, not read from its row). True if it did.

        Fenced on (owner, status, request): if the server is alive after all, or the job
        finished or moved meanwhile, nothing changes.
        """
        info = next((i for i in self.servers(live_only=False) if i.id == owner), None)
        if info is not None and server_alive(self.path, info.id, info.pid, info.proc_start):
            return False
        return self._write(lambda tx: _sql.settle_orphan_cancel(tx, job_id, owner))

    def recover(self, me: str | None, max_attempts: int) -> dict[str, int]:
        """Account for the jobs of servers that died without stopping (SIGKILL, crash).

        Their running jobs go back to the queue (if they have attempts left) or become
        ``interrupted``; jobs whose cancellation was requested become ``cancelled``.
        Progress and partial results stay. Returns counts per new status.
        """
        dead = [
            info
            for info in self.servers(live_only=False)
            if info.stopped_at is None
            and info.id != me
            and not server_alive(self.path, info.id, info.pid, info.proc_start)
        ]
        counts = {"queued": 0, "interrupted": 0, "cancelled": 0}
        if not dead:
            return counts

        def work(tx: _SQLiteTx) -> None:
            for info in dead:
                # Claimed in the same transaction: another server may have recovered
                # it first.
                if not tx.run(
                    "UPDATE servers SET stopped_at = cancelpool_now(), stop_reason = 'died' "
                    "WHERE id = ? AND stopped_at IS NULL",
                    (info.id,),
                ):
                    continue
                note = f"server {info.id} (pid {info.pid}) died while running it"
                for status, n in _sql.recover_jobs(tx, info.id, note, max_attempts).items():
                    counts[status] += n

        self._write(work)
        for info in dead:
            remove_fifo(self.path, info.id)
        return counts


def _json_list(items: Iterable[str]) -> str:
    from ._model import encode_json

    return encode_json(list(items), "list")


class _SQLiteTx:
    """The SQLite side of ``_sql.Tx``: ``?`` as is, lists as one JSON parameter
    (``json_each``: one statement for any length, kept in sqlite3's statement cache),
    no row locks (the writer holds the database's)."""

    now = "cancelpool_now()"
    lock_rows = ""
    skip_locked = ""
    task_matches = "cancelpool_regexp(?, task)"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    def many(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, params)

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, Any]:
        return f"{column} IN (SELECT value FROM json_each(?))", json.dumps(list(values))

    def match_name(self, pattern: str) -> tuple[str, list[Any], bool]:
        return "name_matches(name, ?)", [pattern], True

    def values_table(
        self, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
    ) -> tuple[str, list[Any]]:
        row = "(" + ", ".join(f"CAST(? AS {kind})" for _, kind in columns) + ")"
        return f"VALUES {', '.join([row] * len(rows))}", [v for r in rows for v in r]

    def rows_and_wake(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.rows(sql, params)  # the client pokes the servers' FIFOs after it


#: The SQLite store under its former name.
Store = SQLiteStore

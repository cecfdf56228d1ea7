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

import dataclasses
import fnmatch
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._exceptions import InvalidJob, JobNotFound, QueueFileError
from ._files import check_db_files, check_queue_dir, directory_lock, resolve_db_path
from ._liveness import poke_server, remove_fifo, server_alive, valid_server_id, wake_path
from ._model import JobRecord, JobStatus, decode_json
from ._records import ClaimedJob, NodeInfo, Outcome
from ._states import where_source

#: How long a writer waits for another process's transaction before giving up. Long
#: enough to ride out a burst of commits from several servers; a real deadlock (none is
#: possible with BEGIN IMMEDIATE) would surface as an error after it.
BUSY_TIMEOUT_MS = 30_000

SCHEMA_VERSION = 1

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
    cancel_message TEXT
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

_COLUMNS = (
    "id, task, args, kwargs, name, priority, timeout, parent, status, owner, attempts, "
    "submitted_at, started_at, ended_at, progress_message, progress, result, "
    "partial_result, error, traceback, cancel_requested, cancel_reason, cancel_message"
)


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


@dataclass(frozen=True)
class CancelOutcome:
    """What a cancel request did."""

    cancelled: tuple[int, ...]  #: queued jobs cancelled on the spot (they never run)
    requested: tuple[int, ...]  #: running jobs whose servers were asked to stop them
    finished: tuple[int, ...]  #: jobs that had already finished (left as they are)
    owners: tuple[str, ...]  #: servers to wake

    @property
    def count(self) -> int:
        return len(self.cancelled) + len(self.requested)


def _name_matches(name: str | None, pattern: str) -> bool:
    return name is not None and fnmatch.fnmatchcase(name, pattern)


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
        conn.create_function("name_matches", 2, _name_matches, deterministic=True)
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
        if schema is not None:
            if schema[0] != str(SCHEMA_VERSION):
                raise QueueFileError(
                    f"{self.path} is a queue of schema version {schema[0]}; this cancelpool "
                    f"reads version {SCHEMA_VERSION}"
                )
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
        # SQLite gives the side files the database's mode (0600); check what it made.
        check_db_files(self.path, create=False)

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

    def nodes(self) -> list[NodeInfo]:
        """The live servers with their running-job counts."""
        with self._lock:
            running = dict(
                self._conn.execute(
                    "SELECT owner, COUNT(*) FROM jobs WHERE status = 'running' GROUP BY owner"
                ).fetchall()
            )
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
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM jobs WHERE status = 'running' AND owner = ?", (owner,)
            ).fetchall()
        return {row[0] for row in rows}

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
    ) -> int:
        with self.transaction() as conn:
            if (
                parent is not None
                and conn.execute("SELECT 1 FROM jobs WHERE id = ?", (parent,)).fetchone() is None
            ):
                raise InvalidJob(f"parent job {parent} does not exist")
            cursor = conn.execute(
                "INSERT INTO jobs (task, args, kwargs, name, priority, timeout, parent, "
                "status, submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
                (task, args, kwargs, name, priority, timeout, parent, time.time()),
            )
            job_id = cursor.lastrowid
        assert job_id is not None
        return job_id

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
        with self.transaction() as conn:
            targets: list[int] = []
            if ids:
                found = {
                    row[0]
                    for row in conn.execute(
                        f"SELECT id FROM jobs WHERE id IN ({','.join('?' * len(ids))})", ids
                    )
                }
                missing = sorted(set(ids) - found)
                if missing:
                    raise JobNotFound(f"no job with id {', '.join(map(str, missing))}")
                targets.extend(ids)
            if pattern is not None:
                targets.extend(
                    row[0]
                    for row in conn.execute(
                        "SELECT id FROM jobs WHERE status IN ('queued', 'running') "
                        "AND name_matches(name, ?)",
                        (pattern,),
                    )
                )
            return self._cancel_locked(conn, targets, reason, message, cascade)

    def _cancel_locked(
        self,
        conn: sqlite3.Connection,
        targets: Iterable[int],
        reason: str,
        message: str | None,
        cascade: bool,
    ) -> CancelOutcome:
        cancelled: list[int] = []
        requested: list[int] = []
        finished: list[int] = []
        owners: set[str] = set()
        now = time.time()
        seen: set[int] = set()
        todo = [(job_id, reason, message) for job_id in targets]
        while todo:
            job_id, why, text = todo.pop(0)
            if job_id in seen:
                continue
            seen.add(job_id)
            row = conn.execute(
                "SELECT status, owner, cancel_requested FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None:
                continue
            text = text or f"job {job_id} was cancelled ({why})"
            if row["status"] == "queued":
                conn.execute(
                    "UPDATE jobs SET status = 'cancelled', ended_at = ?, cancel_requested = 1, "
                    "cancel_reason = ?, cancel_message = ? WHERE id = ? AND status = 'queued'",
                    (now, why, text, job_id),
                )
                cancelled.append(job_id)
            elif row["status"] == "running":
                if not row["cancel_requested"]:
                    conn.execute(
                        "UPDATE jobs SET cancel_requested = 1, cancel_reason = ?, "
                        "cancel_message = ? WHERE id = ? AND status = 'running'",
                        (why, text, job_id),
                    )
                requested.append(job_id)
                if row["owner"]:
                    owners.add(row["owner"])
            else:
                finished.append(job_id)
                continue
            if cascade:
                todo.extend(
                    (child[0], "parent", f"its parent job {job_id} was cancelled")
                    for child in conn.execute(
                        "SELECT id FROM jobs WHERE parent = ? AND status IN ('queued', 'running')",
                        (job_id,),
                    )
                )
        return CancelOutcome(tuple(cancelled), tuple(requested), tuple(finished), tuple(owners))

    # -- reading ----------------------------------------------------------------------------
    def get(self, job_id: int) -> JobRecord | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return None if row is None else _record(row)

    def status_of(self, job_id: int) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def list_jobs(
        self,
        *,
        status: Sequence[str] = (),
        pattern: str | None = None,
        ids: Sequence[int] = (),
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[JobRecord]:
        clauses: list[str] = []
        params: list[Any] = []
        if status:
            clauses.append(f"status IN ({','.join('?' * len(status))})")
            params.extend(status)
        if pattern is not None:
            clauses.append("name_matches(name, ?)")
            params.append(pattern)
        if ids:
            clauses.append(f"id IN ({','.join('?' * len(ids))})")
            params.extend(ids)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "DESC" if newest_first else "ASC"
        tail = f" LIMIT {int(limit)}" if limit is not None else ""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY id {order}{tail}", params
            ).fetchall()
        return [_record(row) for row in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT status, COUNT(*) FROM jobs GROUP BY status"
            ).fetchall()
        counts = {status.value: 0 for status in JobStatus}
        counts.update({row[0]: row[1] for row in rows})
        return counts

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
        """Move up to ``limit`` queued jobs to ``running`` for ``owner``, priority first.

        Jobs whose task no ``allow`` pattern matches fail here (refused at run time).
        Returns the claimed jobs and how many were refused.
        """
        from ._model import task_allowed

        claimed: list[ClaimedJob] = []
        refused = 0
        now = time.time()
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT id, task, args, kwargs, name, timeout, parent FROM jobs "
                "WHERE status = 'queued' ORDER BY priority DESC, id LIMIT ?",
                (limit,),
            ).fetchall()
            for row in rows:
                if not task_allowed(row["task"], allow):
                    conn.execute(
                        "UPDATE jobs SET status = 'failed', ended_at = ?, error = ? "
                        "WHERE id = ? AND status = 'queued'",
                        (
                            now,
                            f"TaskNotAllowed: task {row['task']!r} matches none of the "
                            f"server's --allow patterns {list(allow)}",
                            row["id"],
                        ),
                    )
                    refused += 1
                    continue
                cursor = conn.execute(
                    "UPDATE jobs SET status = 'running', owner = ?, attempts = attempts + 1, "
                    "started_at = ?, ended_at = NULL WHERE id = ? AND status = 'queued'",
                    (owner, now, row["id"]),
                )
                if cursor.rowcount == 1:
                    claimed.append(
                        ClaimedJob(
                            row["id"],
                            row["task"],
                            row["args"],
                            row["kwargs"],
                            row["name"],
                            row["timeout"],
                            row["parent"],
                        )
                    )
        return claimed, refused

    def cancel_requests(self, owner: str) -> list[tuple[int, str | None]]:
        """Running jobs of ``owner`` whose cancellation was requested: (id, message)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, cancel_message FROM jobs WHERE status = 'running' AND owner = ? "
                "AND cancel_requested = 1",
                (owner,),
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def record_outcomes(self, owner: str, outcomes: Sequence[Outcome]) -> list[int]:
        """Store finished jobs (one transaction). Returns the ids of cancelled jobs whose
        descendants must be cancelled too."""
        now = time.time()
        cascade: list[int] = []
        with self.transaction() as conn:
            for out in outcomes:
                where, params = where_source(out.status)
                cursor = conn.execute(
                    "UPDATE jobs SET status = ?, ended_at = ?, result = ?, error = ?, "
                    "traceback = ?, partial_result = COALESCE(?, partial_result), "
                    "cancel_reason = COALESCE(cancel_reason, ?), "
                    "cancel_message = COALESCE(cancel_message, ?) "
                    f"WHERE id = ? AND owner = ? AND {where}",
                    (
                        out.status,
                        now,
                        out.result,
                        out.error,
                        out.traceback,
                        out.partial_result,
                        out.cancel_reason,
                        out.cancel_message,
                        out.id,
                        owner,
                        *params,
                    ),
                )
                if cursor.rowcount and out.status == "cancelled":
                    cascade.append(out.id)
        return cascade

    def cascade_cancel(self, parents: Sequence[int]) -> CancelOutcome:
        """Cancel the unfinished descendants of jobs that ended cancelled."""
        with self.transaction() as conn:
            children = [
                row[0]
                for parent in parents
                for row in conn.execute(
                    "SELECT id FROM jobs WHERE parent = ? AND status IN ('queued', 'running')",
                    (parent,),
                )
            ]
            outcome = self._cancel_locked(conn, children, "parent", None, True)
        return outcome

    def save_progress(self, updates: dict[int, tuple[str, str, str | None]]) -> None:
        """Store the last progress (message, metadata JSON, partial JSON) of running jobs."""
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE jobs SET progress_message = ?, progress = ?, "
                "partial_result = COALESCE(?, partial_result) WHERE id = ? AND status = 'running'",
                [(msg, meta, partial, job_id) for job_id, (msg, meta, partial) in updates.items()],
            )

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
        now = time.time()
        with self.transaction() as conn:
            for job_id, partial in jobs:
                conn.execute(
                    "UPDATE jobs SET partial_result = COALESCE(?, partial_result) "
                    "WHERE id = ? AND owner = ? AND status = 'running'",
                    (partial, job_id, owner),
                )
                if requeue:
                    conn.execute(
                        "UPDATE jobs SET status = 'queued', owner = NULL, ended_at = NULL "
                        "WHERE id = ? AND owner = ? AND status = 'running' "
                        "AND cancel_requested = 0",
                        (job_id, owner),
                    )
                conn.execute(
                    "UPDATE jobs SET status = 'cancelled', ended_at = ?, "
                    "cancel_reason = COALESCE(cancel_reason, 'signal'), "
                    "cancel_message = COALESCE(cancel_message, ?) "
                    "WHERE id = ? AND owner = ? AND status = 'running'",
                    (now, message, job_id, owner),
                )

    def settle_orphan_cancel(self, job_id: int, owner: str) -> bool:
        """Mark ``cancelled`` a running job whose cancellation was requested and whose
        server ``owner`` is dead (derived, not read from its row). True if it did.

        Fenced on (owner, status, request): if the server is alive after all, or the job
        finished or moved meanwhile, nothing changes.
        """
        info = next((i for i in self.servers(live_only=False) if i.id == owner), None)
        if info is not None and server_alive(self.path, info.id, info.pid, info.proc_start):
            return False
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET status = 'cancelled', ended_at = ?, "
                "cancel_message = COALESCE(cancel_message, ?) "
                "WHERE id = ? AND owner = ? AND status = 'running' AND cancel_requested = 1",
                (time.time(), f"job {job_id} was cancelled; its server had died", job_id, owner),
            )
        return cursor.rowcount == 1

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
        now = time.time()
        with self.transaction() as conn:
            for info in dead:
                row = conn.execute(
                    "SELECT stopped_at FROM servers WHERE id = ?", (info.id,)
                ).fetchone()
                if row is None or row[0] is not None:
                    continue  # another server recovered it first
                for job in conn.execute(
                    "SELECT id, attempts, cancel_requested FROM jobs "
                    "WHERE status = 'running' AND owner = ?",
                    (info.id,),
                ).fetchall():
                    if job["cancel_requested"]:  # a cancel requested meanwhile wins
                        new = "cancelled"
                    elif job["attempts"] < max_attempts:
                        new = "queued"
                    else:
                        new = "interrupted"
                    conn.execute(
                        "UPDATE jobs SET status = ?, owner = CASE WHEN ? = 'queued' THEN NULL "
                        "ELSE owner END, ended_at = CASE WHEN ? = 'queued' THEN NULL ELSE ? END, "
                        "error = CASE WHEN ? = 'interrupted' THEN ? ELSE error END "
                        "WHERE id = ? AND status = 'running'",
                        (
                            new,
                            new,
                            new,
                            now,
                            new,
                            f"server {info.id} (pid {info.pid}) died while running it, "
                            f"after {job['attempts']} attempt(s)",
                            job["id"],
                        ),
                    )
                    counts[new] += 1
                conn.execute(
                    "UPDATE servers SET stopped_at = ?, stop_reason = 'died' WHERE id = ?",
                    (now, info.id),
                )
        for info in dead:
            remove_fifo(self.path, info.id)
        return counts


def _json_list(items: Iterable[str]) -> str:
    from ._model import encode_json

    return encode_json(list(items), "list")


def _record(row: sqlite3.Row) -> JobRecord:
    """A stored row as a record. A damaged row (a value no cancelpool wrote: JSON that
    does not decode, an unknown status) still becomes a record, shown as ``failed``
    with what is wrong in ``error``, so one bad row never hides the others."""
    damage: list[str] = []

    def json_field(column: str, default: Any = None) -> Any:
        try:
            return decode_json(row[column])
        except (ValueError, TypeError):
            damage.append(f"{column} is not JSON")
            return default

    try:
        status = JobStatus(row["status"])
    except ValueError:
        damage.append(f"unknown status {str(row['status'])[:40]!r}")
        status = JobStatus.FAILED
    args = json_field("args", [])
    kwargs = json_field("kwargs", {})
    record = JobRecord(
        id=row["id"],
        task=row["task"],
        args=args if isinstance(args, list) else [args],
        kwargs=kwargs if isinstance(kwargs, dict) else {},
        name=row["name"],
        priority=row["priority"],
        timeout=row["timeout"],
        parent=row["parent"],
        status=status,
        owner=row["owner"],
        attempts=row["attempts"],
        submitted_at=row["submitted_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        progress_message=row["progress_message"],
        progress=json_field("progress"),
        result=json_field("result"),
        partial_result=json_field("partial_result"),
        error=row["error"],
        traceback=row["traceback"],
        cancel_requested=bool(row["cancel_requested"]),
        cancel_reason=row["cancel_reason"],
        cancel_message=row["cancel_message"],
    )
    if not damage:
        return record
    note = f"damaged row: {'; '.join(damage)}"
    return dataclasses.replace(record, error=f"{note} ({record.error})" if record.error else note)


#: The SQLite store under its former name.
Store = SQLiteStore

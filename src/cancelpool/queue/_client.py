"""``Queue``: the producer's side of the durable queue, usable from any process."""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import _tracing
from ._exceptions import InvalidJob, JobNotFinished, TaskNotAllowed
from ._model import (
    MAX_ARGS_BYTES,
    JobRecord,
    JobStatus,
    check_job_id,
    check_limit,
    check_message,
    check_name,
    check_pattern,
    check_priority,
    check_seconds,
    check_task,
    check_timeout,
    encode_json,
    task_allowed,
)

if TYPE_CHECKING:
    from ._protocol import Store
    from ._records import NodeInfo
    from ._store import CancelOutcome, ServerInfo

#: How long a producer trusts its list of live servers (for the allow-list check and
#: wake-ups) before reading it again. Longer saves a query per submit; shorter notices
#: a newly started server sooner (it polls the db anyway, so nothing is lost).
SERVER_CACHE_SECONDS = 1.0
#: ``wait()`` polls the job's status with a back-off from the first to the last value:
#: quick results are seen quickly, long jobs cost few queries.
WAIT_POLL_FIRST = 0.002
WAIT_POLL_MAX = 0.1
#: How often ``wait()`` derives whether a live server can finish the job (a query of the
#: servers table, a process lookup and a FIFO open per server). Shorter notices a dead
#: server sooner; longer costs less.
LIVENESS_CHECK_INTERVAL = 0.25
#: How long a job must stay unserved before ``wait(need_server=True)`` gives up. It
#: covers a server that is still starting (it registers after its pool is up, about a
#: second) and the 2 s a live server takes to take over the jobs of a dead one; longer
#: makes the user wait longer to hear that nothing runs their job.
NO_SERVER_GRACE = 3.0


def _check_status(status: object) -> str:
    try:
        if not isinstance(status, str):
            raise ValueError(status)
        return JobStatus(status).value
    except ValueError:
        choices = ", ".join(s.value for s in JobStatus)
        raise InvalidJob(f"status {status!r} is not one of {choices}") from None


@dataclass(frozen=True)
class QueueStatistics:
    """Jobs per status and the live servers, at one moment."""

    queued: int
    running: int
    completed: int
    failed: int
    cancelled: int
    interrupted: int
    servers: tuple[ServerInfo, ...]

    @property
    def total(self) -> int:
        return (
            self.queued
            + self.running
            + self.completed
            + self.failed
            + self.cancelled
            + self.interrupted
        )


class Queue:
    """A durable job queue in a SQLite file or a PostgreSQL database, drained by
    ``cancelpool serve`` processes (one machine, or several nodes on PostgreSQL).

    Every method commits before it returns, so jobs survive the death of any process.
    Safe to share between threads; open one per process.

    On PostgreSQL a connection that was cut off (a restarted server, a terminated
    backend) is replaced on the next call, which is then run again once: reads and
    idempotent writes always, other writes (``submit``, ``cancel``) only if the
    connection broke before their transaction was committed. A connection lost during
    the commit itself raises ``QueueUnavailable`` (the job may or may not have been
    queued), as does a database that stays unreachable.

    Args:
        path: the database file (default: ``$CANCELPOOL_DB`` or
            ``~/.local/state/cancelpool/queue.db``). Created (0600, in a 0700
            directory) if missing. A ``postgresql://user:password@host/db`` URL selects
            the PostgreSQL store (``pip install 'cancelpool[postgres]'``); its password
            is never printed (``path`` and ``repr`` show the URL without it).
        pg_schema: the PostgreSQL schema of the queue's tables (default:
            ``$CANCELPOOL_PG_SCHEMA`` or ``cancelpool``); ignored for SQLite.
        create: with False, a path that holds no queue raises ``QueueFileError`` and
            nothing is created (what the read-only CLI verbs use).

    Raises:
        QueueFileError: the path is empty, a directory, a device, not a SQLite file, a
            database of something else, or its files or directory belong to another
            user or are writable by group or others (the message says how to fix it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        create: bool = True,
        pg_schema: str | None = None,
    ) -> None:
        from ._protocol import open_store
        from ._store import default_db_target

        # The raw text reaches the store: Path() would drop a trailing "/" that says
        # "this is a directory", and the "//" of a URL.
        target = path if path is not None else default_db_target()
        self._store: Store = open_store(target, create=create, pg_schema=pg_schema)
        self.path: Path | str = (
            self._store.display if self._store.kind != "sqlite" else Path(target)
        )
        self._servers: tuple[ServerInfo, ...] = ()
        self._servers_at = -SERVER_CACHE_SECONDS
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        """Close the database connection."""
        self._store.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Queue {self.path}>"

    @property
    def store(self) -> Store:
        """The underlying store (for the CLI and tests)."""
        return self._store

    def live_servers(self, *, refresh: bool = False) -> tuple[ServerInfo, ...]:
        """Servers running on this database (cached for a second)."""
        with self._lock:
            now = time.monotonic()
            if refresh or now - self._servers_at >= SERVER_CACHE_SECONDS:
                self._servers = tuple(self._store.servers(live_only=True))
                self._servers_at = now
            return self._servers

    def _wake(self, owners: Iterable[str] | None = None) -> None:
        if self._store.kind != "sqlite":
            return  # PostgreSQL: the store's write notified the nodes as it committed
        from ._liveness import poke_server

        local: Any = self._store
        wanted = None if owners is None else set(owners)
        servers = self.live_servers()
        if wanted is not None and not wanted <= {info.id for info in servers}:
            servers = self.live_servers(refresh=True)  # a server newer than our cache
        for info in servers:
            if wanted is None or info.id in wanted:
                poke_server(local.path, info.id)

    # -- producing ----------------------------------------------------------------------------
    def submit(
        self,
        task: str,
        /,
        *args: Any,
        name: str | None = None,
        timeout: float | timedelta | None = None,
        priority: int = 0,
        parent: int | None = None,
        **kwargs: Any,
    ) -> int:
        """Queue ``task(*args, **kwargs)``; returns the job id.

        Args:
            task: import path ``package.module:function`` of an async or plain function.
            name: a label for ``cancel_all(name_pattern=...)`` (letters, digits, ``_.:@/+=,-``).
            timeout: seconds (or a timedelta, at most a year) the job may run once
                started; then it is cancelled.
            priority: higher runs first; equal priorities run in submission order.
            parent: id of a parent job: cancelling it cancels this one too.

        Arguments must be JSON data that comes back unchanged: NaN, infinities, bytes,
        sets, non-string dict keys and other objects are refused, naming where they are
        (``args[1]``, ``kwargs['x'][0]``); tuples are accepted and come back as lists.

        Raises:
            InvalidJob: a malformed task path, name or argument, arguments that are not
                such JSON data, nested deeper than 64 levels or larger than 1 MiB
                encoded, a timeout that is not finite seconds > 0, an unknown parent.
            TaskNotAllowed: servers are running and none allows this task.
        """
        return self._submit(task, list(args), kwargs, name, timeout, priority, parent)

    def _submit(
        self,
        task: str,
        args: list[Any],
        kwargs: dict[str, Any],
        name: str | None,
        timeout: float | timedelta | None,
        priority: int,
        parent: int | None,
    ) -> int:
        check_task(task)
        check_name(name)
        timeout = check_timeout(timeout)
        check_priority(priority)
        if parent is not None:
            check_job_id(parent)
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
            raise InvalidJob("the arguments must be a list and the keyword arguments a dict")
        args_json = encode_json(list(args), "args", MAX_ARGS_BYTES)
        kwargs_json = encode_json(kwargs, "kwargs", MAX_ARGS_BYTES)
        if len(args_json) + len(kwargs_json) > MAX_ARGS_BYTES:
            raise InvalidJob(
                f"the arguments are {len(args_json) + len(kwargs_json)} bytes of JSON; "
                f"the limit is {MAX_ARGS_BYTES} bytes"
            )
        servers = self.live_servers()
        if servers and not any(task_allowed(task, info.allow) for info in servers):
            patterns = sorted({p for info in servers for p in info.allow})
            raise TaskNotAllowed(
                f"task {task!r} matches none of the running servers' --allow patterns "
                f"({', '.join(patterns)}); start a server with --allow for it"
            )
        job_id = self._store.submit(
            task,
            args_json,
            kwargs_json,
            name=name,
            priority=priority,
            timeout=timeout,
            parent=parent,
            # The submitter's trace goes on through the node to the worker.
            trace_context=_tracing.capture(),
        )
        self._wake()
        return job_id

    def cancel(self, *job_ids: int, message: str | None = None) -> int:
        """Cancel jobs (and their descendants) by id; returns how many were cancelled.

        Queued jobs are cancelled at once and never run; for running jobs, the request is
        committed and their servers woken, which cancel them through the pool within
        milliseconds. Finished jobs are left alone (not counted).

        Raises:
            JobNotFound: an id is unknown (nothing is cancelled).
        """
        return self.cancel_jobs(job_ids, message=message).count

    def cancel_jobs(
        self,
        job_ids: Iterable[int] = (),
        *,
        name_pattern: str | None = None,
        message: str | None = None,
    ) -> CancelOutcome:
        """Like :meth:`cancel` / :meth:`cancel_all`, returning what happened to each job."""
        if isinstance(job_ids, (str, bytes)) or not isinstance(job_ids, Iterable):
            raise InvalidJob(f"job ids must be an iterable of integers, not {job_ids!r}")
        ids = [check_job_id(job_id) for job_id in job_ids]
        if name_pattern is not None:
            check_pattern(name_pattern)
        check_message(message)
        outcome = self._store.request_cancel(
            ids, pattern=name_pattern, reason="manual", message=message
        )
        if outcome.owners:
            self._wake(outcome.owners)
        return outcome

    def cancel_all(self, name_pattern: str = "*", *, message: str | None = None) -> int:
        """Cancel every unfinished job whose name matches the glob ``name_pattern``
        (and their descendants); returns how many were cancelled."""
        return self.cancel_jobs(name_pattern=name_pattern, message=message).count

    # -- reading ------------------------------------------------------------------------------
    def get(self, job_id: int) -> JobRecord | None:
        """The job as stored now, or None if there is no such job."""
        return self._store.get(check_job_id(job_id))

    def list(
        self,
        status: JobStatus | str | Iterable[JobStatus | str] | None = None,
        name_pattern: str | None = None,
        *,
        limit: int | None = None,
    ) -> list[JobRecord]:
        """Jobs in submission order, filtered by status(es) and name pattern."""
        if status is None:
            statuses: tuple[str, ...] = ()
        elif isinstance(status, (str, JobStatus)):
            statuses = (_check_status(status),)
        elif isinstance(status, Iterable):
            statuses = tuple(_check_status(s) for s in status)
        else:
            raise InvalidJob(f"status must be a status or several, not {status!r}")
        if name_pattern is not None:
            check_pattern(name_pattern)
        limit = check_limit(limit)
        return self._store.list_jobs(status=statuses, pattern=name_pattern, limit=limit)

    def wait(
        self, job_id: int, timeout: float | None = None, *, need_server: bool = False
    ) -> JobRecord:
        """Block until the job has finished; returns its record.

        A job whose cancellation was requested and whose server died is marked
        ``cancelled`` here (its partial result kept) rather than waited for: it can never
        report back.

        Args:
            timeout: seconds to wait (None: no limit).
            need_server: give up with ``NoLiveServer`` once no live server can finish
                the job for ``NO_SERVER_GRACE`` seconds (none runs on this queue, none
                allows the task, or it ran on a server that died and nobody is left to
                take it over). Without it, ``wait`` keeps waiting for a server to start.

        Raises:
            JobNotFound: no such job.
            JobNotFinished: it has not finished within ``timeout`` seconds.
            NoLiveServer: ``need_server`` and nothing can finish the job.
        """
        waiting = Waiting(job_id, timeout, need_server)
        while True:
            status, record, reason = poll_job(job_id, waiting.check_due(), self)
            if record is not None:
                return record
            time.sleep(waiting.pause(status, reason))

    def unserved_reason(self, job_id: int) -> str | None:
        """Why no live server can finish this unfinished job, or None if one can.

        Derived each call from the processes and FIFOs of the registered servers (a dead
        or zombie server does not count). As a side effect, a job whose cancellation was
        requested and whose server died is marked ``cancelled`` (it can never stop
        itself), so the next status read finds it finished.
        """
        job = self._store.get(check_job_id(job_id))
        if job is None or job.finished:
            return None
        servers = self.live_servers(refresh=True)
        allowing = [info for info in servers if task_allowed(job.task, info.allow)]
        where = f"the queue {self._store.display}"
        db_arg = shlex.quote(self._store.display) if self._store.kind == "sqlite" else "URL"
        start = (
            f"start one: cancelpool serve --db {db_arg} "
            f"--allow {shlex.quote(_module_of(job.task) + ':*')}"
        )
        if job.status is JobStatus.QUEUED:
            if allowing:
                return None
            if servers:
                return (
                    f"job {job_id} is queued, but none of the live servers of {where} "
                    f"allows its task {job.task!r}; {start}"
                )
            return f"job {job_id} is queued and no live server serves {where}; {start}"
        if job.owner is not None and any(info.id == job.owner for info in servers):
            return None
        if job.cancel_requested and job.owner is not None:
            self._store.settle_orphan_cancel(job_id, job.owner)
            return None
        if allowing:
            return None  # a live server takes the dead one's jobs over within seconds
        return (
            f"job {job_id} was running on server {job.owner}, which is no longer alive, and "
            f"no live server of {where} can take it over; {start}"
        )

    def nodes(self) -> tuple[NodeInfo, ...]:
        """The live nodes (servers): id, host, pid, label, running jobs, heartbeat age."""
        return tuple(self._store.nodes())

    def statistics(self) -> QueueStatistics:
        """Jobs per status and the live servers."""
        counts = self._store.counts()
        return QueueStatistics(
            queued=counts["queued"],
            running=counts["running"],
            completed=counts["completed"],
            failed=counts["failed"],
            cancelled=counts["cancelled"],
            interrupted=counts["interrupted"],
            servers=self.live_servers(refresh=True),
        )


def _module_of(task: str) -> str:
    return task.partition(":")[0]


class Waiting:
    """When ``Queue.wait`` and ``AsyncQueue.wait`` read a job again, when they ask
    whether a live server can still finish it, and when they give up: the one policy
    of both, which only does the sleeping its own way."""

    def __init__(self, job_id: int, timeout: float | None, need_server: bool) -> None:
        self.job_id = check_job_id(job_id)
        self.timeout = check_seconds(timeout, "timeout")
        start = time.monotonic()
        self._deadline = None if self.timeout is None else start + self.timeout
        self._need_server = need_server
        self._pause = WAIT_POLL_FIRST
        self._next_check = start
        self._checking = False
        self._unserved_since: float | None = None

    def check_due(self) -> bool:
        """Whether the next poll also asks why nothing can serve the job."""
        self._checking = time.monotonic() >= self._next_check
        return self._checking

    def pause(self, status: str, unserved: str | None) -> float:
        """Seconds to sleep after a poll that found the job ``status`` (not finished)
        and, when the poll checked, why nothing can serve it (None: something can).

        Raises:
            NoLiveServer: ``need_server`` and nothing could serve the job for
                ``NO_SERVER_GRACE`` seconds.
            JobNotFinished: the timeout has passed.
        """
        from ._exceptions import NoLiveServer

        now = time.monotonic()
        if self._checking:
            self._next_check = now + LIVENESS_CHECK_INTERVAL
            if unserved is None:
                self._unserved_since = None
            elif self._unserved_since is None:
                self._unserved_since = now
            elif self._need_server and now - self._unserved_since >= NO_SERVER_GRACE:
                raise NoLiveServer(unserved)
        pause = self._pause
        self._pause = min(pause * 2, WAIT_POLL_MAX)
        if self._deadline is not None:
            remaining = self._deadline - now
            if remaining <= 0:
                raise JobNotFinished(f"job {self.job_id} is still {status} after {self.timeout} s")
            pause = min(pause, remaining)
        return pause


def poll_job(
    job_id: int, check_liveness: bool, queue: Queue
) -> tuple[str, JobRecord | None, str | None]:
    """One poll of a waited-for job: its status, its record once finished, and (when
    ``check_liveness``) why no live server can finish it.

    Raises:
        JobNotFound: no such job.
    """
    from ._exceptions import JobNotFound

    status = queue.store.status_of(job_id)
    if status is None:
        raise JobNotFound(f"no job with id {job_id}")
    if JobStatus(status).finished:
        record = queue.store.get(job_id)
        assert record is not None
        return status, record, None
    return status, None, queue.unserved_reason(job_id) if check_liveness else None

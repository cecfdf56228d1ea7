"""``AsyncQueue``: the producer's API of :class:`~cancelpool.queue.Queue` as coroutines,
for async code (FastAPI/Starlette handlers, asyncio or trio programs).

How a call runs::

    caller task                      worker thread (at most ``connections`` of them)
    -------------------------        ------------------------------------------------
    await aq.submit(...)
      wait for the limiter  ------>  take an idle Queue (one connection) or open one
      (async, cancellable)           Queue.submit(...): one transaction, committed
      <------------------ result --  put the Queue back (or close it: aclose() ran)

Why threads and not a native async driver: the queue's SQL, its fencing and its checks
live once, in the synchronous stores (``_store``, ``_pgstore``). ``sqlite3`` has no
async driver (aiosqlite is a thread too), and an async copy of the PostgreSQL store on
psycopg's ``AsyncConnection`` would be a second implementation of every statement, free
to drift from the first. A worker thread per call, bounded by a
:class:`anyio.CapacityLimiter`, keeps one implementation and never blocks the loop.

Cancellation: a call waiting for the limiter is cancelled at once. A call whose store
call already runs in a thread is *not* abandoned: that one transaction commits or rolls
back as a whole (no half-written row, no thread or connection left running behind the
caller's back), the call returns its result (a submitted job's id is not lost), and the
cancel is raised at the caller's next checkpoint. That holds for asyncio's own
cancellation too (``task.cancel()``, ``asyncio.wait_for``, ``asyncio.timeout``), which
goes through anyio's shielded scopes: the call then waits for its thread itself. A store
call is short unless the
database holds it on a lock (SQLite: at most its 30 s busy timeout; PostgreSQL: until
the lock is released); waits (:meth:`AsyncQueue.wait`, :meth:`AsyncQueue.watch`) sleep
on the event loop between short queries, so they stop within one query.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from ._client import Queue, QueueStatistics, Waiting, poll_job
from ._exceptions import InvalidJob, JobNotFound, QueueError
from ._model import JobRecord, JobStatus, check_job_id, check_pattern, check_seconds

if TYPE_CHECKING:
    from ._records import NodeInfo
    from ._store import CancelOutcome, ServerInfo

T = TypeVar("T")

#: Connections (and so worker threads) an ``AsyncQueue`` opens at most. More lets more
#: calls run at once (PostgreSQL serves them in parallel; SQLite in WAL mode reads in
#: parallel and serializes writes); fewer holds fewer connections and threads. Calls
#: beyond it wait, cancellably, on the event loop.
DEFAULT_CONNECTIONS = 4
#: How often :meth:`AsyncQueue.watch` reads its jobs when none has changed. Shorter shows
#: progress sooner; longer costs fewer queries.
WATCH_INTERVAL = 0.1


@dataclass(frozen=True)
class ConnectionStatistics:
    """An :class:`AsyncQueue`'s connections at one moment."""

    opened: int  #: connections open (idle or in use)
    idle: int  #: open and waiting for a call
    running: int  #: calls running in a worker thread now
    waiting: int  #: calls waiting for a connection (on the event loop)


class AsyncQueue:
    """The durable queue of :class:`~cancelpool.queue.Queue`, every method a coroutine.

    Open it with ``async with AsyncQueue(path) as queue:`` (which opens the first
    connection, so a bad path fails there) or use it directly and call :meth:`aclose`;
    connections are opened on demand, in a worker thread, up to ``connections``. Works
    on asyncio and trio. Safe to share between the tasks of one event loop.

    Every method takes the arguments of the ``Queue`` method of the same name, checks
    them the same way and raises the same errors. Cancelling a call (a timeout, a client
    that hung up) is safe at any point: a call still waiting for a connection stops at
    once; one whose query runs finishes it (committed or rolled back as a whole),
    returns its result and leaves the cancel to the caller's next checkpoint; a wait
    stops at its next sleep.

    Args:
        path: the database file or ``postgresql://`` URL (default: ``$CANCELPOOL_DB``).
        create: with False, a path that holds no queue raises ``QueueFileError``.
        pg_schema: the PostgreSQL schema of the queue's tables.
        connections: connections (worker threads) opened at most, >= 1.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        create: bool = True,
        pg_schema: str | None = None,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
            raise ValueError(f"connections must be an integer >= 1, not {connections!r}")
        self._open = partial(Queue, path, create=create, pg_schema=pg_schema)
        self._limiter = anyio.CapacityLimiter(connections)
        # The worker threads' own limiter: never waited on while ``_limiter`` is held
        # (a call holds that until its thread has returned), so not the default one
        # shared with every other ``to_thread`` user of the program.
        self._threads = anyio.CapacityLimiter(connections)
        # Guards the idle list and the counters: touched by worker threads.
        self._lock = threading.Lock()
        self._idle: list[Queue] = []
        self._opened = 0
        self._closed = False
        self._path: Path | str | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> AsyncQueue:
        await self._call(lambda queue: None)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the idle connections now and each busy one when its call returns.

        Later calls raise ``QueueError``. Cancelling ``aclose`` leaves the connections it
        had not closed yet to be closed when the object is collected (it is shielded
        for the short close itself).
        """
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._opened -= len(idle)
        if idle:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_close_all, idle)

    @property
    def path(self) -> Path | str | None:
        """The database as ``Queue.path`` shows it (None until a connection opened)."""
        return self._path

    def __repr__(self) -> str:
        return f"<AsyncQueue {self._path if self._path is not None else '(not opened)'}>"

    def connection_statistics(self) -> ConnectionStatistics:
        """The connections open and idle, the calls running in threads and those
        waiting for one, now."""
        with self._lock:
            return ConnectionStatistics(
                opened=self._opened,
                idle=len(self._idle),
                running=int(self._limiter.borrowed_tokens),
                waiting=self._limiter.statistics().tasks_waiting,
            )

    # -- the thread side ---------------------------------------------------------------------
    def _take(self) -> Queue:
        with self._lock:
            if self._closed:
                raise QueueError("this AsyncQueue is closed")
            if self._idle:
                return self._idle.pop()
        queue = self._open()  # the limiter bounds how many threads get here at once
        with self._lock:
            self._opened += 1
            if self._path is None:
                self._path = queue.path
        return queue

    def _give_back(self, queue: Queue) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(queue)
                return
            self._opened -= 1
        queue.close()

    def _run(self, fn: Callable[[Queue], T]) -> T:
        # Runs in the worker thread: the connection is taken and given back here, so a
        # caller cancelled while this runs cannot lose it.
        queue = self._take()
        try:
            return fn(queue)
        finally:
            self._give_back(queue)

    def _run_hop(self, fn: Callable[[Queue], T], hop: _Hop) -> T | None:
        with hop.lock:
            if hop.given_up:  # its caller was cancelled before this thread began
                return None
            hop.started = True
        try:
            result = self._run(fn)
        except BaseException as exc:
            hop.outcome.set_exception(exc)
            raise
        hop.outcome.set_result(result)
        return result

    async def _call(self, fn: Callable[[Queue], T]) -> T:
        if self._closed:
            raise QueueError("this AsyncQueue is closed")
        hop = _Hop()
        async with self._limiter:  # the wait for a connection: cancelled at once
            try:
                result = await anyio.to_thread.run_sync(
                    self._run_hop, fn, hop, limiter=self._threads
                )
            except anyio.get_cancelled_exc_class():
                # anyio's shield holds against its own cancellation, not against
                # asyncio's (task.cancel(), wait_for, asyncio.timeout): then the thread
                # runs on. Not begun, it never will; begun, wait for it (it holds a
                # connection and its transaction), return its result and raise the
                # cancel at the caller's next checkpoint, as for anyio's cancellation.
                with hop.lock:
                    if not hop.started:
                        hop.given_up = True
                        raise
                try:
                    return await _outlast(hop.outcome)
                finally:
                    _cancel_again()
            return result  # type: ignore[return-value]  # None only when given up

    # -- the Queue API ---------------------------------------------------------------------
    async def live_servers(self, *, refresh: bool = False) -> tuple[ServerInfo, ...]:
        """Servers running on this database (see ``Queue.live_servers``)."""
        return await self._call(lambda q: q.live_servers(refresh=refresh))

    async def submit(
        self,
        task: str,
        /,
        *args: Any,
        name: str | None = None,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109 (the job's, not the call's)
        priority: int = 0,
        parent: int | None = None,
        **kwargs: Any,
    ) -> int:
        """Queue ``task(*args, **kwargs)``; returns the job id (see ``Queue.submit``).

        Cancelled while the insert runs, the insert finishes and the id is returned
        (the job is submitted); the cancel is raised at the caller's next checkpoint.
        Cancelled before it got a connection, nothing is submitted.
        """
        return await self._call(
            lambda q: q.submit(
                task,
                *args,
                name=name,
                timeout=timeout,
                priority=priority,
                parent=parent,
                **kwargs,
            )
        )

    async def cancel(self, *job_ids: int, message: str | None = None) -> int:
        """Cancel jobs (and their descendants) by id; returns how many were cancelled."""
        return await self._call(lambda q: q.cancel(*job_ids, message=message))

    async def cancel_jobs(
        self,
        job_ids: Iterable[int] = (),
        *,
        name_pattern: str | None = None,
        message: str | None = None,
    ) -> CancelOutcome:
        """Like :meth:`cancel` / :meth:`cancel_all`, returning what happened to each job."""
        if isinstance(job_ids, Iterable) and not isinstance(job_ids, (str, bytes)):
            job_ids = tuple(job_ids)  # a generator is consumed here, not in the thread
        return await self._call(
            lambda q: q.cancel_jobs(job_ids, name_pattern=name_pattern, message=message)
        )

    async def cancel_all(self, name_pattern: str = "*", *, message: str | None = None) -> int:
        """Cancel every unfinished job whose name matches the glob ``name_pattern``."""
        return await self._call(lambda q: q.cancel_all(name_pattern, message=message))

    async def get(self, job_id: int) -> JobRecord | None:
        """The job as stored now, or None if there is no such job."""
        return await self._call(lambda q: q.get(job_id))

    async def list(
        self,
        status: JobStatus | str | Iterable[JobStatus | str] | None = None,
        name_pattern: str | None = None,
        *,
        limit: int | None = None,
    ) -> list[JobRecord]:
        """Jobs in submission order, filtered by status(es) and name pattern."""
        if isinstance(status, Iterable) and not isinstance(status, (str, JobStatus)):
            status = tuple(status)
        return await self._call(lambda q: q.list(status, name_pattern, limit=limit))

    async def unserved_reason(self, job_id: int) -> str | None:
        """Why no live server can finish this unfinished job, or None if one can."""
        return await self._call(lambda q: q.unserved_reason(job_id))

    async def nodes(self) -> tuple[NodeInfo, ...]:
        """The live nodes (servers)."""
        return await self._call(lambda q: q.nodes())

    async def statistics(self) -> QueueStatistics:
        """Jobs per status and the live servers (``Queue.statistics``)."""
        return await self._call(lambda q: q.statistics())

    async def wait(
        self,
        job_id: int,
        timeout: float | None = None,  # noqa: ASYNC109 (Queue.wait's: JobNotFinished)
        *,
        need_server: bool = False,
    ) -> JobRecord:
        """Wait until the job has finished; returns its record (see ``Queue.wait``).

        Polls the job's status with the same back-off as ``Queue.wait``, sleeping on
        the event loop between queries: cancelling the wait (a scope, a timeout, a
        client gone) stops it at once, or after the one query in flight; the job is
        not touched.

        Raises:
            JobNotFound: no such job.
            JobNotFinished: it has not finished within ``timeout`` seconds.
            NoLiveServer: ``need_server`` and nothing can finish the job.
        """
        waiting = Waiting(job_id, timeout, need_server)
        while True:
            polled = partial(poll_job, job_id, waiting.check_due())
            status, record, reason = await self._call(polled)
            if record is not None:
                return record
            await anyio.sleep(waiting.pause(status, reason))

    def watch(
        self,
        *job_ids: int,
        name_pattern: str | None = None,
        interval: float = WATCH_INTERVAL,
    ) -> AsyncIterator[JobRecord]:
        """Follow jobs until they have all finished: ``async for record in q.watch(1, 2)``.

        Yields each job's record when it is first read and again whenever it changed
        (status, progress, outcome), the finished state last. Without ids, watches the
        unfinished jobs (matching ``name_pattern``) found by the first read. Iteration
        is a plain async iterator (no async generator to finalize): cancelling or
        leaving the loop leaves nothing behind.

        Raises:
            InvalidJob: a bad id, pattern or interval (at once).
            JobNotFound: an id is unknown (from the first iteration).
        """
        ids = tuple(check_job_id(job_id) for job_id in job_ids)
        if name_pattern is not None:
            check_pattern(name_pattern)
        seconds = check_seconds(interval, "interval")
        if not seconds:
            raise InvalidJob(f"interval must be seconds > 0, not {interval!r}")
        return _Watch(self, ids, name_pattern, seconds)


class _Watch:
    """The iterator :meth:`AsyncQueue.watch` returns."""

    def __init__(
        self, queue: AsyncQueue, ids: tuple[int, ...], pattern: str | None, interval: float
    ) -> None:
        self._queue = queue
        self._ids = ids
        self._pattern = pattern
        self._interval = interval
        self._watched: tuple[int, ...] | None = None
        self._seen: dict[int, JobRecord] = {}
        self._pending: list[JobRecord] = []

    def __aiter__(self) -> _Watch:
        return self

    async def __anext__(self) -> JobRecord:
        while not self._pending:
            if self._watched is not None and all(r.finished for r in self._seen.values()):
                raise StopAsyncIteration
            if self._watched is None:
                self._watched = await self._queue._call(
                    partial(_watched_ids, self._ids, self._pattern)
                )
                if not self._watched:
                    raise StopAsyncIteration
            else:
                await anyio.sleep(self._interval)
            jobs = await self._queue._call(partial(_read_jobs, self._watched))
            for job in jobs:
                if self._seen.get(job.id) != job:
                    self._seen[job.id] = job
                    self._pending.append(job)
        return self._pending.pop(0)


def _watched_ids(ids: tuple[int, ...], pattern: str | None, queue: Queue) -> tuple[int, ...]:
    if ids:
        missing = [i for i in ids if queue.store.status_of(i) is None]
        if missing:
            raise JobNotFound(f"no job with id {', '.join(map(str, missing))}")
        return ids
    jobs = queue.store.list_jobs(status=("queued", "running"), pattern=pattern)
    return tuple(job.id for job in jobs)


def _read_jobs(ids: tuple[int, ...], queue: Queue) -> list[JobRecord]:
    return queue.store.list_jobs(ids=ids)


class _Hop:
    """One call's trip to a worker thread: whether the thread began it, whether its
    caller gave up first, and its outcome (for a caller whose cancel pierced anyio's
    shield)."""

    __slots__ = ("given_up", "lock", "outcome", "started")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = False
        self.given_up = False
        self.outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()


async def _outlast(outcome: concurrent.futures.Future[T]) -> T:
    """Wait for a thread's outcome whatever cancels the waiting task meanwhile (asyncio
    only: the one way here is a native cancel through a shielded scope)."""
    import asyncio

    waited = asyncio.wrap_future(outcome)
    while not waited.done():
        try:
            await asyncio.shield(waited)
        except asyncio.CancelledError:
            continue
    return waited.result()


def _cancel_again() -> None:
    """Raise the swallowed asyncio cancel again at the task's next checkpoint (its
    count of requested cancels unchanged, so ``asyncio.timeout`` still sees its own)."""
    import asyncio

    task = asyncio.current_task()
    if task is not None:
        task.cancel()
        task.uncancel()


def _close_all(queues: list[Queue]) -> None:
    for queue in queues:
        queue.close()


AsyncQueue.__module__ = "cancelpool"

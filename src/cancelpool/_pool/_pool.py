"""``CancelPool``: the supervisor, in the caller's process (public API half).

The caller's threads submit and cancel here; the supervisor thread
(:mod:`._supervisor`) talks to the worker processes. Submitting writes straight to a
worker's pipe when it is idle (one thread hop fewer for latency); otherwise the job
waits in the supervisor's queue and is dispatched in batches. The shared-memory flag
is the truth about cancellation; the doorbell only makes an awaiting worker look.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import itertools
import multiprocessing
import multiprocessing.context
import os
import re
import sys
import threading
import time
import traceback
import types
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from .._core import _validate
from .._core._enums import CancelationReason, OperationStatus
from .._core._exceptions import PoolBroken, PoolClosed
from ..shm import TokenTable
from . import _worker_process
from ._handle import JobHandle
from ._payload import pickle_args, pickle_fn
from ._settings import (
    DEFAULT_CANCEL_GRACE,
    DEFAULT_CONCURRENCY,
    DEFAULT_HISTORY,
    DEFAULT_LOOP_BLOCK_THRESHOLD,
    PoolSettings,
)
from ._supervisor import Supervisor
from ._workers import WorkerProc

T = TypeVar("T")

#: Modules every worker needs, loaded in the fork server (missing ones are skipped).
_WORKER_PRELOAD = ("anyio._backends._asyncio", "uvloop", "msgspec.msgpack")


@dataclass(frozen=True)
class WorkerStatistics:
    """One worker's load."""

    pid: int | None
    running: int
    completed: int
    #: The job blocking this worker's event loop now (see ``loop_block_threshold``),
    #: or None (not blocked, or blocked by code that is no job's own task).
    blocked_by: int | None = None
    #: Seconds the loop has been blocked so far; 0.0 when it turns.
    blocked_for: float = 0.0


@dataclass(frozen=True)
class PoolStatistics:
    """Counters of a pool at one moment."""

    submitted: int
    queued: int
    running: int
    completed: int
    cancelled: int
    failed: int
    workers: tuple[WorkerStatistics, ...]


def _check_reason(reason: CancelationReason) -> None:
    if not isinstance(reason, CancelationReason):
        raise TypeError(f"reason must be a CancelationReason, not {reason!r}")


def _compile_pattern(pattern: str | None) -> Callable[[str], Any] | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise TypeError(f"name_pattern must be a glob string like 'user_42_*', not {pattern!r}")
    if not pattern:
        raise ValueError("name_pattern is empty and would match nothing; use '*' for all jobs")
    return re.compile(fnmatch.translate(pattern)).match


class CancelPool(Supervisor, concurrent.futures.Executor):
    """A pool of worker processes running async (and sync) jobs that can be cancelled.

    Args:
        workers: number of worker processes (default: the number of CPUs).
        concurrency: async jobs one worker runs at once; more wait in the supervisor.
            A plain (sync) function always runs alone in its worker.
        start_method: ``"forkserver"`` (default on Linux), ``"spawn"`` or ``"fork"``.
        capacity: size of the shared-memory token table, i.e. how many jobs can be in
            workers at once (default: enough for every worker's ``concurrency``).
        cancel_grace: seconds a running job may ignore its cancellation before its
            worker is killed (per job: ``submit(..., cancel_grace=...)``).
        max_tasks_per_child: replace a worker after it has run this many jobs.
        max_memory_per_worker: replace a worker (between jobs) once its resident
            memory exceeds this many bytes.
        spare_workers: processes kept started (and warmed with the job functions seen
            so far) to replace a worker that dies or is killed to force a stop, at
            once instead of after a process start. Each costs an idle process.
        history: finished jobs kept for :meth:`get` and :meth:`jobs`.
        use_uvloop: run workers on uvloop when it is installed.
        max_workers: the ``concurrent.futures`` spelling of ``workers``.
        mp_context: a ``multiprocessing`` context (instead of ``start_method``), as
            ``ProcessPoolExecutor`` takes it.
        initializer: called as ``initializer(*initargs)`` once in each worker process
            (a replacement too) before it runs any job; may be an async function. If
            it raises, the pool is broken: its jobs fail with :class:`PoolBroken`
            (the error as ``__cause__``), no worker is restarted, ``submit()`` raises.
        initargs: the arguments of ``initializer`` (a tuple that pickles).
        map_read_ahead: how many jobs :meth:`map` keeps submitted ahead of the result
            being consumed (default ``workers * concurrency``); per call: ``buffersize``.
        cancel_at_exit: at interpreter exit, cancel the jobs still running (reason
            SIGNAL) instead of letting them finish as ``concurrent.futures`` does.
        loop_block_threshold: seconds a worker's event loop may go without turning
            (an async job computing without awaiting) before the job holding it is
            reported: a warning on the ``cancelpool`` logger with its stack,
            ``statistics().workers[i].blocked_by``, ``handle.blocked_stack``. A
            forced stop on that worker then blames the blocker (see
            :class:`WorkerKilled`). None turns the watchdog off.

    Use it as a context manager (``with`` or ``async with``) or call
    :meth:`shutdown`. Leaving the block because of an exception cancels every job
    first (reason SIGNAL for Ctrl-C), so their handles resolve with partial results.
    A pool still running at interpreter exit lets its jobs finish (unless
    ``cancel_at_exit``); Ctrl-C then, or an exit caused by Ctrl-C, cancels them with
    reason SIGNAL. A pool dropped without ``shutdown()`` shuts down once it is garbage.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        start_method: str | None = None,
        capacity: int | None = None,
        cancel_grace: float = DEFAULT_CANCEL_GRACE,
        max_tasks_per_child: int | None = None,
        max_memory_per_worker: int | None = None,
        spare_workers: int = 0,
        history: int = DEFAULT_HISTORY,
        use_uvloop: bool = True,
        max_workers: int | None = None,
        mp_context: multiprocessing.context.BaseContext | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        map_read_ahead: int | None = None,
        cancel_at_exit: bool = False,
        loop_block_threshold: float | None = DEFAULT_LOOP_BLOCK_THRESHOLD,
    ) -> None:
        settings = self._settings = PoolSettings.build(
            workers=workers,
            max_workers=max_workers,
            concurrency=concurrency,
            start_method=start_method,
            mp_context=mp_context,
            capacity=capacity,
            cancel_grace=cancel_grace,
            max_tasks_per_child=max_tasks_per_child,
            max_memory_per_worker=max_memory_per_worker,
            spare_workers=spare_workers,
            history=history,
            use_uvloop=use_uvloop,
            initializer=initializer,
            initargs=initargs,
            map_read_ahead=map_read_ahead,
            cancel_at_exit=cancel_at_exit,
            loop_block_threshold=loop_block_threshold,
        )
        self._mp = settings.context
        if settings.start_method == "forkserver":
            # Imported once in the fork server, so that every worker (a replacement
            # too) starts with them: anyio's asyncio backend alone takes ~20 ms to import.
            self._mp.set_forkserver_preload([_worker_process.__name__, *_WORKER_PRELOAD])
        self._concurrency = settings.concurrency
        self._use_uvloop = settings.use_uvloop
        self._cancel_grace = settings.cancel_grace
        self._max_tasks = settings.max_tasks_per_child
        self._max_memory = settings.max_memory_per_worker
        self._capacity = settings.capacity
        history = settings.history
        workers = settings.workers
        self._lock = threading.RLock()
        # One condition for every handle's result() to wait on (see JobHandle).
        # Reentrant: concurrent.futures.wait() holds the conditions of all the futures
        # it waits for at once, and here they are one and the same.
        self._results = threading.Condition(threading.RLock())
        self._idle = threading.Condition(self._lock)
        self._workers = [WorkerProc(index) for index in range(workers)]
        self._spare_count = settings.spare_workers
        self._spares = []
        self._spares_starting = 0
        # Pickles of job functions seen so far, for spares to load in advance.
        self._warm_functions = deque(maxlen=64)
        self._jobs = {}
        self._queue = deque()
        self._history = deque(maxlen=history)
        self._children_of = {}
        self._requests = {}
        self._ids = itertools.count(1)
        self._fn_cache: weakref.WeakKeyDictionary[Any, tuple[bytes, bool]] = (
            weakref.WeakKeyDictionary()
        )
        self._timers = []
        self._submitted = 0
        self._counts = {
            OperationStatus.COMPLETED: 0,
            OperationStatus.CANCELLED: 0,
            OperationStatus.FAILED: 0,
        }
        self._table = None
        self._state = "new"
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._wake_pending = False
        self._broken: PoolBroken | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        with self._lock:
            if self._state == "running":
                return
            if self._state != "new":
                raise self._closed_error()
            if _interpreter_exiting:
                raise PoolClosed(
                    "the interpreter is shutting down: this CancelPool starts no workers now"
                )
            self._table = TokenTable.create(self._capacity)
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            try:
                for proc in self._workers:
                    self._spawn(proc)
            except BaseException:
                self._kill_all()
                self._close_resources()
                self._state = "closed"
                raise
            self._state = "running"
            self._add_spares()
            self._thread = threading.Thread(
                target=self._supervise, name="cancelpool-supervisor", daemon=True
            )
            self._thread.start()
            _live_pools.add(self)

    def __enter__(self) -> CancelPool:
        self._ensure_started()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            reason = (
                CancelationReason.SIGNAL
                if isinstance(exc, KeyboardInterrupt)
                else CancelationReason.MANUAL
            )
            self._cancel_everything(reason, f"the pool's block exited with {type(exc).__name__}")
        self.shutdown(wait=True)

    async def __aenter__(self) -> CancelPool:
        import anyio.to_thread

        await anyio.to_thread.run_sync(self._ensure_started)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import anyio
        import anyio.to_thread

        # Shielded: the workers are stopped and the memory released even when the
        # task leaving the block is being cancelled.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.__exit__, exc_type, exc, tb)

    def shutdown(
        self,
        wait: bool = True,
        *,
        cancel_futures: bool = False,
        cancel_pending: bool | None = None,
        cancel_running: bool = False,
    ) -> None:
        """Stop accepting jobs, let (or make) the others finish, stop the workers.

        Args:
            wait: block until every job has resolved and every worker has exited.
                With cancellations, that takes at most ``cancel_grace`` plus a small
                bound: stubborn jobs are force-stopped.
            cancel_futures: the ``concurrent.futures`` name of ``cancel_pending``.
            cancel_pending: cancel jobs that have not started (they never run).
            cancel_running: cancel running jobs too (their handles resolve as
                :class:`JobCancelled` with their partial results).
        """
        if cancel_pending is None:
            cancel_pending = cancel_futures
        with self._lock:
            if self._state == "new":
                self._state = "closed"
                return
            if self._state == "running":
                self._state = "closing"
        if cancel_pending or cancel_running:
            self._cancel_everything(
                CancelationReason.MANUAL, "the pool shut down", queued_only=not cancel_running
            )
        with self._lock:  # not while the supervisor thread closes the wake pipe
            self._wake()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            if self._state in ("closed", "broken"):
                _live_pools.discard(self)

    def close(self) -> None:
        """Same as ``shutdown(wait=True)``."""
        self.shutdown(wait=True)

    def terminate(self, message: str = "the pool was terminated") -> None:
        """Stop now: cancel every job and kill every worker process at once.

        Jobs that were queued resolve as :class:`JobCancelled`; running ones resolve as
        :class:`JobCancelled` with ``forced=True`` and their last checkpointed partial
        result (they get no grace period). Returns once every worker has exited and
        the shared memory is released. Harmless on a pool already stopped.
        """
        with self._lock:
            if self._state == "new":
                self._state = "closed"
                return
            if self._state == "running":
                self._state = "closing"
        self._cancel_everything(CancelationReason.MANUAL, message)
        with self._lock:
            for proc in (*self._workers, *self._spares):
                if proc.alive and proc.process is not None and proc.process.exitcode is None:
                    proc.forced_for = proc.forced_for or 0
                    proc.process.kill()
            self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            if self._state in ("closed", "broken"):
                _live_pools.discard(self)

    # -- submitting -----------------------------------------------------------------------
    def _prepare(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[bytes, bytes, bool]:
        # Only module-level functions are cached: they pickle to their name, once and
        # for all. Other callables (partials, objects with state) are pickled anew.
        plain = isinstance(fn, types.FunctionType)
        cached = self._fn_cache.get(fn) if plain else None
        if cached is None:
            cached = (pickle_fn(fn), _validate.is_async_callable(fn))
            if plain:
                self._fn_cache[fn] = cached
                if self._spare_count:
                    with self._lock:
                        self._warm_spares(cached[0])
        args_data = pickle_args(fn, args, kwargs)
        return cached[0], args_data, cached[1]

    def submit(  # type: ignore[override]
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        name: str | None = None,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
        parent: JobHandle[Any] | None = None,
        retries: int = 0,
        cancel_grace: float | None = None,
        **kwargs: Any,
    ) -> JobHandle[Any]:
        """Run ``fn(*args, **kwargs)`` in a worker; returns its :class:`JobHandle`.

        ``fn`` may be an async function (runs in a worker's event loop among other
        jobs) or a plain function (runs alone in a worker, in a thread; it can poll
        ``current_operation().token.check()``). Inside, ``current_operation()`` is the
        job's ``Cancelable`` and ``current_pool()`` submits child jobs.

        Args:
            name: a label for ``cancel_all(name_pattern=...)`` (default: fn's name).
            timeout: seconds the job may run once started; then it is cancelled
                (reason TIMEOUT) in its worker, with a supervisor backstop.
            metadata: free-form data kept on the handle.
            parent: a parent job: cancelling or ending it cancels this one too.
            retries: run the job again (from the start) this many times if its worker
                dies under it.
            cancel_grace: this job's ``cancel_grace`` (see :class:`CancelPool`).

        Raises:
            TypeError: ``fn`` or the arguments cannot be sent to a worker.
            ValueError: a bad timeout, retries or cancel_grace.
            PoolClosed: the pool is shut down.
        """
        timeout = _validate.optional_seconds(timeout, "timeout")
        cancel_grace = _validate.optional_seconds(cancel_grace, "cancel_grace")
        _validate.count(retries, "retries", 0)
        _validate.name(name)
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
        if parent is not None and not isinstance(parent, JobHandle):
            raise TypeError(f"parent must be a JobHandle, not {type(parent).__name__}")
        if parent is not None and parent._pool is not self:
            raise ValueError(f"parent {parent!r} belongs to another CancelPool")
        fn_data, args_data, is_async = self._prepare(fn, args, kwargs)
        if self._state != "running":
            self._ensure_started()
        if name is None:
            name = getattr(fn, "__name__", None)
        with self._lock:
            return self._new_job(
                fn_data,
                args_data,
                is_async,
                name=name,
                timeout=timeout,
                metadata=metadata,
                parent=parent,
                retries=retries,
                cancel_grace=cancel_grace,
            )

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        job_timeout: float | None = None,
        name: str | None = None,
    ) -> Iterator[T]:
        """Like ``Executor.map``: ``fn`` over the items, one job each, results in order.

        Lazy: the iterables are read as results are consumed, keeping at most
        ``buffersize`` jobs submitted ahead (default: the pool's ``map_read_ahead``);
        a result is let go once it has been yielded. ``timeout`` bounds the whole
        iteration from this call on (``TimeoutError`` from ``next()``, as in
        ``concurrent.futures``); ``job_timeout`` bounds each job. A job's exception
        is raised by ``next()``. Leaving the iteration early (or an exception)
        cancels the jobs submitted and not yet consumed. ``chunksize`` is accepted
        and ignored.

        Raises:
            PoolClosed: the pool is shut down (at once, not on the first ``next()``).
        """
        deadline = None
        if timeout is not None:
            deadline = time.monotonic() + _validate.seconds(timeout, "timeout")
        _validate.count(chunksize, "chunksize", 1)
        ahead = self._settings.map_read_ahead
        if buffersize is not None:
            ahead = _validate.count(buffersize, "buffersize", 1)
        job_timeout = _validate.optional_seconds(job_timeout, "job_timeout")
        items = zip(*iterables, strict=False)
        window: deque[JobHandle[Any]] = deque()
        # The first window now, as concurrent.futures submits at once: the jobs start
        # before the first next(), and a closed pool raises here.
        for args in itertools.islice(items, ahead):
            window.append(self.submit(fn, *args, timeout=job_timeout, name=name))
        return self._map_results(fn, items, window, ahead, deadline, job_timeout, name)

    def _map_results(
        self,
        fn: Callable[..., T],
        items: Iterator[tuple[Any, ...]],
        window: deque[JobHandle[Any]],
        ahead: int,
        deadline: float | None,
        job_timeout: float | None,
        name: str | None,
    ) -> Iterator[T]:
        try:
            while window:
                for args in itertools.islice(items, ahead - len(window) + 1):
                    window.append(self.submit(fn, *args, timeout=job_timeout, name=name))
                remaining = None if deadline is None else deadline - time.monotonic()
                # Popped before waiting: once yielded, nothing here holds the result.
                yield _map_result(window.popleft(), remaining)
        finally:
            for handle in window:
                handle.cancel("map() was abandoned")

    # -- cancelling -------------------------------------------------------------------------
    def cancel(
        self,
        job: JobHandle[Any] | int,
        message: str | None = None,
        *,
        reason: CancelationReason = CancelationReason.MANUAL,
    ) -> bool:
        """Cancel one job (and its descendants) by handle or id.

        Returns False if the job is unknown or has already finished. ``reason`` is
        what the job's :class:`JobCancelled` reports (e.g. SIGNAL when a server stops).
        """
        if isinstance(job, bool) or not isinstance(job, (int, JobHandle)):
            raise TypeError(f"cancel() takes a JobHandle or a job id, not {job!r}")
        _check_reason(reason)
        handle = self.get(job) if isinstance(job, int) else job
        if handle is None:
            return False
        return self._cancel_job(handle, reason, message)

    def cancel_all(
        self,
        name_pattern: str | None = None,
        status: OperationStatus | None = None,
        message: str | None = None,
        *,
        reason: CancelationReason = CancelationReason.MANUAL,
    ) -> int:
        """Cancel every live job whose name matches the glob ``name_pattern`` (all if
        None) and whose status is ``status`` (PENDING or RUNNING; any if None).

        Returns how many jobs matched. Queued ones never start; running ones see their
        shared-memory flag at once and their workers are woken; descendants follow.
        """
        match = _compile_pattern(name_pattern)
        if status is not None and not isinstance(status, OperationStatus):
            raise TypeError(f"status must be an OperationStatus, not {status!r}")
        _check_reason(reason)
        with self._lock:
            targets = [
                handle
                for handle in self._jobs.values()
                if (match is None or (handle.name is not None and match(handle.name)))
                and (status is None or handle._status is status)
                and handle._cancel_reason is None
            ]
        return self._cancel_many(targets, reason, message)

    def _cancel_everything(
        self, reason: CancelationReason, message: str, *, queued_only: bool = False
    ) -> int:
        with self._lock:
            targets = [
                handle
                for handle in self._jobs.values()
                if handle._cancel_reason is None and (not queued_only or handle._slot is None)
            ]
        return self._cancel_many(targets, reason, message)

    def _cancel_job(
        self, handle: JobHandle[Any], reason: CancelationReason, message: str | None
    ) -> bool:
        if handle._pool is not self:
            raise ValueError(f"{handle!r} belongs to another pool")
        with self._lock:
            live = handle.id in self._jobs
            count, resolved = self._cancel_locked([handle], reason, message)
        for queued in resolved:
            self._resolve_cancelled(queued)
        # True while the cancellation is under way (asked now or before), False once
        # the job had ended anyway.
        return count > 0 or (live and handle._cancel_reason is not None)

    def _cancel_many(
        self, handles: list[JobHandle[Any]], reason: CancelationReason, message: str | None
    ) -> int:
        with self._lock:
            count, resolved = self._cancel_locked(handles, reason, message)
        for handle in resolved:
            self._resolve_cancelled(handle)
        return count

    # -- registry ---------------------------------------------------------------------------
    def get(self, job_id: int) -> JobHandle[Any] | None:
        """The handle of a live or recently finished job, or None."""
        with self._lock:
            handle = self._jobs.get(job_id)
            if handle is None:
                for old in self._history:
                    if old.id == job_id:
                        return old
            return handle

    def jobs(
        self, name_pattern: str | None = None, status: OperationStatus | None = None
    ) -> list[JobHandle[Any]]:
        """Handles of live jobs and of the finished ones still in the history."""
        match = _compile_pattern(name_pattern)
        with self._lock:
            every = list(self._history) + list(self._jobs.values())
        return [
            handle
            for handle in every
            if (match is None or (handle.name is not None and match(handle.name)))
            and (status is None or handle._status is status)
        ]

    def statistics(self) -> PoolStatistics:
        """Counters: submitted, queued, running, completed, cancelled, failed, per worker."""
        now = time.monotonic()
        with self._lock:
            running = sum(1 for h in self._jobs.values() if h._status is OperationStatus.RUNNING)
            return PoolStatistics(
                submitted=self._submitted,
                queued=len(self._jobs) - running,
                running=running,
                completed=self._counts[OperationStatus.COMPLETED],
                cancelled=self._counts[OperationStatus.CANCELLED],
                failed=self._counts[OperationStatus.FAILED],
                workers=tuple(
                    WorkerStatistics(
                        pid=p.pid,
                        running=len(p.inflight),
                        completed=p.completed,
                        blocked_by=p.blocked.job if p.blocked is not None else None,
                        blocked_for=now - p.blocked_since if p.blocked is not None else 0.0,
                    )
                    for p in self._workers
                ),
            )

    def __repr__(self) -> str:
        return f"<CancelPool workers={len(self._workers)} {self._state} jobs={len(self._jobs)}>"


def _map_result(handle: JobHandle[T], timeout: float | None) -> T:
    try:
        return handle.result(timeout)
    except BaseException:
        handle.cancel("map() was abandoned")
        raise


# Pools that were started and not yet shut down, for the interpreter's exit.
_live_pools: weakref.WeakSet[CancelPool] = weakref.WeakSet()
# Set once the interpreter has begun to exit: no pool starts workers from then on.
_interpreter_exiting = False


def _exiting_on_ctrl_c() -> bool:
    # The interpreter stores the exception that ended the main module before it exits.
    return isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)


def _stop_live_pools() -> None:
    """At interpreter exit: let the jobs of the pools still running finish, as
    ``concurrent.futures`` does, then stop their workers.

    A pool created with ``cancel_at_exit=True``, or every pool when the program ends
    because of Ctrl-C, cancels its jobs first (reason SIGNAL). Ctrl-C while we wait
    cancels what is left and kills the workers.
    """
    global _interpreter_exiting
    _interpreter_exiting = True
    for pool in list(_live_pools):
        try:
            if pool._settings.cancel_at_exit or _exiting_on_ctrl_c():
                pool._cancel_everything(CancelationReason.SIGNAL, "the interpreter is exiting")
            try:
                pool.shutdown(wait=True)
            except KeyboardInterrupt:
                pool._cancel_everything(CancelationReason.SIGNAL, "Ctrl-C at interpreter exit")
                pool.terminate()
        except Exception:
            traceback.print_exc()


# Run by threading._shutdown(), before atexit's handlers and before the interpreter
# stops other threads, as concurrent.futures.process does: so the supervisor thread can
# still resolve the handles, and a submit() in an atexit handler finds the flag set.
threading._register_atexit(_stop_live_pools)  # type: ignore[attr-defined]

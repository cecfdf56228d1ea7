"""``CancelPool``: the supervisor, in the caller's process (public API half).

The caller's threads submit and cancel here; the supervisor thread
(:mod:`._supervisor`) talks to the worker processes. Submitting writes straight to a
worker's pipe when it is idle (one thread hop fewer for latency); otherwise the job
waits in the supervisor's queue and is dispatched in batches. The shared-memory flag
is the truth about cancellation; the doorbell only makes an awaiting worker look.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import fnmatch
import inspect
import itertools
import math
import multiprocessing
import os
import pickle
import re
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

from .._core._enums import CancelationReason, OperationStatus
from .._core._exceptions import PoolClosed
from ..shm import TokenTable
from . import _protocol as proto
from . import _worker
from ._handle import JobHandle
from ._supervisor import Supervisor
from ._workers import WORKER_EXIT_GRACE, WorkerProc

T = TypeVar("T")

#: Jobs one worker runs at once by default. Async jobs are cheap (a task each); higher
#: means fewer jobs wait in the supervisor's queue, lower means fairer spreading of
#: long jobs over workers.
DEFAULT_CONCURRENCY = 256
#: Seconds a running job may ignore its cancellation before its worker is killed.
#: Shorter stops stubborn jobs sooner; longer gives cleanup code (finally blocks,
#: partial results) more room.
DEFAULT_CANCEL_GRACE = 5.0
#: Modules every worker needs, loaded in the fork server (missing ones are skipped).
_WORKER_PRELOAD = ("anyio._backends._asyncio", "uvloop", "msgspec.msgpack")
#: Finished jobs remembered for ``get()`` / ``jobs()``.
DEFAULT_HISTORY = 1000


@dataclass(frozen=True)
class WorkerStatistics:
    """One worker's load."""

    pid: int | None
    running: int
    completed: int


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


def _check_seconds(value: float | None, what: str, *, allow_zero: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, not {value!r}")
    if math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what} must be a finite number of seconds {bound}, not {value!r}")
    return float(value)


def _check_count(value: int | None, what: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, not {value!r}")
    return value


def _check_name(name: str | None) -> None:
    if name is None:
        return
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, not {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"name {name!r} is not valid UTF-8 text; use printable text") from None


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


def _fn_label(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - objects with an async __call__
    )


def pickle_fn(fn: Callable[..., Any]) -> bytes:
    """Pickle a job's function, or raise a TypeError that says what to do."""
    if not callable(fn):
        raise TypeError(f"Cannot submit {fn!r}: it is not callable")
    try:
        return pickle.dumps(fn, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(
            f"Cannot submit {_fn_label(fn)}: job functions must be importable "
            f"module-level functions (pickle failed: {exc})"
        ) from None


def pickle_args(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a job's arguments, or raise a TypeError/ValueError that says what to do."""
    try:
        data = pickle.dumps((args, kwargs), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(
            f"Cannot submit {_fn_label(fn)}: its arguments cannot be pickled ({exc}); "
            "pass plain data or importable objects"
        ) from None
    if len(data) > proto.MAX_PAYLOAD:
        raise ValueError(
            f"Cannot submit {_fn_label(fn)}: its arguments are too large ({len(data):,} "
            f"bytes pickled, the limit is {proto.MAX_PAYLOAD:,}); pass a file path or "
            "another reference to the data instead"
        )
    return data


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

    Use it as a context manager (``with`` or ``async with``) or call
    :meth:`shutdown`. Leaving the block because of an exception cancels every job
    first (reason SIGNAL for Ctrl-C), so their handles resolve with partial results.
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
    ) -> None:
        workers = _check_count(os.cpu_count() or 1 if workers is None else workers, "workers", 1)
        assert workers is not None
        concurrency_ = _check_count(concurrency, "concurrency", 1)
        assert concurrency_ is not None
        methods = multiprocessing.get_all_start_methods()
        if start_method is None:
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        if start_method not in methods:
            raise ValueError(f"start_method must be one of {methods}, not {start_method!r}")
        grace = _check_seconds(cancel_grace, "cancel_grace", allow_zero=True)
        assert grace is not None
        self._mp = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # Imported once in the fork server, so that every worker (a replacement
            # too) starts with them: anyio's asyncio backend alone takes ~20 ms to import.
            self._mp.set_forkserver_preload([_worker.__name__, *_WORKER_PRELOAD])
        self._concurrency = concurrency_
        self._use_uvloop = use_uvloop
        self._cancel_grace = grace
        self._max_tasks = _check_count(max_tasks_per_child, "max_tasks_per_child", 1)
        self._max_memory = _check_count(max_memory_per_worker, "max_memory_per_worker", 1)
        self._capacity = _check_count(
            workers * concurrency_ + 64 if capacity is None else capacity, "capacity", 1
        )
        _check_count(history, "history", 0)
        self._lock = threading.RLock()
        # One condition for every handle's result() to wait on (see JobHandle).
        # Reentrant: concurrent.futures.wait() holds the conditions of all the futures
        # it waits for at once, and here they are one and the same.
        self._results = threading.Condition(threading.RLock())
        self._idle = threading.Condition(self._lock)
        self._workers = [WorkerProc(index) for index in range(workers)]
        self._spare_count = _check_count(spare_workers, "spare_workers", 0) or 0
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

    # -- lifecycle --------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        with self._lock:
            if self._state == "running":
                return
            if self._state != "new":
                raise PoolClosed("this CancelPool is shut down; create a new one to submit jobs")
            assert self._capacity is not None
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
            if self._state == "closed":
                _live_pools.discard(self)

    def close(self) -> None:
        """Same as ``shutdown(wait=True)``."""
        self.shutdown(wait=True)

    # -- submitting -----------------------------------------------------------------------
    def _prepare(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[bytes, bytes, bool]:
        # Only module-level functions are cached: they pickle to their name, once and
        # for all. Other callables (partials, objects with state) are pickled anew.
        plain = isinstance(fn, types.FunctionType)
        cached = self._fn_cache.get(fn) if plain else None
        if cached is None:
            cached = (pickle_fn(fn), _is_async(fn))
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
        timeout = _check_seconds(timeout, "timeout")
        cancel_grace = _check_seconds(cancel_grace, "cancel_grace", allow_zero=True)
        _check_count(retries, "retries", 0)
        _check_name(name)
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
        job_timeout: float | None = None,
        name: str | None = None,
    ) -> Iterator[T]:
        """Like ``Executor.map``: results in order, one job per item.

        ``timeout`` bounds the whole iteration (as in ``concurrent.futures``);
        ``job_timeout`` bounds each job. Leaving the iteration early cancels the
        jobs not yet collected. ``chunksize`` is accepted and ignored.
        """
        handles = [
            self.submit(fn, *items, timeout=job_timeout, name=name)
            for items in zip(*iterables, strict=False)
        ]
        deadline = None if timeout is None else time.monotonic() + timeout

        def results() -> Iterator[T]:
            try:
                for handle in handles:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    yield handle.result(remaining)
            finally:
                for handle in handles:
                    if not handle.done():
                        handle.cancel("map() was abandoned")

        return results()

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
                    WorkerStatistics(pid=p.pid, running=len(p.inflight), completed=p.completed)
                    for p in self._workers
                ),
            )

    def __repr__(self) -> str:
        return f"<CancelPool workers={len(self._workers)} {self._state} jobs={len(self._jobs)}>"


# Pools still running at interpreter exit are stopped hard: their jobs are cancelled,
# their workers killed, their memory released.
_live_pools: weakref.WeakSet[CancelPool] = weakref.WeakSet()


@atexit.register
def _stop_live_pools() -> None:
    for pool in list(_live_pools):
        try:
            pool._cancel_everything(CancelationReason.SIGNAL, "the interpreter is exiting")
            pool.shutdown(wait=False)
            with pool._lock:
                for proc in (*pool._workers, *pool._spares):
                    if proc.process is not None and proc.process.exitcode is None:
                        proc.process.kill()
            # The supervisor thread sees the deaths, resolves the handles and releases
            # every fd and the shared memory; it needs only a moment.
            if pool._thread is not None:
                pool._thread.join(WORKER_EXIT_GRACE)
        except Exception:
            traceback.print_exc()

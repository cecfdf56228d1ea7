"""``CancelPool``: the supervisor, in the caller's process (public API half).

The caller's threads submit and cancel here; the supervisor thread
(:mod:`._supervisor`) talks to the worker processes. Submitting writes straight to a
worker's pipe when it is idle (one thread hop fewer for latency); otherwise the job
waits in the supervisor's queue (taken in without the pool's lock) and is
dispatched in batches. The shared-memory flag
is the truth about cancellation; the doorbell only makes an awaiting worker look.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import functools
import itertools
import multiprocessing
import multiprocessing.context
import re
import time
import types
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .. import _tracing
from .._core import _validate
from .._core._enums import CancelationReason, OperationStatus
from .._core._exceptions import PoolClosed
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
from ._statistics import PoolStatistics as PoolStatistics

if TYPE_CHECKING:
    from .._events import EventCallback
from ._statistics import WorkerStatistics as WorkerStatistics
from ._supervisor import Supervisor

T = TypeVar("T")

#: Modules every worker needs, loaded in the fork server (missing ones are skipped).
_WORKER_PRELOAD = ("anyio._backends._asyncio", "uvloop", "msgspec.msgpack")


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


class CancelPool(concurrent.futures.Executor):
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
        inline: the test mode: run the jobs in this process, in one event-loop thread,
            with the same semantics (pickled arguments, cancellation, timeouts,
            progress, partial results, ``current_operation()``, ``current_pool()``)
            and no worker process (see ``cancelpool._pool._inline`` for the few
            differences: nothing process-related applies, and a job that ignores its
            cancellation is resolved as forced but cannot be killed).

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
        inline: bool = False,
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
        if not isinstance(inline, bool):
            raise TypeError(f"inline must be True or False, not {inline!r}")
        if settings.start_method == "forkserver":
            # Imported once in the fork server, so that every worker (a replacement
            # too) starts with them: anyio's asyncio backend alone takes ~20 ms to import.
            settings.context.set_forkserver_preload([_worker_process.__name__, *_WORKER_PRELOAD])
        # Everything that runs the pool lives in the supervisor, which holds only a
        # weak reference back: a pool dropped without shutdown() is shut down.
        if inline:
            from ._inline import InlineSupervisor

            # The test mode: the same interface, the jobs run in this process.
            self._sup = cast(Supervisor, InlineSupervisor(settings, self))
        else:
            self._sup = Supervisor(settings, self)
        self._fn_cache: weakref.WeakKeyDictionary[Any, tuple[bytes, bool]] = (
            weakref.WeakKeyDictionary()
        )

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> CancelPool:
        self._sup.start()
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
            self._sup.cancel_everything(
                reason, f"the pool's block exited with {type(exc).__name__}"
            )
        self.shutdown(wait=True)

    async def __aenter__(self) -> CancelPool:
        import anyio.to_thread

        await anyio.to_thread.run_sync(self._sup.start)
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
        self._sup.shutdown(wait, cancel_pending=cancel_pending, cancel_running=cancel_running)

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
        self._sup.terminate(message)

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
                if self._settings.spare_workers:
                    self._sup.warm(cached[0])
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
            TypeError: ``fn`` is not callable, or another argument has a bad type.
            pickle.PicklingError: ``fn`` or the arguments cannot be sent to a worker
                (or whatever else pickle raised for them: a lock's ``TypeError``, a
                local function's ``AttributeError``), chained to pickle's own error,
                as ``concurrent.futures`` raises it.
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
        sup = self._sup
        if parent is not None and not sup.owns(parent):
            raise ValueError(f"parent {parent!r} belongs to another CancelPool")
        fn_data, args_data, is_async = self._prepare(fn, args, kwargs)
        if sup.state != "running":
            sup.start()
        if name is None:
            name = getattr(fn, "__name__", None)
        return sup.submit(
            fn_data,
            args_data,
            is_async,
            name=name,
            timeout=timeout,
            metadata=metadata,
            parent=parent,
            retries=retries,
            cancel_grace=cancel_grace,
            trace=_tracing.capture(),
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
        # The generator holds the pool weakly (as the handles do): a pool dropped
        # while its map() iterator lives is still shut down (the jobs submitted so
        # far finish and are yielded; reading more items then raises PoolClosed).
        more = functools.partial(_submit_more, weakref.ref(self), fn, job_timeout, name)
        return _map_results(more, items, window, ahead, deadline)

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
        return self._sup.cancel_job(handle, reason, message)

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
        return self._sup.cancel_matching(match, status, reason, message)

    # -- registry ---------------------------------------------------------------------------
    def get(self, job_id: int) -> JobHandle[Any] | None:
        """The handle of a live or recently finished job, or None."""
        return self._sup.get(job_id)

    def jobs(
        self, name_pattern: str | None = None, status: OperationStatus | None = None
    ) -> list[JobHandle[Any]]:
        """Handles of live jobs and of the finished ones still in the history."""
        match = _compile_pattern(name_pattern)
        return [
            handle
            for handle in self._sup.every_job()
            if (match is None or (handle.name is not None and match(handle.name)))
            and (status is None or handle.status is status)
        ]

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for each lifecycle event of this pool from now on.

        The events (``cancelpool.JobSubmitted``, ``JobStarted``, ``JobProgress``,
        ``JobFinished``, ``JobRetried``, ``WorkerStarted``, ``WorkerDied``,
        ``WorkerRecycled``, ``LoopStalled``) are frozen records, delivered in order on
        the pool's supervisor thread (the event-loop thread of an ``inline`` pool),
        outside the pool's lock, soon after the fact: a callback must be quick, as the
        pool reads no worker's messages while it runs; one that raises is logged and
        the pool and the other subscribers go on. A job's ``JobFinished`` may arrive
        just after its ``result()`` returned. Cancelling a job is reported by its
        ``JobFinished`` (``outcome`` ``cancelled`` or ``forced``, with its reason and
        cancel latency). Nobody subscribed costs the pool nothing but an attribute check.

        Returns:
            A function that ends this subscription (calling it again does nothing).
        """
        return self._sup.subscribe(callback)

    def statistics(self) -> PoolStatistics:
        """Counters: submitted, queued, running, completed, cancelled, failed, per worker."""
        return self._sup.statistics()

    def __repr__(self) -> str:
        return f"<CancelPool workers={self._settings.workers} {self._sup.describe()}>"


def _submit_more(
    pool_ref: weakref.ReferenceType[CancelPool],
    fn: Callable[..., Any],
    job_timeout: float | None,
    name: str | None,
    args: tuple[Any, ...],
) -> JobHandle[Any]:
    pool = pool_ref()
    if pool is None:
        raise PoolClosed("the CancelPool of this map() was dropped and shut down")
    return pool.submit(fn, *args, timeout=job_timeout, name=name)


def _map_results(
    submit: Callable[[tuple[Any, ...]], JobHandle[Any]],
    items: Iterator[tuple[Any, ...]],
    window: deque[JobHandle[Any]],
    ahead: int,
    deadline: float | None,
) -> Iterator[Any]:
    try:
        while window:
            for args in itertools.islice(items, ahead - len(window) + 1):
                window.append(submit(args))
            remaining = None if deadline is None else deadline - time.monotonic()
            # Popped before waiting: once yielded, nothing here holds the result.
            yield _map_result(window.popleft(), remaining)
    finally:
        for handle in window:
            handle.cancel("map() was abandoned")


def _map_result(handle: JobHandle[T], timeout: float | None) -> T:
    try:
        return handle.result(timeout)
    except BaseException:
        handle.cancel("map() was abandoned")
        raise

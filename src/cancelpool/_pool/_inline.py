"""``CancelPool(inline=True)``: the test mode. Jobs run in the caller's process, in one
event-loop thread, with the pool's semantics.

::

    caller threads                         the inline thread (an asyncio loop)
    --------------------------------       -------------------------------------------
    CancelPool facade (unchanged)          per job, as a worker runs it: unpickle,
      submit: pickle fn and args   ---->   Cancelable(token, TimeoutSource), the job's
      cancel: token.cancel_sync    ---->   task; a plain function in op.run_in_thread
      handle.result() / await      <----   resolve: result / exception (remote
                                           traceback as __cause__) / JobCancelled
    force timers (threading.Timer)  --->   a job that ignored its cancel for its
                                           cancel_grace resolves forced=True

What is the same as with worker processes: the facade and its checks (the function and
the arguments are pickled at submit, so what a real pool refuses is refused here; the
job gets copies), ``current_operation()`` (the job's ``Cancelable``), ``current_pool()``
(child jobs, through the worker's own child protocol), cancellation (queued jobs never
start; running ones are cancelled through their token, reason and message kept;
descendants follow with reason PARENT), timeouts, progress (``on_progress``,
``progress()``, metadata that must encode as msgpack), partial results, handles that
are ``concurrent.futures.Future`` objects, statistics and history. What differs: no
process is started, so nothing of ``start_method``, ``max_tasks_per_child``,
``max_memory_per_worker``, ``spare_workers``, ``use_uvloop``, ``loop_block_threshold``
or ``retries`` applies (no worker can die); a job that ignores its cancellation past its
grace resolves as forced (``forced=True``, its last partial result), but its code, which
no process kill can stop here, runs on unobserved until it returns (its thread is a
daemon). Done and progress callbacks run in the inline thread, not a supervisor thread.
Every job shares the caller's process: what one job or the test changes (module globals,
``os.environ``, the working directory, a ``monkeypatch``) every later job sees, where
each worker process has its own; and every job shares one event loop, so an async job
that blocks it (``time.sleep`` in an ``async def``) stalls all the others, their
cancellation included, where a real pool's other workers go on (``workers`` only bounds
how many jobs run at once here). Test such code with ``inline=False``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import logging
import os
import pickle
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import msgspec

from .. import _tracing
from .._core._cancelable import Cancelable
from .._core._enums import CancelationReason, OperationStatus
from .._core._exceptions import CancelationError, JobCancelled, PoolBroken, PoolClosed, PoolError
from .._core._sources import TimeoutSource
from .._core._token import CancelationToken
from .._events import (
    EventHub,
    JobProgress,
    JobStarted,
    JobSubmitted,
    Outcome,
    finished_event,
    job_fields,
)
from . import _protocol as proto
from . import _remote
from ._handle import JobHandle
from ._payload import dump_error, dump_partial, dumps, load_error, load_partial, rewrap
from ._statistics import PoolStatistics, WorkerStatistics

logger = logging.getLogger("cancelpool")

if TYPE_CHECKING:
    from ._settings import PoolSettings
    from ._supervisor import Supervisor
    from ._worker_process import Worker


class _Job:
    """What the inline pool keeps of one job (the handle is its public face)."""

    __slots__ = (
        "abandoned",
        "args",
        "children",
        "counted",
        "deadline",
        "failure",
        "fn",
        "handle",
        "holds_slots",
        "is_async",
        "op",
        "parent",
        "request",
        "resolved",
        "slots",
        "span",
        "started",
        "timer",
        "token",
        "trace",
    )

    def __init__(
        self,
        handle: JobHandle[Any],
        fn: bytes,
        args: bytes,
        is_async: bool,
        parent: _Job | None,
        request: int | None,
        slots: int,
        trace: str | None = None,
    ) -> None:
        self.handle = handle
        self.fn = fn
        self.args = args
        self.is_async = is_async
        self.parent = parent
        self.request = request  # a child submitted by current_pool(): its request id
        self.slots = slots
        self.children: list[_Job] = []
        self.token = CancelationToken()
        self.op: Cancelable | None = None
        self.started = False
        self.resolved = False
        self.abandoned = False  # resolved as forced while its code still runs
        self.failure: BaseException | None = None
        self.timer: threading.Timer | None = None
        self.deadline = 0.0  # when the timer fires (monotonic)
        self.counted = False  # counted as running in the statistics
        self.holds_slots = False  # its share of the pool's capacity is taken
        self.trace = trace  # the submitter's trace context (OpenTelemetry), if traced
        self.span: _tracing.JobSpan | None = None


class _Host:
    """What ``current_pool()``'s ``RemotePool`` and ``ChildJob`` need of a worker: the
    loop, the children by request, the running jobs by id and a thread-safe post."""

    def __init__(self, pool: InlineSupervisor, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self.loop = loop
        self.thread_id: int | None = None
        self.children: dict[int, _remote.ChildJob] = {}
        self.jobs: dict[int, _Job] = {}

    def post_threadsafe(self, message: Any) -> None:
        self._pool._call_in_loop(self._pool._on_child_message, message)


class InlineSupervisor:
    """Runs a ``CancelPool``'s jobs in this process: the supervisor interface the facade
    (``_pool.py``) calls, and the owner interface its ``JobHandle`` objects use."""

    def __init__(self, settings: PoolSettings, pool: object) -> None:
        self._settings = settings
        self._lock = threading.RLock()
        # One condition for every handle's result() to wait on, as in the real pool.
        self._results = threading.Condition(threading.RLock())
        self._state = "new"
        self._ids = itertools.count(1)
        self._live: dict[int, _Job] = {}
        self._pending: deque[_Job] = deque()
        self._history: deque[JobHandle[Any]] = deque(maxlen=settings.history)
        self._free = settings.workers * settings.concurrency
        self._counts = {"submitted": 0, "completed": 0, "cancelled": 0, "failed": 0}
        self._running = 0
        self._broken: PoolBroken | None = None
        self._ready = False  # the initializer has run
        self._loop: asyncio.AbstractEventLoop | None = None
        self._host: _Host | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._idle = threading.Event()  # no live job (shutdown(wait=True) waits on it)
        self._idle.set()
        self._pool_ref = weakref.ref(pool, self._pool_dropped)
        #: Lifecycle events, delivered on the inline thread (its event loop).
        self.events = EventHub()
        self.events.attach(self._wake_events, None)

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``new``, ``running``, ``closing``, ``closed`` or ``broken``."""
        return self._state

    @property
    def thread(self) -> threading.Thread | None:
        """The inline thread (the jobs' event loop), once started."""
        return self._thread

    def start(self) -> None:
        """Start the inline thread (once; later calls return).

        Raises:
            PoolClosed: the pool is shut down.
            PoolBroken: its initializer raised.
        """
        with self._lock:
            if self._state == "running":
                return
            if self._state != "new":
                raise self._closed_error()
            loop = self._loop = asyncio.new_event_loop()
            self._host = _Host(self, loop)
            started = threading.Event()
            self._thread = threading.Thread(
                target=self._serve, args=(started,), name="cancelpool-inline", daemon=True
            )
            self._state = "running"
            self._thread.start()
        started.wait()

    def _serve(self, started: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        assert self._host is not None
        asyncio.set_event_loop(loop)
        self._host.thread_id = threading.get_ident()
        self._stop = asyncio.Event()
        started.set()
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            with self._lock:
                if self._state != "broken":
                    self._state = "closed"

    async def _main(self) -> None:
        if self._settings.initializer is not None:
            try:
                fn, args = pickle.loads(self._settings.initializer)
                result = fn(*args)
                if self._settings.initializer_is_async:
                    await result
            except BaseException as exc:  # SystemExit included: the pool must hear of it
                self._break(exc)
        with self._lock:
            self._ready = True
        self._dispatch()
        self._maybe_stop()
        assert self._stop is not None
        await self._stop.wait()

    def _break(self, exc: BaseException) -> None:
        """The initializer raised: the pool is broken, as a real one would be."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        cause = load_error(dump_error(exc), text, 0)
        label = self._settings.initializer_label
        logger.error("cancelpool: the initializer %s failed in this process:\n%s", label, text)
        error = PoolBroken(
            f"the pool's initializer {label} failed in this process (inline) ({cause!r}); "
            "no job can run: fix the initializer and create a new pool"
        )
        error.__cause__ = cause
        with self._lock:
            self._state = "broken"
            self._broken = error
            doomed = list(self._pending)
            self._pending.clear()
        for job in doomed:
            self._resolve(job, OperationStatus.FAILED, error=error)

    def shutdown(self, wait: bool, *, cancel_pending: bool, cancel_running: bool) -> None:
        """Stop accepting jobs; cancel some if asked; with ``wait``, wait until every
        job has resolved (and the inline thread has ended, unless a forced job's code
        still runs in it)."""
        with self._lock:
            if self._state == "new":
                self._state = "closed"
                return
            if self._state == "running":
                self._state = "closing"
        if cancel_pending or cancel_running:
            self.cancel_everything(
                CancelationReason.MANUAL, "the pool shut down", queued_only=not cancel_running
            )
        self._call_in_loop(self._maybe_stop)
        if wait and threading.current_thread() is not self._thread:
            self._idle.wait()
            with self._lock:
                abandoned = any(job.abandoned for job in self._host_jobs())
            if not abandoned and self._thread is not None:
                self._thread.join()

    def terminate(self, message: str) -> None:
        """Cancel every job and resolve the running ones as forced, now."""
        with self._lock:
            if self._state == "new":
                self._state = "closed"
                return
            if self._state == "running":
                self._state = "closing"
            running = [job for job in self._live.values() if job.started]
        self.cancel_everything(CancelationReason.MANUAL, message)
        for job in running:
            self._force(job)
        self.shutdown(True, cancel_pending=False, cancel_running=False)

    def _pool_dropped(self, _ref: object) -> None:
        # Any thread, maybe inside an allocation holding our lock: only hand it over.
        self._call_in_loop(self._dropped)

    def _dropped(self) -> None:
        self.shutdown(False, cancel_pending=False, cancel_running=False)

    def describe(self) -> str:
        """The state and live job count, for the pool's repr."""
        return f"{self._state} jobs={len(self._live)} inline"

    def _closed_error(self) -> PoolError:
        if self._broken is not None:
            error = PoolBroken(str(self._broken))
            error.__cause__ = self._broken.__cause__
            return error
        return PoolClosed("this CancelPool is shut down; create a new one to submit jobs")

    def subscribe(self, callback: Any) -> Callable[[], None]:
        """See :meth:`CancelPool.subscribe` (no worker events: there are no workers)."""
        return self.events.subscribe(callback)

    def _wake_events(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.events.deliver, context=contextvars.Context())
                return
            except RuntimeError:
                pass  # closed meanwhile
        self.events.deliver()  # no loop any more: here

    def _call_in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            # An empty context: nothing of the caller's (its async library as sniffio
            # sees it, its context variables) reaches the jobs, as with a worker.
            loop.call_soon_threadsafe(fn, *args, context=contextvars.Context())
        except RuntimeError:
            pass  # the loop has closed: nothing is left to do there

    def _host_jobs(self) -> list[_Job]:
        return [] if self._host is None else list(self._host.jobs.values())

    def _maybe_stop(self) -> None:
        # Loop thread. The loop ends once the pool is closing and no job code runs.
        idle = not self._live and not self._host_jobs()
        if self._state != "running" and idle and self._stop is not None:
            self._stop.set()

    # -- the caller's requests ------------------------------------------------------------
    def owns(self, handle: JobHandle[Any]) -> bool:
        """Whether ``handle`` is a job of this pool."""
        return handle._belongs_to(self)

    def warm(self, function: bytes) -> None:
        """Nothing to warm: there are no spare processes."""

    def submit(
        self,
        fn: bytes,
        args: bytes,
        is_async: bool,
        *,
        name: str | None,
        timeout: float | None,
        metadata: dict[str, Any] | None,
        parent: JobHandle[Any] | None,
        retries: int,
        cancel_grace: float | None,
        trace: str | None = None,
    ) -> JobHandle[Any]:
        """Register a job (already pickled and validated) and queue it."""
        # retries: kept on the handle; no worker dies here to use them.
        job = self._new_job(
            fn,
            args,
            is_async,
            name,
            timeout,
            metadata,
            parent,
            cancel_grace,
            retries=retries,
            trace=trace,
        )
        self._call_in_loop(self._dispatch)
        return job.handle

    def _new_job(
        self,
        fn: bytes,
        args: bytes,
        is_async: bool,
        name: str | None,
        timeout: float | None,
        metadata: dict[str, Any] | None,
        parent: JobHandle[Any] | None,
        cancel_grace: float | None,
        request: int | None = None,
        retries: int = 0,
        trace: str | None = None,
    ) -> _Job:
        with self._lock:
            if self._state != "running":
                raise self._closed_error()
            # The handle needs of its owner only _results, _lock and cancel_job.
            owner = cast("Supervisor", self)
            handle: JobHandle[Any] = JobHandle(
                owner,
                next(self._ids),
                name,
                timeout,
                metadata,
                parent,
                retries=retries,
                cancel_grace=cancel_grace,
            )
            parent_job = None if parent is None else self._live.get(parent.id)
            slots = 1 if is_async else self._settings.concurrency
            job = _Job(handle, fn, args, is_async, parent_job, request, slots, trace)
            self._counts["submitted"] += 1
            self._live[handle.id] = job
            if self.events.listeners:
                self.events.put(
                    JobSubmitted(
                        **job_fields(handle),
                        at=handle.submitted_at,
                        parent_id=None if parent is None else parent.id,
                    )
                )
            self._idle.clear()
            orphan = parent is not None and (parent_job is None or parent.cancel_reason is not None)
            if orphan:
                assert parent is not None
                handle._mark_cancelled(
                    CancelationReason.PARENT, f"parent job {parent.id} has already ended"
                )
            else:
                if parent_job is not None:
                    parent_job.children.append(job)
                self._pending.append(job)
        if orphan:
            self._resolve_cancelled(job)
        return job

    def get(self, job_id: int) -> JobHandle[Any] | None:
        """The handle of a live or recently finished job, or None."""
        with self._lock:
            job = self._live.get(job_id)
            if job is not None:
                return job.handle
            for handle in self._history:
                if handle.id == job_id:
                    return handle
            return None

    def every_job(self) -> list[JobHandle[Any]]:
        """The finished jobs still in the history, then the live ones."""
        with self._lock:
            return [*self._history, *(job.handle for job in self._live.values())]

    def statistics(self) -> PoolStatistics:
        """Counters; one worker entry: this process (its pid None until started)."""
        with self._lock:
            counts = self._counts
            return PoolStatistics(
                submitted=counts["submitted"],
                queued=len(self._live) - self._running,
                running=self._running,
                completed=counts["completed"],
                cancelled=counts["cancelled"],
                failed=counts["failed"],
                workers=(
                    WorkerStatistics(
                        pid=None if self._thread is None else os.getpid(),
                        running=self._running,
                        completed=counts["completed"],
                    ),
                ),
            )

    def cancel_job(
        self, handle: JobHandle[Any], reason: CancelationReason, message: str | None
    ) -> bool:
        """Cancel one job and its descendants; True while the cancellation is under way."""
        if not handle._belongs_to(self):
            raise ValueError(f"{handle!r} belongs to another pool")
        with self._lock:
            job = self._live.get(handle.id)
            if job is None:
                return False
            count, resolved = self._cancel_locked([job], reason, message)
        for queued in resolved:
            self._resolve_cancelled(queued)
        return count > 0 or handle.cancel_reason is not None

    def cancel_matching(
        self,
        match: Callable[[str], Any] | None,
        status: OperationStatus | None,
        reason: CancelationReason,
        message: str | None,
    ) -> int:
        """Cancel the live jobs whose name ``match`` accepts and whose status is
        ``status`` (None: any); returns how many matched."""
        with self._lock:
            targets = [
                job
                for job in self._live.values()
                if (match is None or (job.handle.name is not None and match(job.handle.name)))
                and (status is None or job.handle.status is status)
            ]
            count, resolved = self._cancel_locked(targets, reason, message)
        for job in resolved:
            self._resolve_cancelled(job)
        return count

    def cancel_everything(
        self, reason: CancelationReason, message: str, *, queued_only: bool = False
    ) -> int:
        """Cancel every live job (only the queued ones with ``queued_only``)."""
        with self._lock:
            targets = [job for job in self._live.values() if not (queued_only and job.started)]
            count, resolved = self._cancel_locked(targets, reason, message)
        for job in resolved:
            self._resolve_cancelled(job)
        return count

    def _cancel_locked(
        self, jobs: list[_Job], reason: CancelationReason, message: str | None
    ) -> tuple[int, list[_Job]]:
        """Cancel jobs and their descendants (lock held); returns (how many were live
        and not yet cancelled, the queued ones to resolve now)."""
        resolved: list[_Job] = []
        count = 0
        for job in jobs:
            handle = job.handle
            if handle.cancel_reason is not None or job.resolved:
                continue
            count += 1
            text = message or f"job {handle.id} was cancelled ({reason.value})"
            handle._mark_cancelled(reason, text)
            if not job.started:
                self._pending.remove(job)
                resolved.append(job)
            else:
                job.token.cancel_sync(reason, text)
                grace = handle.cancel_grace
                self._arm(job, self._settings.cancel_grace if grace is None else grace)
            resolved += self._cascade(job, f"was cancelled ({reason.value})")
        return count, resolved

    def _cascade(self, parent: _Job, what: str) -> list[_Job]:
        children = [child for child in parent.children if not child.resolved]
        if not children:
            return []
        handle = parent.handle
        message = f"parent job {handle.id} ({handle.name or '-'}) {what}"
        if handle.cancel_reason is CancelationReason.PARENT and handle.cancel_message:
            message += f": {handle.cancel_message}"
        return self._cancel_locked(children, CancelationReason.PARENT, message)[1]

    def _arm(self, job: _Job, delay: float) -> None:
        """Resolve ``job`` as forced if it is still running ``delay`` seconds from now
        (the earliest of the deadlines asked for counts). A thread timer, not the
        loop's: a job that blocks the loop must not stop its own forced stop."""
        deadline = time.monotonic() + delay
        with self._lock:
            if job.resolved or (job.timer is not None and job.deadline <= deadline):
                return
            if job.timer is not None:
                job.timer.cancel()
            job.deadline = deadline
            job.timer = threading.Timer(delay, self._force, (job,))
            job.timer.daemon = True
            job.timer.start()

    def _force(self, job: _Job) -> None:
        # A timer thread (or terminate()): the job ignored its cancellation.
        with self._lock:
            if job.resolved:
                return
            job.abandoned = True
            self._release_slots(job)
            if job.handle.cancel_reason is None:
                job.handle._mark_cancelled(CancelationReason.TIMEOUT, "the job's timeout passed")
            partial = None if job.op is None else job.op.context.partial_result
        job.handle._set_partial(load_partial(dump_partial(partial)))
        self._resolve_cancelled(job, forced=True)

    # -- running jobs (the inline thread) -------------------------------------------------------
    def _dispatch(self) -> None:
        started: list[_Job] = []
        with self._lock:
            if not self._ready:
                return
            while self._pending and self._pending[0].slots <= max(self._free, 0):
                job = self._pending.popleft()
                self._free -= job.slots
                job.holds_slots = True
                job.started = True
                started.append(job)
        assert self._loop is not None
        for job in started:
            # Each job in a fresh context, as each job is a fresh task in a worker.
            self._loop.create_task(self._run(job), context=contextvars.Context())

    def _release_slots(self, job: _Job) -> None:
        with self._lock:
            if job.holds_slots:
                job.holds_slots = False
                self._free += job.slots

    async def _run(self, job: _Job) -> None:
        host = self._host
        assert host is not None
        job_id = job.handle.id
        host.jobs[job_id] = job
        try:
            await self._run_job(job, host)
        finally:
            if job.span is not None:
                job.span.close()
            del host.jobs[job_id]
            self._release_slots(job)
            self._dispatch()
            self._maybe_stop()

    async def _run_job(self, job: _Job, host: _Host) -> None:
        handle = job.handle
        try:
            fn = pickle.loads(job.fn)
            args, kwargs = pickle.loads(job.args)
        except BaseException as exc:  # SystemExit from a __setstate__ included
            error = rewrap(exc, f"job {handle.id} could not be unpickled in the worker: {exc!r}")
            self._fail(job, error, traceback.format_exc())
            return
        if job.token.is_cancelled:  # cancelled as it was being started: it never starts
            self._resolve_cancelled(job)
            return
        op = Cancelable(handle.name, operation_id=str(handle.id), register=False)
        op.add_token(job.token)
        if handle.timeout is not None:
            op.add_source(TimeoutSource(handle.timeout))
            # The supervisor's backstop: a job that ignores its timeout is forced.
            grace = handle.cancel_grace
            self._arm(
                job, handle.timeout + (self._settings.cancel_grace if grace is None else grace)
            )
        op.on_progress(functools.partial(self._on_progress, job))
        if job.trace is not None:
            span = job.span = _tracing.start_job(job.trace, 1, handle.name, handle.id)
            if span is not None:
                op.on_progress(span.progress)
        job.op = op
        _remote.enter_job(cast("Worker", host), handle.id)
        with self._lock:
            if job.resolved:
                return
            self._running += 1
            job.counted = True
            handle._set_running()
            if self.events.listeners:
                self.events.put(
                    JobStarted(**job_fields(handle), at=time.time(), worker_pid=os.getpid())
                )
        try:
            async with op:
                if job.is_async:
                    result = await fn(*args, **kwargs)
                else:
                    result = await op.run_in_thread(functools.partial(fn, *args, **kwargs))
        except CancelationError as exc:
            if job.failure is not None:
                self._fail(job, job.failure)
            elif op.context.status is OperationStatus.CANCELLED and op.is_cancelled:
                handle._set_partial(load_partial(dump_partial(op.context.partial_result)))
                with self._lock:
                    if handle.cancel_reason is None or exc.reason is not handle.cancel_reason:
                        handle._mark_cancelled(exc.reason, exc.message, requested=False)
                self._resolve_cancelled(job)
            else:
                self._fail(job, exc)
        except asyncio.CancelledError as exc:
            self._fail(job, RuntimeError(f"job stopped by {exc!r}"))
            raise
        except BaseException as exc:
            self._fail(job, exc)
        else:
            if job.failure is not None:
                self._fail(job, job.failure)
                return
            try:
                data = dumps(result)
            except BaseException as problem:  # SystemExit from a __reduce__ included
                error = rewrap(
                    problem,
                    f"the result of job {handle.id} ({type(result).__name__}) cannot be "
                    f"pickled: {problem!r}; return picklable data",
                )
                self._fail(job, error)
                return
            # A parent job reads its child's result from these bytes, as from a worker.
            try:
                value = pickle.loads(data)
            except BaseException as exc:  # SystemExit from a __setstate__ included
                error = rewrap(
                    exc, f"the result of job {handle.id} could not be unpickled: {exc!r}"
                )
                self._resolve(job, OperationStatus.FAILED, error=error, data=data)
                return
            self._resolve(job, OperationStatus.COMPLETED, result=value, data=data)

    def _on_progress(self, job: _Job, op_id: str, message: str, metadata: dict[str, Any]) -> None:
        # The worker's rule: metadata must encode as msgpack; the caller gets a copy.
        try:
            raw = msgspec.msgpack.encode(metadata)
        except Exception as problem:
            job.failure = TypeError(
                f"this job's progress metadata cannot be encoded ({problem}); "
                "report JSON-like data: dict, list, str, int (64-bit), float, bool, None"
            )
            assert job.op is not None
            job.op.cancel_sync(CancelationReason.ERROR, str(job.failure))
            return
        if not job.resolved:
            decoded = msgspec.msgpack.decode(raw)
            if self.events.listeners:
                self.events.put(
                    JobProgress(
                        **job_fields(job.handle),
                        at=time.time(),
                        message=str(message),
                        progress=dict(decoded) if isinstance(decoded, dict) else {},
                    )
                )
            job.handle._report(job.handle.id, str(message), decoded)

    # -- resolving ------------------------------------------------------------------------
    def _fail(self, job: _Job, exc: BaseException, text: str | None = None) -> None:
        # Through pickle, as from a worker: the caller's exception is a copy with the
        # job's traceback as its __cause__.
        if text is None:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if job.span is not None:
            job.span.failed(exc)
        error = load_error(dump_error(exc), text, job.handle.id)
        self._resolve(job, OperationStatus.FAILED, error=error)

    def _resolve_cancelled(self, job: _Job, *, forced: bool = False) -> None:
        handle = job.handle
        reason = handle.cancel_reason or CancelationReason.MANUAL
        message = handle.cancel_message or f"job {handle.id} was cancelled ({reason.value})"
        if job.span is not None:
            if forced:
                job.span.forced(reason, message)
            else:
                job.span.cancelled(reason, message)
        error = JobCancelled(
            reason,
            message,
            None,
            job_id=str(handle.id),
            partial_result=handle.partial_result,
            forced=forced,
        )
        self._resolve(job, OperationStatus.CANCELLED, error=error)

    def _resolve(
        self,
        job: _Job,
        status: OperationStatus,
        *,
        result: Any = None,
        error: BaseException | None = None,
        data: bytes | None = None,
    ) -> None:
        """Write the outcome to the handle, once (any thread). ``data``: the pickled
        result, for a parent job that awaits this one."""
        handle = job.handle
        with self._lock:
            if job.resolved:
                return
            job.resolved = True
            if job.timer is not None:
                job.timer.cancel()
            if job.counted:
                self._running -= 1
            del self._live[handle.id]
            self._history.append(handle)
            key = {"completed": "completed", "cancelled": "cancelled"}.get(status.value, "failed")
            self._counts[key] += 1
            feeds = handle._close(status)
            if self.events.listeners:
                self.events.put(_finished(handle, status, error))
            orphans = self._cascade(job, f"has ended ({status.value})")
            if not self._live:
                self._idle.set()
        for feed in feeds:
            feed.push(None)
        if job.request is not None:
            self._tell_parent(job, error, data)
        for orphan in orphans:
            self._resolve_cancelled(orphan)
        if error is None:
            handle.set_result(result)
        else:
            handle.set_exception(error)
        self._call_in_loop(self._maybe_stop)

    # -- child jobs (current_pool()) ---------------------------------------------------------
    def _tell_parent(self, job: _Job, error: BaseException | None, data: bytes | None) -> None:
        handle = job.handle
        outcome: proto.Done | proto.Failed | proto.Cancelled
        if data is not None:
            outcome = proto.Done(handle.id, data)
        elif isinstance(error, JobCancelled):
            partial = dump_partial(handle.partial_result)
            outcome = proto.Cancelled(
                handle.id, error.reason.value, error.message, partial, job.started
            )
        else:
            assert error is not None
            outcome = proto.Failed(handle.id, dump_error(error), "")
        assert job.request is not None
        self._call_in_loop(self._settle_child, proto.ChildOutcome(job.request, outcome))

    def _settle_child(self, message: Any) -> None:
        assert self._host is not None
        _remote.settle_child(cast("Worker", self._host), message)

    def _on_child_message(self, message: Any) -> None:
        # The inline thread: what a job's RemotePool posted, as a worker would send it.
        host = self._host
        assert host is not None
        if isinstance(message, proto.CancelChild):
            for job in list(self._live.values()):
                if job.request == message.request:
                    self.cancel_job(job.handle, CancelationReason.MANUAL, message.message)
            return
        assert isinstance(message, proto.SubmitChild)
        parent = self._live.get(message.parent)
        try:
            if parent is None:
                raise PoolError(f"job {message.parent} has ended; it cannot submit children")
            child = self._new_job(
                message.fn,
                message.args,
                message.is_async,
                message.name,
                message.timeout,
                None,
                parent.handle,
                None,
                request=message.request,
                trace=message.trace,
            )
        except BaseException as exc:
            self._settle_child(proto.ChildRefused(message.request, dump_error(exc)))
            return
        self._settle_child(proto.ChildAccepted(message.request, child.handle.id))
        self._dispatch()


def _finished(handle: JobHandle[Any], status: OperationStatus, error: BaseException | None) -> Any:
    outcome: Outcome = "succeeded"
    message = None
    if status is OperationStatus.CANCELLED:
        outcome = "forced" if getattr(error, "forced", False) else "cancelled"
        message = handle.cancel_message or str(error)
    elif error is not None:
        outcome = "failed"
        message = repr(error)
    return finished_event(handle, outcome, handle.ended_at or time.time(), message)

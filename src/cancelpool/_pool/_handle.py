"""``JobHandle``: the caller's view of one job, a ``concurrent.futures.Future``."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from .._core._context import OperationContext
from .._core._enums import CancelationReason, OperationStatus
from .._core._loop import LoopHandle

if TYPE_CHECKING:
    from ._supervisor import Supervisor

logger = logging.getLogger("cancelpool")

# Future's private state names (stable since Python 3.2).
_PENDING = "PENDING"
_FINISHED = "FINISHED"
_DONE_STATES = frozenset(("CANCELLED", "CANCELLED_AND_NOTIFIED", _FINISHED))
_allocate_lock = threading.Lock

T = TypeVar("T")

ProgressCallback = Callable[[int, str, dict[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One progress report of a job (or of an operation nested in it)."""

    job_id: int
    message: str
    metadata: dict[str, Any]


class _ProgressFeed:
    """Carries progress events from the supervisor thread to one async consumer."""

    def __init__(self) -> None:
        self.handle = LoopHandle.current()
        self.events: deque[ProgressEvent | None] = deque()
        self.wakeup = anyio.Event()
        self.scheduled = False
        self.lock = threading.Lock()

    def push(self, event: ProgressEvent | None) -> None:
        with self.lock:
            self.events.append(event)
            if self.scheduled:
                return
            self.scheduled = True
        self.handle.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self.lock:
            self.scheduled = False
        self.wakeup.set()


class JobHandle(concurrent.futures.Future[T], Generic[T]):
    """A submitted job: a ``concurrent.futures.Future`` that can also be awaited.

    ``result()`` / ``await handle`` return the job's result, raise the job's own
    exception (with the remote traceback as ``__cause__``), or raise
    :class:`~cancelpool.JobCancelled` with the reason, message and partial result.

    :meth:`cancel` stops the job wherever it is: a queued job never starts; a running
    one is cancelled through its shared-memory token within microseconds, and the
    handle resolves once the worker reports back (with the job's partial result).

    A cancelled job *finishes* with :class:`~cancelpool.JobCancelled` as its exception:
    ``status`` is CANCELLED, while ``cancelled()`` keeps its ``Future`` meaning and is
    False. That is deliberate: ``asyncio.wrap_future`` (and so a ``TaskGroup``) would
    turn a cancelled Future into the awaiting task's own cancellation, swallowing the
    job's reason and partial result.

    Done callbacks and progress callbacks run in the pool's supervisor thread: keep
    them quick, and never wait there for another job (``result()``) — that would stall
    the pool.
    """

    def __init__(
        self,
        owner: Supervisor,
        job_id: int,
        name: str | None,
        timeout: float | None,
        metadata: dict[str, Any] | None,
        parent: JobHandle[Any] | None,
        *,
        retries: int = 0,
        cancel_grace: float | None = None,
    ) -> None:
        # The fields of Future.__init__, but with the pool's shared condition instead
        # of a new threading.Condition per job (a third of the cost of a submit).
        # result() and exception() below re-check their own state after each wake-up.
        self._condition = owner._results
        self._state = _PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[JobHandle[T]], object]] = []
        # The threads blocked in this handle's result()/exception(): each waits on a
        # lock of its own that resolving releases, so that a job's end wakes only the
        # threads waiting for that job (the shared condition's notify_all would wake
        # every waiter of the pool, each then fighting for the condition's lock).
        self._sleepers: list[Any] | None = None
        # The pool's supervisor, not the pool: a handle kept alive does not keep its
        # pool from being shut down once the pool is garbage.
        self._owner = owner
        self.id = job_id
        self.name = name
        self.timeout = timeout
        self.metadata = metadata if metadata is not None else {}
        self.parent = parent
        self._status = OperationStatus.PENDING
        self._progress: list[ProgressCallback] | None = None
        self._feeds: list[_ProgressFeed] | None = None
        self._partial: Any = None
        self._cancel_reason: CancelationReason | None = None
        self._cancel_message: str | None = None
        self.retries = retries
        self.cancel_grace = cancel_grace
        self._ended = False  # no more progress: the feeds are closed
        self.submitted_at = time.time()
        self.started_at: float | None = None
        self.ended_at: float | None = None
        #: When the pool was first asked to cancel it (None: never, or the job's own
        #: worker decided, e.g. its timeout passed there).
        self.cancel_requested_at: float | None = None
        #: Where the job was when its worker's watchdog last saw it block the event
        #: loop (traceback text, outermost first), or None: it never did.
        self.blocked_stack: str | None = None

    # -- the supervisor's side (its thread, or a caller's thread under the pool's lock) --------
    # The only writers of a handle's state: the supervisor calls these, nobody else
    # sets a handle's fields or Future's own. What the supervisor keeps of a job for
    # itself (slot, worker, attempt, the pickled job) is in its JobRecord, not here.
    def _set_running(self) -> None:
        """The worker reported the job started (again, for a retried job)."""
        self._status = OperationStatus.RUNNING
        self.started_at = time.time()
        if self._state == _PENDING:  # Future's transition once, not again on a retry
            self.set_running_or_notify_cancel()

    def _requeue(self) -> None:
        """Its worker died: queued again for a new attempt, from the start."""
        self._status = OperationStatus.PENDING
        self._partial = None
        self.started_at = None

    def _belongs_to(self, owner: object) -> bool:
        """Whether ``owner`` (a supervisor) made this handle."""
        return self._owner is owner

    def _set_partial(self, partial: Any) -> None:
        """The partial result its outcome will carry."""
        self._partial = partial

    def _set_blocked_stack(self, stack: str) -> None:
        """Where the job was when its worker's watchdog saw it block the event loop."""
        self.blocked_stack = stack

    def _mark_cancelled(
        self, reason: CancelationReason, message: str | None, *, requested: bool = True
    ) -> None:
        """Record why the job is (being) cancelled; ``requested``: the pool asked for
        it now (the start of its cancel latency), rather than its worker reporting it."""
        if requested and self.cancel_requested_at is None:
            self.cancel_requested_at = time.time()
        self._cancel_reason = reason
        self._cancel_message = message

    def _stamp_end(self, placed_at: float | None = None) -> None:
        """The time the outcome arrived (before it is unpickled); a job that ended
        within one turn of its worker's loop sent no ``Started``: it started about when
        it was ``placed_at`` on its worker."""
        self.ended_at = time.time()
        if self.started_at is None:
            self.started_at = placed_at

    def _close(self, status: OperationStatus) -> list[_ProgressFeed]:
        """Record how the job ended (pool's lock held); returns the progress streams to
        end. No progress is delivered from now on."""
        self._status = status
        self.ended_at = self.ended_at or time.time()
        self._ended = True
        feeds, self._feeds = self._feeds, None
        return feeds or []

    # -- state ------------------------------------------------------------------------------
    @property
    def status(self) -> OperationStatus:
        """PENDING (queued), RUNNING, COMPLETED, CANCELLED or FAILED."""
        return self._status

    @property
    def partial_result(self) -> Any:
        """The partial result a cancelled job recorded, else None."""
        return self._partial

    @property
    def cancel_reason(self) -> CancelationReason | None:
        """Why the job is (being) cancelled, once it is; else None."""
        return self._cancel_reason

    @property
    def cancel_message(self) -> str | None:
        """The message of its cancellation, once it is cancelled; else None."""
        return self._cancel_message

    @property
    def context(self) -> OperationContext:
        """A snapshot of the job as an :class:`OperationContext`."""
        ctx = OperationContext(
            id=str(self.id),
            name=self.name,
            parent_id=None if self.parent is None else str(self.parent.id),
            metadata=dict(self.metadata),
        )
        ctx.status = self._status
        ctx.start_time = self.started_at
        ctx.end_time = self.ended_at
        ctx.cancel_reason = self._cancel_reason
        ctx.cancel_message = self._cancel_message
        ctx.partial_result = self._partial
        if self._status is OperationStatus.FAILED:
            ctx.error = self.exception(timeout=0)
        return ctx

    def cancel(self, message: str | None = None) -> bool:
        """Cancel the job, queued or running; False if it had already finished.

        Returns at once. A queued job is resolved as cancelled right here; a running
        job's handle resolves when its worker reports, normally within a millisecond.
        """
        return self._owner.cancel_job(self, CancelationReason.MANUAL, message)

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} {self.name or '-'} {self._status.value}>"

    def result(self, timeout: float | None = None) -> T:
        """The job's result; raises its exception, :class:`JobCancelled`, or
        ``TimeoutError`` if it has not finished within ``timeout`` seconds."""
        self._wait_finished(timeout)
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[no-any-return]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The job's exception (JobCancelled if cancelled), None if it succeeded."""
        self._wait_finished(timeout)
        return self._exception

    def _wait_finished(self, timeout: float | None) -> None:
        if self._state == _FINISHED:
            # Written last, after the outcome, under the condition: seen here, the
            # outcome is there too (no lock needed to read a finished handle).
            return
        if timeout is not None and timeout <= 0:
            with self._condition:
                if self._state == _FINISHED:
                    return
            raise TimeoutError(f"job {self.id} has not finished")
        sleeper = _allocate_lock()
        sleeper.acquire()
        with self._condition:
            if self._state == _FINISHED:
                return
            if self._sleepers is None:
                self._sleepers = []
            self._sleepers.append(sleeper)
        if timeout is None:
            sleeper.acquire()
            return
        if sleeper.acquire(True, timeout):
            return
        with self._condition:
            if self._sleepers is not None and sleeper in self._sleepers:
                self._sleepers.remove(sleeper)
            if self._state == _FINISHED:
                return
        raise TimeoutError(f"job {self.id} has not finished")

    def set_result(self, result: T) -> None:
        """Resolve the handle with ``result`` (the pool's resolver; as ``Future``'s)."""
        with self._condition:
            if self._state in _DONE_STATES:
                raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._state = _FINISHED
            for waiter in self._waiters:
                waiter.add_result(self)
            self._wake_sleepers()
        self._invoke_callbacks()  # type: ignore[attr-defined]

    def set_exception(self, exception: BaseException | None) -> None:
        """Resolve the handle with ``exception`` (the pool's resolver; as ``Future``'s)."""
        with self._condition:
            if self._state in _DONE_STATES:
                raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
            self._exception = exception
            self._state = _FINISHED
            for waiter in self._waiters:
                waiter.add_exception(self)
            self._wake_sleepers()
        self._invoke_callbacks()  # type: ignore[attr-defined]

    def _wake_sleepers(self) -> None:
        """Release the threads blocked in result()/exception() (condition held)."""
        sleepers, self._sleepers = self._sleepers, None
        if sleepers:
            for sleeper in sleepers:
                sleeper.release()
        # Anyone waiting on the condition itself (Future's own result(), called on a
        # handle as a plain Future): one shared condition, so it re-checks its state.
        self._condition.notify_all()

    # -- progress ----------------------------------------------------------------------------
    def on_progress(self, callback: ProgressCallback) -> JobHandle[T]:
        """Call ``callback(job_id, message, metadata)`` for each progress report.

        Reports of the job's children (and their children) arrive here too, with the
        child's id. Callbacks run in the pool's supervisor thread, in the order the job
        reported; keep them quick. A callback that raises is logged and ignored.
        """
        if not callable(callback):
            raise TypeError(f"on_progress() needs a callable, not {callback!r}")
        if self._progress is None:
            self._progress = []
        self._progress.append(callback)
        return self

    async def progress(self) -> AsyncIterator[ProgressEvent]:
        """Iterate over the job's progress reports until it ends.

        Only reports made after iteration starts are seen. Cancelling the iterating
        task stops the iteration, not the job.
        """
        feed = _ProgressFeed()
        with self._owner._lock:
            if self._ended:
                return
            if self._feeds is None:
                self._feeds = []
            self._feeds.append(feed)
        try:
            while True:
                while feed.events:
                    event = feed.events.popleft()
                    if event is None:
                        return
                    yield event
                await feed.wakeup.wait()
                feed.wakeup = anyio.Event()
        finally:
            with self._owner._lock:
                if self._feeds is not None and feed in self._feeds:
                    self._feeds.remove(feed)

    def _report(self, origin: int, message: str, metadata: dict[str, Any]) -> None:
        """Deliver a progress report of job ``origin`` (this job or a descendant) here
        and to every ancestor's handle (supervisor thread)."""
        handle: JobHandle[Any] | None = self
        while handle is not None:
            if handle._progress:
                for callback in handle._progress:
                    try:
                        callback(origin, message, metadata)
                    except Exception:
                        logger.exception("cancelpool: progress callback %r failed", callback)
            if handle._feeds:
                event = ProgressEvent(origin, message, metadata)
                for feed in handle._feeds:
                    feed.push(event)
            handle = handle.parent

    # -- awaiting -------------------------------------------------------------------------------
    def __await__(self) -> Generator[Any, None, T]:
        return self._wait().__await__()

    async def _wait(self) -> T:
        """Wait for the outcome without blocking the event loop.

        If the awaiting task is cancelled, the job is cancelled too (the caller no
        longer wants its result) and the task's cancellation propagates.
        """
        if not self.done():
            event = anyio.Event()
            loop = LoopHandle.current()
            self.add_done_callback(lambda _: loop.call_soon_threadsafe(event.set))
            try:
                await event.wait()
            except anyio.get_cancelled_exc_class():
                self._owner.cancel_job(
                    self, CancelationReason.PARENT, "the task awaiting the job was cancelled"
                )
                raise
        return self.result()

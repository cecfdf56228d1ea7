"""Lifecycle events of a pool (and of ``cancelpool serve``): typed records, one hub.

A leaf module: the pool, its inline test mode and the queue server import it; it
imports nothing of theirs.

::

    decided in                       put()               delivered by
    ----------                       -----               ------------
    submit() (caller thread)   --> deque + wake -->  the supervisor thread, at the top
    supervisor thread          --> deque         -->  of each turn of its loop, outside
    (started, progress, finished,                     the pool's lock, in order:
     retried, worker_*, loop stalled)                 each subscriber, one by one

Nobody listening costs one attribute check per fact (``if hub.listeners:``): no record
is built. A subscriber is called on the supervisor thread (the inline pool's event-loop
thread in test mode); while it runs, the pool reads no worker's messages, so it must be
quick (hand the event to a queue of your own for slow work). One that raises is logged
and the others are still called; the pool goes on.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

if TYPE_CHECKING:
    from ._core._enums import CancelationReason

logger = logging.getLogger("cancelpool")

#: How a job ended: ``forced`` is a cancellation its worker's kill ended (the job
#: ignored it past ``cancel_grace``).
Outcome: TypeAlias = Literal["succeeded", "failed", "cancelled", "forced"]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSubmitted:
    """A job was accepted by ``submit()`` (or submitted by another job)."""

    job_id: int
    name: str | None
    metadata: dict[str, Any] | None
    #: ``time.time()`` when it happened (as every event's ``at``).
    at: float
    #: The job's parent job, if another job submitted it.
    parent_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStarted:
    """A worker began running a job (its ``attempt``-th run)."""

    job_id: int
    name: str | None
    metadata: dict[str, Any] | None
    at: float
    worker_pid: int | None
    attempt: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class JobProgress:
    """A job reported progress (``current_operation().report_progress``)."""

    job_id: int
    name: str | None
    metadata: dict[str, Any] | None
    at: float
    message: str
    progress: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFinished:
    """A job's handle resolved: succeeded, failed, cancelled, or forced to stop."""

    job_id: int
    name: str | None
    metadata: dict[str, Any] | None
    at: float
    outcome: Outcome
    #: Why it was cancelled (``cancelled`` and ``forced`` only).
    reason: CancelationReason | None = None
    #: The cancellation's message, or the error's ``repr`` for ``failed``.
    message: str | None = None
    #: Seconds from its start to its end; None if it never started.
    duration: float | None = None
    #: Seconds from the cancel request to the job's end (``cancelled`` and ``forced``
    #: when the pool asked for it; None for a cancellation the job raised itself).
    cancel_latency: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRetried:
    """A job's worker died and the job goes back to the queue (``retries``)."""

    job_id: int
    name: str | None
    metadata: dict[str, Any] | None
    at: float
    #: The attempt it will run as next (2 after its first retry).
    attempt: int
    worker_pid: int | None
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStarted:
    """A worker process started (at pool start, as a replacement, or as a spare)."""

    pid: int | None
    at: float
    #: Its place in the pool (``-1`` for a spare).
    index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerDied:
    """A worker process exited on its own or was killed (``how``: "exit code 0",
    "killed by signal 9", ...); ``expected`` when it was asked to stop (shutdown,
    recycling)."""

    pid: int | None
    at: float
    index: int
    how: str
    expected: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRecycled:
    """A worker reached ``max_tasks_per_child`` or ``max_memory_per_worker``: it was
    asked to stop once its last job ended, and a fresh one takes its place."""

    pid: int | None
    at: float
    index: int
    why: Literal["max_tasks_per_child", "max_memory_per_worker"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopStalled:
    """A worker's watchdog saw its event loop blocked for ``blocked_for`` seconds
    (an async function that does not await); ``job_id`` holds it, if a job's own task
    does, and ``stack`` is where it is."""

    pid: int | None
    at: float
    job_id: int | None
    blocked_for: float
    stack: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueDepth:
    """``cancelpool serve`` only: the queue's job counts by status, read from the
    database every housekeeping round (about every 2 s) while someone listens."""

    at: float
    counts: dict[str, int]


Event: TypeAlias = (
    JobSubmitted
    | JobStarted
    | JobProgress
    | JobFinished
    | JobRetried
    | WorkerStarted
    | WorkerDied
    | WorkerRecycled
    | LoopStalled
    | QueueDepth
)
EventCallback: TypeAlias = Callable[[Event], object]


class EventHub:
    """The subscribers of one pool and the events waiting for them.

    :attr:`listeners` is the hot path's whole cost: a tuple, empty when nobody
    listens, replaced (never mutated) by :meth:`subscribe` and its undo.
    """

    __slots__ = ("_lock", "_owner", "_pending", "_wake", "listeners")

    def __init__(self) -> None:
        self.listeners: tuple[EventCallback, ...] = ()
        self._lock = threading.Lock()
        self._pending: deque[Event] = deque()
        self._owner: int | None = None  # the delivering thread's ident
        self._wake: Callable[[], None] | None = None

    def attach(self, wake: Callable[[], None] | None, owner: int | None) -> None:
        """Deliver on thread ``owner`` (None: every put wakes); ``wake`` makes that
        thread call :meth:`deliver` soon (called by the pool as its thread starts)."""
        self._wake = wake
        self._owner = owner

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every event from now on; returns the function
        that stops it (idempotent)."""
        if not callable(callback):
            raise TypeError(f"subscribe() wants a callable, not {callback!r}")
        token = _Subscription(callback)
        with self._lock:
            self.listeners = (*self.listeners, token)

        def unsubscribe() -> None:
            with self._lock:
                self.listeners = tuple(s for s in self.listeners if s is not token)

        return unsubscribe

    def put(self, event: Event) -> None:
        """Queue an event (any thread, lock held or not); delivered in order."""
        self._pending.append(event)
        if self._owner != threading.get_ident() and self._wake is not None:
            self._wake()

    def deliver(self) -> None:
        """Call the subscribers with the queued events (the delivering thread, outside
        the pool's lock). A subscriber that raises is logged; the others still hear."""
        pending = self._pending
        while pending:
            event = pending.popleft()
            for subscriber in self.listeners:
                try:
                    subscriber(event)
                except BaseException:  # SystemExit included: the pool goes on
                    logger.exception(
                        "cancelpool: an event subscriber failed on %s", type(event).__name__
                    )


class _Subscription:
    """One subscriber: a distinct object, so that the same callback subscribed twice
    is two subscriptions, each undone by its own function."""

    __slots__ = ("_callback",)

    def __init__(self, callback: EventCallback) -> None:
        self._callback = callback

    def __call__(self, event: Event) -> object:
        return self._callback(event)


def job_fields(handle: Any) -> dict[str, Any]:
    """The fields every job event shares, from a ``JobHandle``."""
    return {"job_id": handle.id, "name": handle.name, "metadata": handle.metadata}


def finished_event(
    handle: Any, outcome: Outcome, at: float, message: str | None, seen: float | None = None
) -> JobFinished:
    """The :class:`JobFinished` of a resolved handle (``seen``: when its start was
    reported to the subscribers, if its worker never said)."""
    started = handle.started_at or seen
    reason = handle.cancel_reason if outcome in ("cancelled", "forced") else None
    requested = getattr(handle, "cancel_requested_at", None)
    return JobFinished(
        job_id=handle.id,
        name=handle.name,
        metadata=handle.metadata,
        at=at,
        outcome=outcome,
        reason=reason,
        message=message,
        duration=None if started is None else max(0.0, at - started),
        cancel_latency=(None if reason is None or requested is None else max(0.0, at - requested)),
    )

"""``JobRecord`` and ``JobTable``: the jobs of one pool, as the supervisor keeps them.

A job is two objects, as in ``concurrent.futures`` (a ``Future`` and the executor's
work item): its :class:`JobHandle`, the caller's view, written only through the
handle's own methods; and its :class:`JobRecord`, the supervisor's own (what the
workers are sent, where it runs, which attempt, its family), which no caller sees.

Live jobs by id, the queue of those waiting for a worker, the recent history, each
job's live children, the child jobs by the worker request that made them, and the
counters. It knows nothing of workers or shared memory: freeing a job's slot and its
worker's place is the supervisor's part of retiring it.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._core._enums import OperationStatus
from ._handle import JobHandle

if TYPE_CHECKING:
    from ..shm import SlotRef


class JobRecord:
    """The supervisor's side of one job (read and written under the pool's lock)."""

    __slots__ = (
        "args",
        "attempts",
        "checkpoint",
        "fn",
        "handle",
        "id",
        "is_async",
        "parent",
        "placed_at",
        "remote",
        "seen_started",
        "slot",
        "told_parent",
        "trace",
        "worker",
    )

    def __init__(
        self,
        handle: JobHandle[Any],
        parent: JobRecord | None,
        fn: bytes,
        args: bytes,
        is_async: bool,
        remote: tuple[int, int, int] | None,
        trace: str | None = None,
    ) -> None:
        self.handle = handle
        self.id = handle.id
        #: The parent job's record (a child job), kept after the parent ends.
        self.parent = parent
        #: The job as the workers get it: pickled function and arguments.
        self.fn = fn
        self.args = args
        self.is_async = is_async
        #: A child job: its parent's worker index, pid and request number.
        self.remote = remote
        #: Its token slot and worker index while placed on a worker, else None.
        self.slot: SlotRef | None = None
        self.worker: int | None = None
        #: When it was last sent to a worker (time.time()), None before.
        self.placed_at: float | None = None
        #: Which run this is (1, then 2 after a retry): a timer of an older one is stale.
        self.attempts = 1
        #: The last partial result the job checkpointed (pickled).
        self.checkpoint: bytes | None = None
        #: The parent job's worker has been told how this one ended.
        self.told_parent = False
        #: When an event subscriber was told it started, though its worker sent no
        #: ``Started`` (a job that ends within one turn of its worker's loop).
        self.seen_started: float | None = None
        #: The submitter's trace context (OpenTelemetry), None when it was not traced.
        self.trace = trace

    def placed(self, slot: SlotRef, worker: int) -> None:
        """The job was sent to worker ``worker`` with token slot ``slot``."""
        self.slot = slot
        self.worker = worker
        self.placed_at = time.time()

    def requeue(self) -> None:
        """Its worker died: back to the queue for a new attempt, from the start."""
        self.slot = None
        self.worker = None
        self.attempts += 1  # the old attempt's timers no longer apply
        self.checkpoint = None
        self.seen_started = None
        self.handle._requeue()

    def claim_parent_notice(self) -> bool:
        """True once: whether the parent job's worker is still to hear the outcome."""
        if self.remote is None or self.told_parent:
            return False
        self.told_parent = True
        return True


class JobTable:
    """Live, queued and finished jobs; their family links; the counters.

    Not locked by itself: every method is called with the pool's lock held (reading a
    counter or a job by id without it is fine: those are single operations).
    """

    def __init__(self, history: int) -> None:
        #: Live jobs by id: registered and not yet retired (queued or in a worker).
        self.live: dict[int, JobRecord] = {}
        #: Jobs waiting for a worker, in order (the dispatcher takes from the left).
        self.queued: deque[JobRecord] = deque()
        #: Jobs submitted while every worker was busy, not registered yet: caller
        #: threads append them without the pool's lock (deque appends are atomic), so
        #: that a burst of submits does not take turns on the lock with the supervisor
        #: thread; :meth:`absorb` moves them in, under the lock, before anything reads
        #: the table.
        self.incoming: deque[JobRecord] = deque()
        self._history: deque[JobHandle[Any]] = deque(maxlen=history)
        self._children: dict[int, list[JobRecord]] = {}
        self._requests: dict[tuple[int, int, int], JobRecord] = {}
        self._ids = itertools.count(1)
        self.submitted = 0
        self._ended = {
            OperationStatus.COMPLETED: 0,
            OperationStatus.CANCELLED: 0,
            OperationStatus.FAILED: 0,
        }

    # -- registering and retiring -------------------------------------------------------------
    def next_id(self) -> int:
        """A new job id (ids are never reused within a pool)."""
        return next(self._ids)

    def register(self, job: JobRecord) -> None:
        """Count a new job as live (and, for a child job, as its worker's request)."""
        self.live[job.id] = job
        self.submitted += 1
        if job.remote is not None:
            self._requests[job.remote] = job

    def absorb(self) -> list[JobRecord]:
        """Register the jobs of :attr:`incoming` and queue them, in their order;
        returns them."""
        incoming = self.incoming
        moved: list[JobRecord] = []
        while incoming:
            try:
                job = incoming.popleft()  # a caller thread may append meanwhile
            except IndexError:
                break
            self.register(job)
            self.queued.append(job)
            moved.append(job)
        return moved

    def adopt(self, parent: JobRecord, child: JobRecord) -> None:
        """Record ``child`` as a live child of ``parent`` (cancelled when it ends)."""
        self._children.setdefault(parent.id, []).append(child)

    def retire(self, job: JobRecord) -> bool:
        """Forget a live job: unlink it from its family, move it to the history.

        Returns True when no live job is left.
        """
        self.live.pop(job.id, None)
        parent = job.parent
        if parent is not None:
            siblings = self._children.get(parent.id)
            if siblings is not None:
                try:
                    siblings.remove(job)
                except ValueError:
                    pass
                if not siblings:
                    del self._children[parent.id]
        if job.remote is not None:
            self._requests.pop(job.remote, None)
        self._history.append(job.handle)
        return not self.live

    def count_end(self, status: OperationStatus) -> None:
        """Count a job that ended with ``status``."""
        self._ended[status] += 1

    # -- looking up ----------------------------------------------------------------------------
    def has_children(self, job_id: int) -> bool:
        """Whether job ``job_id`` has live children."""
        return job_id in self._children

    def children_of(self, job_id: int) -> list[JobRecord]:
        """The live children of job ``job_id`` (a copy)."""
        return list(self._children.get(job_id, ()))

    def by_request(self, key: tuple[int, int, int]) -> JobRecord | None:
        """The child job a worker asked for: (worker index, pid, request number)."""
        return self._requests.get(key)

    def find(self, job_id: int) -> JobHandle[Any] | None:
        """A live job, or a finished one still in the history, by id."""
        job = self.live.get(job_id)
        if job is None:
            for old in self._history:
                if old.id == job_id:
                    return old
            return None
        return job.handle

    def of(self, handle: JobHandle[Any]) -> JobRecord | None:
        """The record of a live job, from its handle."""
        job = self.live.get(handle.id)
        return job if job is not None and job.handle is handle else None

    def every(self) -> list[JobHandle[Any]]:
        """The finished jobs still in the history, then the live ones."""
        return list(self._history) + [job.handle for job in self.live.values()]

    def select(
        self,
        match: Callable[[str], Any] | None = None,
        status: OperationStatus | None = None,
        *,
        queued_only: bool = False,
    ) -> list[JobRecord]:
        """Live jobs not already being cancelled, whose name ``match`` accepts and whose
        status is ``status`` (None: any); only the queued ones with ``queued_only``."""
        return [
            job
            for job in self.live.values()
            if (handle := job.handle).cancel_reason is None
            and (match is None or (handle.name is not None and match(handle.name)))
            and (status is None or handle.status is status)
            and (not queued_only or job.slot is None)
        ]

    def counters(self) -> tuple[int, int, int, int, int]:
        """(submitted, running, completed, cancelled, failed)."""
        running = sum(
            1 for job in self.live.values() if job.handle.status is OperationStatus.RUNNING
        )
        ended = self._ended
        return (
            self.submitted,
            running,
            ended[OperationStatus.COMPLETED],
            ended[OperationStatus.CANCELLED],
            ended[OperationStatus.FAILED],
        )

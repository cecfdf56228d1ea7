"""``JobTable``: the jobs of one pool, as the supervisor keeps them.

Live jobs by id, the queue of those waiting for a worker, the recent history, each
job's live children, the child jobs by the worker request that made them, and the
counters. It knows nothing of workers or shared memory: freeing a job's slot and its
worker's place is the supervisor's part of retiring it.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from .._core._enums import OperationStatus
from ._handle import JobHandle


class JobTable:
    """Live, queued and finished jobs; their family links; the counters.

    Not locked by itself: every method is called with the pool's lock held (reading a
    counter or a job by id without it is fine: those are single operations).
    """

    def __init__(self, history: int) -> None:
        #: Live jobs by id: registered and not yet retired (queued or in a worker).
        self.live: dict[int, JobHandle[Any]] = {}
        #: Jobs waiting for a worker, in order (the dispatcher takes from the left).
        self.queued: deque[JobHandle[Any]] = deque()
        self._history: deque[JobHandle[Any]] = deque(maxlen=history)
        self._children: dict[int, list[JobHandle[Any]]] = {}
        self._requests: dict[tuple[int, int, int], JobHandle[Any]] = {}
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

    def register(self, handle: JobHandle[Any]) -> None:
        """Count a new job as live (and, for a child job, as its worker's request)."""
        self.live[handle.id] = handle
        self.submitted += 1
        if handle._remote is not None:
            self._requests[handle._remote] = handle

    def adopt(self, parent: JobHandle[Any], child: JobHandle[Any]) -> None:
        """Record ``child`` as a live child of ``parent`` (cancelled when it ends)."""
        self._children.setdefault(parent.id, []).append(child)

    def retire(self, handle: JobHandle[Any]) -> bool:
        """Forget a live job: unlink it from its family, move it to the history.

        Returns True when no live job is left.
        """
        self.live.pop(handle.id, None)
        parent = handle.parent
        if parent is not None:
            siblings = self._children.get(parent.id)
            if siblings is not None:
                try:
                    siblings.remove(handle)
                except ValueError:
                    pass
                if not siblings:
                    del self._children[parent.id]
        if handle._remote is not None:
            self._requests.pop(handle._remote, None)
        self._history.append(handle)
        return not self.live

    def count_end(self, status: OperationStatus) -> None:
        """Count a job that ended with ``status``."""
        self._ended[status] += 1

    # -- looking up ----------------------------------------------------------------------------
    def has_children(self, job_id: int) -> bool:
        """Whether job ``job_id`` has live children."""
        return job_id in self._children

    def children_of(self, job_id: int) -> list[JobHandle[Any]]:
        """The live children of job ``job_id`` (a copy)."""
        return list(self._children.get(job_id, ()))

    def by_request(self, key: tuple[int, int, int]) -> JobHandle[Any] | None:
        """The child job a worker asked for: (worker index, pid, request number)."""
        return self._requests.get(key)

    def find(self, job_id: int) -> JobHandle[Any] | None:
        """A live job, or a finished one still in the history, by id."""
        handle = self.live.get(job_id)
        if handle is None:
            for old in self._history:
                if old.id == job_id:
                    return old
        return handle

    def every(self) -> list[JobHandle[Any]]:
        """The finished jobs still in the history, then the live ones."""
        return list(self._history) + list(self.live.values())

    def select(
        self,
        match: Callable[[str], Any] | None = None,
        status: OperationStatus | None = None,
        *,
        queued_only: bool = False,
    ) -> list[JobHandle[Any]]:
        """Live jobs not already being cancelled, whose name ``match`` accepts and whose
        status is ``status`` (None: any); only the queued ones with ``queued_only``."""
        return [
            handle
            for handle in self.live.values()
            if handle._cancel_reason is None
            and (match is None or (handle.name is not None and match(handle.name)))
            and (status is None or handle._status is status)
            and (not queued_only or handle._slot is None)
        ]

    def counters(self) -> tuple[int, int, int, int, int]:
        """(submitted, running, completed, cancelled, failed)."""
        running = sum(1 for h in self.live.values() if h._status is OperationStatus.RUNNING)
        ended = self._ended
        return (
            self.submitted,
            running,
            ended[OperationStatus.COMPLETED],
            ended[OperationStatus.CANCELLED],
            ended[OperationStatus.FAILED],
        )

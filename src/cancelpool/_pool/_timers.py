"""The supervisor's timers: a heap of deadlines, one per job attempt and purpose.

Two kinds: a *backstop* cancels a job that ran past its timeout (the worker enforces
timeouts itself; this catches a worker whose loop is blocked), a *force* timer kills
the worker of a job that ignored its cancellation for its grace period. A timer names
the job and the attempt it was armed for: when it fires, a job that ended or runs again
meanwhile (another attempt) is left alone, so timers are never disarmed, only ignored.
"""

from __future__ import annotations

import heapq
from typing import NamedTuple

from ._wakeup import Wakeup

# The kinds of timers.
BACKSTOP = 0
FORCE = 1


class Timer(NamedTuple):
    """One armed timer. ``ring`` is, for a force timer, the number of the doorbell ring
    that told the worker of the cancellation (see :class:`~._loop_state.LoopState`)."""

    deadline: float
    job: int
    attempt: int
    kind: int
    ring: int = 0


class Timers:
    """The armed timers, earliest first. Not thread-safe: used under the pool's lock.

    Arming a timer wakes the supervisor thread through ``wakeup`` only if it is due
    before the supervisor's poll ends anyway (:attr:`sleeping_until`, which the
    supervisor sets before it polls). A cancellation arms a force timer seconds ahead:
    waking the supervisor for it cost the cancelling thread the GIL for a turn of the
    supervisor's loop, right while the cancellation was on its way.
    """

    def __init__(self, wakeup: Wakeup) -> None:
        self._heap: list[Timer] = []
        self._wakeup = wakeup
        #: The latest time (monotonic) at which the supervisor's next or current poll
        #: ends; None: it may wait for ever. Set by the supervisor under the lock.
        self.sleeping_until: float | None = None

    def add(self, deadline: float, job: int, attempt: int, kind: int, ring: int = 0) -> None:
        """Arm a timer (lock held)."""
        heapq.heappush(self._heap, Timer(deadline, job, attempt, kind, ring))
        until = self.sleeping_until
        if until is None or deadline < until:
            self._wakeup.wake()

    def next_deadline(self) -> float | None:
        """When the earliest timer fires (monotonic), or None: none is armed."""
        return self._heap[0].deadline if self._heap else None

    def pop_due(self, now: float) -> list[Timer]:
        """Remove and return the timers whose deadline is ``now`` or earlier, in order."""
        due: list[Timer] = []
        heap = self._heap
        while heap and heap[0].deadline <= now:
            due.append(heapq.heappop(heap))
        return due

    def __len__(self) -> int:
        return len(self._heap)

"""What the supervisor knows of one worker's event loop: rings heard, blocks reported.

::

    supervisor (this object, one per worker process)        worker process
    ------------------------------------------------        --------------
    ring(bell): rung += 1, doorbell.ring()  --- eventfd --->  drain() -> n rings
    heard(count) <------ BellHeard(count) ------------------  heard += n
    report(LoopBlocked | LoopResumed) <--- watchdog thread -  the loop is (not) held

Rings are counted, not timed. The supervisor numbers each ring of a worker's doorbell;
the worker adds up what each drain consumed (an eventfd drain returns the number of
rings it took) and says the total in ``BellHeard``. A cancellation rung as ring ``r``
has been heard once the worker's total reaches ``r``: a ``BellHeard`` for an earlier
drain that arrives after a later ring does not count for the later one (a clock stamp
on arrival would). A ring the channel dropped (a full pipe doorbell, non-Linux only)
is never counted as heard: the forced stop then waits for the watchdog's verdict, the
safe side.

When a job must be force-stopped and its ring went unheard with no block reported, the
report that names the job to blame may still be on its way: the stop waits for it once
(:meth:`wants_verdict`); the report, or a ``BellHeard`` that covers the job's ring,
ends the wait.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from . import _protocol as proto

if TYPE_CHECKING:
    from ..shm import Doorbell

logger = logging.getLogger("cancelpool")


class LoopState:
    """The supervisor's view of one worker process's event loop (a new one per process)."""

    def __init__(self) -> None:
        self._rung = 0
        self._heard = 0
        # The watchdog's report while the loop is blocked (None otherwise), and when
        # (monotonic) the block began.
        self._blocked: proto.LoopBlocked | None = None
        self._blocked_since = 0.0
        # Jobs whose forced stop waits for the watchdog's verdict (with the number of
        # the ring that cancelled each), and every job that has waited once.
        self._awaiting: dict[int, int] = {}
        self._waited: set[int] = set()

    # -- the doorbell ----------------------------------------------------------------------
    def ring(self, bell: Doorbell) -> int:
        """Ring the worker's doorbell (lock held); returns the ring's number."""
        self._rung += 1
        bell.ring()
        return self._rung

    def heard(self, count: int) -> list[int]:
        """The worker's loop has drained ``count`` rings in all; returns the jobs whose
        forced stop waited for a verdict and whose ring is now heard: the loop turns,
        so they ignored their cancellation and are stopped now."""
        if count > self._heard:
            self._heard = count
        heard = [job for job, ring in self._awaiting.items() if ring <= self._heard]
        for job in heard:
            del self._awaiting[job]
        return heard

    def was_heard(self, ring: int) -> bool:
        """Whether the worker's loop has drained ring number ``ring``."""
        return self._heard >= ring

    # -- the watchdog's reports ---------------------------------------------------------------
    def report(self, message: proto.LoopBlocked | proto.LoopResumed) -> list[int]:
        """Record what the worker's watchdog says; returns the jobs whose forced stop
        waited for it (they are stopped now)."""
        if isinstance(message, proto.LoopResumed):
            self._blocked = None
        else:
            self._blocked = message
            self._blocked_since = time.monotonic() - message.seconds
        return self._verdict()

    @property
    def blocked_job(self) -> int | None:
        """The job the watchdog says holds the loop now (None: none, or no job's task)."""
        return self._blocked.job if self._blocked is not None else None

    @property
    def blocked_stack(self) -> str:
        """Where the loop is held, as the watchdog saw it ("" if it is not held)."""
        return self._blocked.stack if self._blocked is not None else ""

    @property
    def blocked(self) -> bool:
        """Whether the watchdog says the loop is held now."""
        return self._blocked is not None

    def blocked_for(self, now: float) -> float:
        """Seconds the loop has been held at ``now`` (0.0 if it is not)."""
        return now - self._blocked_since if self._blocked is not None else 0.0

    # -- forced stops ---------------------------------------------------------------------------
    def wants_verdict(self, job: int, ring: int) -> bool:
        """Whether the forced stop of ``job`` (cancelled by ring ``ring``) waits for the
        watchdog first: only when the ring went unheard, no block is reported yet, and
        the job has not waited before (a verdict is awaited once per job)."""
        if self._blocked is not None or self.was_heard(ring) or job in self._waited:
            return False
        self._waited.add(job)
        self._awaiting[job] = ring
        return True

    def _verdict(self) -> list[int]:
        awaiting = list(self._awaiting)
        self._awaiting.clear()
        return awaiting


def log_report(pid: int | None, job: str | None, message: Any) -> None:
    """Log what a worker's watchdog said of its loop (outside the pool's lock).

    ``job`` describes the job that holds the loop, None if no job's own task does.
    """
    if isinstance(message, proto.LoopResumed):
        logger.info(
            "cancelpool: the event loop of worker %s turns again after %.1f s",
            pid,
            message.seconds,
        )
        return
    who = job or "code that is no job's own task (a task a job started, or the worker's)"
    logger.warning(
        "cancelpool: %s has blocked the event loop of worker %s for %.1f s (an async "
        "function that does not await): the worker's other jobs can neither run nor "
        "hear their cancellation. Where it is:\n%s",
        who,
        pid,
        message.seconds,
        message.stack,
    )

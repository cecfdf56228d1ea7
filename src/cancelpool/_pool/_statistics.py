"""The counters a pool reports (``CancelPool.statistics()``), frozen snapshots."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._job_table import JobTable
    from ._worker_set import WorkerSet


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
    #: Standby worker processes started and ready to replace a worker (``spare_workers``).
    spares: int = 0


def snapshot(jobs: JobTable, workers: WorkerSet) -> PoolStatistics:
    """The counters of a pool now (the pool's lock held)."""
    now = time.monotonic()
    submitted, running, completed, cancelled, failed = jobs.counters()
    return PoolStatistics(
        submitted=submitted,
        queued=len(jobs.live) - running,
        running=running,
        completed=completed,
        cancelled=cancelled,
        failed=failed,
        workers=tuple(
            WorkerStatistics(
                pid=p.pid,
                running=len(p.inflight),
                completed=p.completed,
                blocked_by=p.loop.blocked_job,
                blocked_for=p.loop.blocked_for(now),
            )
            for p in workers.procs
        ),
        spares=sum(1 for p in workers.spares if p.alive),
    )

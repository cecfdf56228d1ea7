"""The counters a pool reports (``CancelPool.statistics()``), frozen snapshots."""

from __future__ import annotations

from dataclasses import dataclass


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

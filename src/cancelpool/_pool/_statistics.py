"""The counters a pool reports (``CancelPool.statistics()``), frozen snapshots."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerStatistics:
    """One worker's load."""

    pid: int | None
    running: int
    completed: int


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

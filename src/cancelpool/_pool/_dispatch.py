"""Placing jobs on workers: a token-table slot each, one frame per worker.

A job is sent when it is submitted if a worker is idle (the lowest latency); otherwise
it waits in the job table's queue, and the supervisor thread moves queued jobs to
workers with room in batches, one frame (one write, one wake-up of the worker) per
worker. A job with a timeout gets a *backstop* timer when it is placed: the worker
enforces the timeout itself, the backstop cancels a job whose worker's loop is blocked
and so cannot.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..shm import TableFull
from . import _protocol as proto
from ._timers import BACKSTOP

if TYPE_CHECKING:
    from ._job_table import JobRecord, JobTable
    from ._timers import Timers
    from ._worker_set import WorkerProc, WorkerSet

#: Extra time the supervisor gives a job past its timeout before it cancels the job
#: itself (the worker enforces timeouts precisely; this only catches a worker whose
#: loop is blocked). Shorter fires spuriously on a loaded machine; longer stops late.
BACKSTOP_MARGIN = 0.25
#: Seconds a plain (sync) function may wait for an idle worker while async jobs queued
#: after it are placed on busy ones. Longer favours throughput, shorter the function.
SYNC_PATIENCE = 0.5


class Dispatcher:
    """Sends jobs to workers, and takes them off when they end (every method under
    the pool's lock)."""

    def __init__(self, jobs: JobTable, workers: WorkerSet, timers: Timers) -> None:
        self._jobs = jobs
        self._workers = workers
        self._timers = timers

    def place(self, proc: WorkerProc, jobs: list[JobRecord]) -> None:
        """Send jobs to one worker: allocate their slots, write one frame. A job for
        which the token table has no slot left goes back to the front of the queue."""
        table = self._workers.table
        assert table is not None
        messages = []
        for job in jobs:
            parent = job.parent
            parent_slot = parent.slot if parent is not None and not parent.handle.done() else None
            try:
                slot = table.allocate(parent_slot)
            except TableFull:
                self._jobs.queued.appendleft(job)
                if not proc.inflight:
                    proc.exclusive = False
                continue
            job.placed(slot, proc.index)
            proc.inflight.add(job.id)
            proc.dispatched += 1
            timeout = job.handle.timeout
            if timeout is not None:
                # Armed now, not when the job reports it started: a worker whose
                # loop is blocked reports nothing, and that is the case to catch.
                deadline = time.monotonic() + timeout + BACKSTOP_MARGIN
                self._timers.add(deadline, job.id, job.attempts, BACKSTOP)
            if not job.is_async:
                proc.exclusive = True
            messages.append(
                proto.Run(
                    job.id,
                    slot.index,
                    slot.generation,
                    job.fn,
                    job.args,
                    job.handle.name,
                    timeout,
                    job.is_async,
                    None if job.trace is None else proto.JobTrace(job.trace, job.attempts),
                )
            )
        if messages:
            self._workers.write(proc, proto.frame(messages))

    def drain_queue(self) -> None:
        """Move queued jobs to workers with room, one frame per worker.

        A plain function waiting for an idle worker does not hold up the async jobs
        behind it, unless it has waited longer than SYNC_PATIENCE: then nothing more is
        placed, so that the workers drain and it gets one. Jobs cancelled while queued
        are dropped here (they were resolved when cancelled).
        """
        batches: dict[int, list[JobRecord]] = {}
        queue = self._jobs.queued
        live = self._jobs.live
        waiting: list[JobRecord] = []
        now = time.time()
        while queue:
            job = queue.popleft()
            if job.handle.cancel_reason is not None or job.id not in live:
                continue
            exclusive = not job.is_async
            proc = self._workers.pick(exclusive)
            if proc is None:
                waiting.append(job)
                if not exclusive or now - job.handle.submitted_at > SYNC_PATIENCE:
                    break
                continue
            batches.setdefault(proc.index, []).append(job)
            # Counted now so that the next pick sees this worker's new load.
            proc.inflight.add(job.id)
            proc.dispatched += 1
            if exclusive:
                proc.exclusive = True
        queue.extendleft(reversed(waiting))
        for index, batch in batches.items():
            proc = self._workers.procs[index]
            for job in batch:
                proc.inflight.discard(job.id)
                proc.dispatched -= 1  # place() counts it for good
            self.place(proc, batch)

    def retire(self, job: JobRecord) -> None:
        """Forget a live job: free its token slot and its place on its worker."""
        self._jobs.retire(job)
        table = self._workers.table
        if job.slot is not None and table is not None:
            table.release(job.slot)
        if job.worker is not None:
            proc = self._workers.procs[job.worker]
            proc.inflight.discard(job.id)
            if not proc.inflight:
                proc.exclusive = False
            proc.completed += 1

"""Cancelling jobs, and stopping the ones that do not stop.

Where a cancel starts and how it spreads, kept apart as trio keeps them::

    cancel(jobs)  --> each job: marked on its handle (reason, message)
                      queued: retired, resolved by the caller now (it never starts)
                      placed: its token slot := CANCELLED (shared memory: its worker
                              reads it at once), its worker's doorbell rung (once per
                              worker, the ring numbered), a FORCE timer armed for its
                              grace period with that ring's number
                      its live children: cancelled too, reason PARENT (cascade)
                  (in that order over all the jobs: first every slot, then the doorbells,
                  then the timers, queued jobs and cascades, while the rings travel)
    FORCE timer   --> the job still runs: its worker is killed, unless the ring went
                      unheard and the watchdog has not spoken yet: then the stop waits
                      once for the verdict that names the job to blame (_loop_state)
    BACKSTOP timer -> a job past its timeout whose worker did not stop it: cancelled
                      with reason TIMEOUT

Every method runs under the pool's lock and returns the jobs to resolve once the lock
is released (a handle's done callbacks run the caller's code).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .._core._enums import CancelationReason
from ._timers import BACKSTOP, FORCE

if TYPE_CHECKING:
    from . import _protocol as proto
    from ._dispatch import Dispatcher
    from ._job_table import JobRecord, JobTable
    from ._settings import PoolSettings
    from ._timers import Timers
    from ._worker_set import WorkerProc, WorkerSet

#: Seconds a forced stop waits, once, for the worker's watchdog to say who blocks the
#: loop, when the loop has not heard the cancellation (the watchdog reports 0.1 s after
#: a ring goes unheard; this leaves room for a loaded machine). Only a blocked (or
#: starved) worker waits: a loop that heard the cancellation is killed on time.
VERDICT_WAIT = 1.0


class Canceller:
    """Cancels jobs of one pool and force-stops those that ignore it."""

    def __init__(
        self,
        settings: PoolSettings,
        jobs: JobTable,
        workers: WorkerSet,
        timers: Timers,
        dispatcher: Dispatcher,
    ) -> None:
        self._grace = settings.cancel_grace
        self._watched = settings.loop_block_threshold is not None
        self._jobs = jobs
        self._workers = workers
        self._timers = timers
        self._dispatcher = dispatcher

    def cancel(
        self, jobs: list[JobRecord], reason: CancelationReason, message: str | None
    ) -> tuple[int, list[JobRecord]]:
        """Cancel jobs and their descendants; returns (how many were live and not yet
        cancelled, the jobs to resolve as cancelled now)."""
        resolved: list[JobRecord] = []
        targets: list[JobRecord] = []
        bells: set[int] = set()
        table = self._workers.table
        live = self._jobs.live
        # First what the workers read, then their doorbells: everything else (the
        # handles, the timers, the cascade) happens while the cancellations travel.
        for job in jobs:
            handle = job.handle
            if handle.cancel_reason is not None or job.id not in live:
                continue
            handle._mark_cancelled(
                reason, message or f"job {job.id} was cancelled ({reason.value})"
            )
            targets.append(job)
            if job.slot is not None and table is not None:
                table.cancel(job.slot, reason)
                if job.worker is not None:
                    bells.add(job.worker)
        rings: dict[int, int] = {}
        for index in bells:
            proc = self._workers.procs[index]
            if proc.bell is not None:
                rings[index] = proc.loop.ring(proc.bell)
        now = time.monotonic()
        for job in targets:
            if job.slot is None:
                # Still in our queue: it never starts. Resolved right here.
                self._dispatcher.retire(job)
                resolved.append(job)
            elif table is not None:
                grace = job.handle.cancel_grace
                deadline = now + (self._grace if grace is None else grace)
                ring = rings.get(job.worker, 0) if job.worker is not None else 0
                self._timers.add(deadline, job.id, job.attempts, FORCE, ring)
            if self._jobs.has_children(job.id):
                resolved += self.cascade(job, f"was cancelled ({reason.value})")
        return len(targets), resolved

    def cascade(self, parent: JobRecord, what: str) -> list[JobRecord]:
        """Cancel every live descendant of ``parent`` with reason PARENT; ``what`` says
        what became of the parent. Returns the jobs to resolve now."""
        children = self._jobs.children_of(parent.id)
        if not children:
            return []
        handle = parent.handle
        message = f"parent job {parent.id} ({handle.name or '-'}) {what}"
        if handle.cancel_reason is CancelationReason.PARENT and handle.cancel_message:
            message += f": {handle.cancel_message}"  # up to the ancestor that began it
        return self.cancel(children, CancelationReason.PARENT, message)[1]

    def fire(self, now: float) -> list[JobRecord]:
        """Act on the timers due at ``now``; returns the jobs to resolve now."""
        backstops: list[JobRecord] = []
        forced: list[tuple[JobRecord, int, int]] = []
        for timer in self._timers.pop_due(now):
            job = self._jobs.live.get(timer.job)
            if job is None or job.attempts != timer.attempt:
                continue  # ended, or runs again: the timer was for another attempt
            if timer.kind == BACKSTOP:
                backstops.append(job)
            elif job.slot is not None and job.worker is not None:
                forced.append((job, job.worker, timer.ring))
        resolved = self.cancel(backstops, CancelationReason.TIMEOUT, "the job ran past its timeout")
        for job, index, ring in forced:
            proc = self._workers.procs[index]
            if proc.alive and proc.process is not None and proc.forced_for is None:
                if self._await_verdict(proc, job, ring, now):
                    continue
                # It ignored its cancellation for the whole grace period.
                proc.forced_for = job.id
                proc.kill()
        return resolved[1]

    # -- the watchdog's verdict --------------------------------------------------------------
    def heard(self, proc: WorkerProc, count: int) -> None:
        """The worker says its loop has drained ``count`` rings in all."""
        self._verdict_in(proc.loop.heard(count))

    def loop_report(
        self, proc: WorkerProc, message: proto.LoopBlocked | proto.LoopResumed
    ) -> JobRecord | None:
        """Record what the worker's watchdog says of its loop; the forced stops that
        waited for it happen now. Returns the live job it says blocks the loop."""
        self._verdict_in(proc.loop.report(message))
        blocked = proc.loop.blocked_job
        job = self._jobs.live.get(blocked) if blocked is not None else None
        if job is not None:
            job.handle._set_blocked_stack(proc.loop.blocked_stack)
        return job

    def blocker(self, proc: WorkerProc) -> JobRecord | None:
        """The job to blame for the death of ``proc``: the one its watchdog said blocks
        its loop, if the worker was killed to force a stop (not by ``terminate()``)."""
        job = proc.loop.blocked_job
        if not proc.forced_for or job is None or job not in proc.inflight:
            return None  # forced_for 0: terminate() killed it, nobody is to blame
        return self._jobs.live.get(job)

    def _await_verdict(self, proc: WorkerProc, job: JobRecord, ring: int, now: float) -> bool:
        """Whether a forced stop of ``job`` (cancelled by doorbell ring ``ring``) waits
        for the watchdog: True (and the stop re-armed VERDICT_WAIT from now, once per
        job) when the worker's loop has not heard that ring and no block is reported
        yet, since the report that names the job to blame may be on its way."""
        if not self._watched or not proc.loop.wants_verdict(job.id, ring):
            return False
        self._timers.add(now + VERDICT_WAIT, job.id, job.attempts, FORCE, ring)
        return True

    def _verdict_in(self, jobs: list[int]) -> None:
        now = time.monotonic()
        for job_id in jobs:
            job = self._jobs.live.get(job_id)
            if job is not None and job.handle.cancel_reason is not None:
                self._timers.add(now, job.id, job.attempts, FORCE)

"""What a worker's death means for each job it held: run again, cancelled, or lost.

A pure decision, kept apart from the acting on it (the supervisor retires, requeues
and resolves): given the jobs and how the worker died, :func:`judge` says each job's
fate and the sentence its handle ends with.

- The worker was killed to force-stop a job that ignored its cancellation
  (``forced_for``): the jobs being cancelled end cancelled (``forced``); the others
  are lost with :class:`WorkerKilled` naming that job.
- It was killed while its watchdog said job B blocks its event loop (``blocker``): B
  is blamed (``WorkerKilled``: it blocked the loop, with its stack) and never runs
  again; the jobs being cancelled end cancelled as asked, *not* forced (they never
  got the chance to hear it), their partial result their last checkpoint; the other
  bystanders are lost with ``WorkerKilled`` naming B.
- It died on its own: the jobs with retries left run again; the others are lost with
  :class:`WorkerCrashed` saying how it died.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._core._exceptions import WorkerCrashed, WorkerKilled

if TYPE_CHECKING:
    from ._job_table import JobRecord


@dataclass(frozen=True)
class Death:
    """How one worker process died."""

    pid: int | None
    #: "killed by signal 9", "exit code 1", ...
    how: str
    #: The job it was killed to force-stop; 0 when ``terminate()`` killed it, None
    #: when it died on its own.
    forced_for: int | None
    #: The job its watchdog said blocks its loop when it was killed, if any.
    blocker: JobRecord | None
    #: Seconds the blocker had held the loop.
    blocked_for: float
    #: Whether a job with retries left may run again (the pool still runs).
    may_retry: bool


@dataclass(frozen=True)
class Fate:
    """What becomes of one job of the dead worker."""

    job: JobRecord
    #: Run it again from the start.
    retry: bool = False
    #: Lost: it fails with this error.
    error: BaseException | None = None
    #: Cancelled: the message it ends with, when the death changes it.
    cancel_message: str | None = None
    #: Cancelled, and its end was forced by the kill (it ignored its cancellation,
    #: or was being cancelled when a job was force-stopped).
    forced: bool = False
    #: What its live children hear as the reason they are cancelled (unless it runs
    #: again).
    cascade: str = ""


def judge(jobs: list[JobRecord], death: Death) -> list[Fate]:
    """The fate of each job the dead worker held (partial results already loaded)."""
    blocker = death.blocker
    blame = ""
    if blocker is not None:
        blame = (
            f"job {blocker.id} ({blocker.handle.name or '-'}) blocked its event loop for "
            f"{death.blocked_for:.1f} s"
        )
    fates: list[Fate] = []
    for job in jobs:
        handle = job.handle
        reason = handle.cancel_reason
        if job is blocker and reason is None:
            # Not run again: it would block the loop again.
            killed = WorkerKilled(
                f"job {job.id} ({handle.name or '-'}) was stopped: it blocked its "
                f"worker's event loop for {death.blocked_for:.1f} s (an async function "
                f"that does not await), so job {death.forced_for}'s cancellation could "
                f"not be heard and its worker (pid {death.pid}) was killed; it was "
                f"at:\n{handle.blocked_stack or ''}",
                job_id=str(job.id),
                partial_result=handle.partial_result,
            )
            fates.append(Fate(job, error=killed, cascade="was stopped: it blocked its worker"))
            continue
        if reason is not None:
            cascade = f"was cancelled ({reason})"
            if blocker is not None and job is not blocker:
                # Its cancellation went unheard only because another job blocked the
                # loop: it ends cancelled as asked, not forced.
                message = (
                    f"{handle.cancel_message}; its worker (pid {death.pid}) was killed "
                    f"because {blame}, so its partial result is its last checkpoint"
                )
                fates.append(Fate(job, cancel_message=message, cascade=cascade))
                continue
            # Placed on the worker: its end was forced by the kill, if there was one.
            forced = death.forced_for is not None and job.slot is not None
            fates.append(Fate(job, forced=forced, cascade=cascade))
            continue
        if job.attempts <= handle.retries and death.may_retry:
            fates.append(Fate(job, retry=True))
            continue
        fates.append(Fate(job, error=_lost(job, death, blame), cascade="was lost with its worker"))
    return fates


def _lost(job: JobRecord, death: Death, blame: str) -> BaseException:
    partial = job.handle.partial_result
    if death.blocker is not None:
        return WorkerKilled(
            f"job {job.id} was lost: its worker (pid {death.pid}) was killed because "
            f"{blame} (an async function that does not await), and job "
            f"{death.forced_for}'s cancellation could not be heard",
            job_id=str(job.id),
            partial_result=partial,
        )
    if death.forced_for is not None:
        return WorkerKilled(
            f"job {job.id} was lost: its worker (pid {death.pid}) was killed to "
            f"force-stop job {death.forced_for}, which ignored its cancellation",
            job_id=str(job.id),
            partial_result=partial,
        )
    return WorkerCrashed(
        f"job {job.id} was lost: its worker process (pid {death.pid}) died ({death.how})",
        job_id=str(job.id),
        partial_result=partial,
    )

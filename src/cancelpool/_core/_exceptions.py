"""Every exception cancelpool raises, in one place.

::

    Exception
     +-- CancelationError                 an operation was cancelled by its own sources
     |    +-- TimeoutCancelation          ... its deadline passed (also a TimeoutError)
     |    +-- ManualCancelation           ... a token or cancel() call stopped it
     |    +-- SignalCancelation           ... an OS signal arrived
     |    +-- ConditionCancelation        ... a condition or resource threshold fired
     |    +-- ParentCancelation           ... an ancestor operation was cancelled
     |    +-- JobCancelled                a pool job was cancelled (also a
     |                                    concurrent.futures.CancelledError)
     +-- RuntimeError
          +-- PoolError                   the pool cannot do what was asked
               +-- PoolClosed             submit() after shutdown (or interpreter exit)
               +-- PoolBroken             the pool cannot run jobs any more: its
               |                          supervisor failed, or its initializer did
               |                          (also a concurrent.futures.BrokenExecutor)
               +-- WorkerLost             a job was lost with its worker process
                    +-- WorkerKilled      ... killed by the pool to force-stop another job
                    +-- WorkerCrashed     ... that died on its own (exit code or signal)

A cancellation that comes from *outside* a :class:`Cancelable` (an enclosing cancel
scope, the task itself being cancelled) is never turned into one of these: it propagates
as the async backend's own cancelled exception.
"""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING, Any

from ._enums import CancelationReason

if TYPE_CHECKING:
    from ._context import OperationContext


class CancelationError(Exception):
    """An operation was cancelled by one of its own cancellation sources.

    Attributes:
        reason: why it was cancelled.
        message: a human-readable explanation.
        context: the :class:`OperationContext` of the cancelled operation (its
            ``partial_result`` holds whatever the operation saved), or ``None``.
    """

    default_reason = CancelationReason.MANUAL

    def __init__(
        self,
        reason: CancelationReason | None = None,
        message: str | None = None,
        context: OperationContext | None = None,
    ) -> None:
        self.reason = reason if reason is not None else self.default_reason
        self.message = message or f"operation cancelled ({self.reason.value})"
        self.context = context
        super().__init__(self.message)

    @property
    def partial_result(self) -> Any:
        """The partial result the operation recorded before it stopped, if any."""
        return None if self.context is None else self.context.partial_result

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.message, self.context))


class TimeoutCancelation(CancelationError, TimeoutError):
    """The operation's deadline passed."""

    default_reason = CancelationReason.TIMEOUT


class ManualCancelation(CancelationError):
    """A token was cancelled or ``cancel()`` was called."""

    default_reason = CancelationReason.MANUAL


class SignalCancelation(CancelationError):
    """An operating-system signal the operation listened for arrived."""

    default_reason = CancelationReason.SIGNAL


class ConditionCancelation(CancelationError):
    """A condition (or resource threshold) the operation watched became true."""

    default_reason = CancelationReason.CONDITION


class ParentCancelation(CancelationError):
    """An ancestor operation was cancelled, taking this one with it."""

    default_reason = CancelationReason.PARENT


_BY_REASON: dict[CancelationReason, type[CancelationError]] = {
    CancelationReason.TIMEOUT: TimeoutCancelation,
    CancelationReason.MANUAL: ManualCancelation,
    CancelationReason.SIGNAL: SignalCancelation,
    CancelationReason.CONDITION: ConditionCancelation,
    CancelationReason.PARENT: ParentCancelation,
    CancelationReason.ERROR: CancelationError,
}


def error_for_reason(
    reason: CancelationReason, message: str | None, context: OperationContext | None
) -> CancelationError:
    """Build the :class:`CancelationError` subclass that matches ``reason``."""
    return _BY_REASON[reason](reason, message, context)


class JobCancelled(CancelationError, concurrent.futures.CancelledError):
    """A pool job was cancelled: manually, by its timeout, by an ancestor, or by shutdown.

    Attributes:
        job_id: the id of the cancelled job.
        forced: True when the job ignored cancellation past its grace period and its
            worker was killed; ``partial_result`` is then the last one it checkpointed.
    """

    def __init__(
        self,
        reason: CancelationReason | None = None,
        message: str | None = None,
        context: OperationContext | None = None,
        *,
        job_id: str = "",
        partial_result: Any = None,
        forced: bool = False,
    ) -> None:
        super().__init__(reason, message, context)
        self.job_id = job_id
        self.forced = forced
        self._partial = partial_result

    @property
    def partial_result(self) -> Any:
        """The partial result the job recorded before it stopped, if any."""
        if self._partial is not None or self.context is None:
            return self._partial
        return self.context.partial_result

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_job_cancelled,
            (self.reason, self.message, self.context, self.job_id, self._partial, self.forced),
        )


def _rebuild_job_cancelled(
    reason: CancelationReason,
    message: str,
    context: OperationContext | None,
    job_id: str,
    partial: Any,
    forced: bool,
) -> JobCancelled:
    return JobCancelled(
        reason, message, context, job_id=job_id, partial_result=partial, forced=forced
    )


class PoolError(RuntimeError):
    """The pool could not do what was asked."""


class PoolClosed(PoolError):
    """The pool is shut down (or the interpreter is exiting); it accepts no more jobs."""


class PoolBroken(PoolError, concurrent.futures.BrokenExecutor):
    """The pool cannot run jobs any more; every job it held failed with this error.

    Raised when its supervisor thread failed, or when the ``initializer`` failed in a
    worker (the error's ``__cause__`` says how). ``submit()`` raises it from then on;
    ``shutdown()`` still releases everything. Also a ``concurrent.futures.BrokenExecutor``,
    as ``ProcessPoolExecutor``'s ``BrokenProcessPool`` is.
    """


class WorkerLost(PoolError):
    """The job was lost with its worker process, before it could finish.

    Catch this for both ways a worker goes: :class:`WorkerKilled` and
    :class:`WorkerCrashed`. ``partial_result`` is the last partial result the job
    checkpointed (see ``report_progress``), or None.
    """

    def __init__(self, message: str, *, job_id: str = "", partial_result: Any = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.partial_result = partial_result

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_worker_error, (type(self), str(self), self.job_id, self.partial_result))


class WorkerKilled(WorkerLost):
    """The pool killed the job's worker to force-stop another job (the message names it).

    That other job ignored its cancellation past its grace period, or blocked the
    worker's event loop; this job was a bystander.
    """


class WorkerCrashed(WorkerLost):
    """The job's worker process died on its own (exit code or signal in the message)."""


def _rebuild_worker_error(
    cls: type[WorkerLost], message: str, job_id: str, partial: Any
) -> WorkerLost:
    return cls(message, job_id=job_id, partial_result=partial)

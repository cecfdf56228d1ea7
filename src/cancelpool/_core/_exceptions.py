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
        # Subclasses take other constructor arguments: rebuild from the state instead.
        return (_rebuild_cancelation, (type(self), self.args, dict(self.__dict__)))


class TimeoutCancelation(CancelationError, TimeoutError):
    """The operation's deadline passed.

    ``TimeoutCancelation(5.0)`` (the seed library's constructor) gives a timeout of 5
    seconds and the message "Operation timed out after 5.0s".

    Attributes:
        timeout_seconds: the timeout that passed, or None where it is not known.
    """

    default_reason = CancelationReason.TIMEOUT
    timeout_seconds: float | None = None

    def __init__(
        self,
        timeout_seconds: float | None = None,
        message: str | None = None,
        context: OperationContext | None = None,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        if message is None and timeout_seconds is not None:
            message = f"Operation timed out after {timeout_seconds}s"
        super().__init__(CancelationReason.TIMEOUT, message, context)


class ManualCancelation(CancelationError):
    """A token was cancelled or ``cancel()`` was called."""

    default_reason = CancelationReason.MANUAL

    def __init__(self, message: str | None = None, context: OperationContext | None = None) -> None:
        super().__init__(
            CancelationReason.MANUAL, message or "Operation cancelled manually", context
        )


class SignalCancelation(CancelationError):
    """An operating-system signal the operation listened for arrived.

    Attributes:
        signal_number: the signal's number, or None where it is not known.
    """

    default_reason = CancelationReason.SIGNAL
    signal_number: int | None = None

    def __init__(
        self,
        signal_number: int | None = None,
        message: str | None = None,
        context: OperationContext | None = None,
    ) -> None:
        self.signal_number = signal_number
        if message is None and signal_number is not None:
            message = f"Operation cancelled by signal {signal_number}"
        super().__init__(CancelationReason.SIGNAL, message, context)


class ConditionCancelation(CancelationError):
    """A condition (or resource threshold) the operation watched became true.

    Attributes:
        condition_name: the condition's name, or None where it is not known.
    """

    default_reason = CancelationReason.CONDITION
    condition_name: str | None = None

    def __init__(
        self,
        condition_name: str | None = None,
        message: str | None = None,
        context: OperationContext | None = None,
    ) -> None:
        self.condition_name = condition_name
        if message is None:
            message = (
                f"Operation cancelled: {condition_name} condition met"
                if condition_name
                else "Operation cancelled: condition met"
            )
        super().__init__(CancelationReason.CONDITION, message, context)


class ParentCancelation(CancelationError):
    """An ancestor operation was cancelled, taking this one with it.

    Attributes:
        parent_id: the id of the cancelled parent operation, or None if not known.
        parent_reason: why the parent was cancelled, or None if not known.
    """

    default_reason = CancelationReason.PARENT
    parent_id: str | None = None
    parent_reason: CancelationReason | None = None

    def __init__(
        self,
        parent_id: str | None = None,
        parent_reason: CancelationReason | None = None,
        message: str | None = None,
        context: OperationContext | None = None,
    ) -> None:
        self.parent_id = parent_id
        self.parent_reason = parent_reason
        if message is None and parent_id is not None:
            message = f"Operation cancelled: parent {parent_id} was cancelled"
            if parent_reason is not None:
                message += f" ({parent_reason.value})"
        super().__init__(CancelationReason.PARENT, message, context)


_BY_REASON: dict[CancelationReason, type[CancelationError]] = {
    CancelationReason.TIMEOUT: TimeoutCancelation,
    CancelationReason.MANUAL: ManualCancelation,
    CancelationReason.SIGNAL: SignalCancelation,
    CancelationReason.CONDITION: ConditionCancelation,
    CancelationReason.PARENT: ParentCancelation,
    CancelationReason.ERROR: CancelationError,
}


def error_for_reason(
    reason: CancelationReason,
    message: str | None,
    context: OperationContext | None,
    **attributes: Any,
) -> CancelationError:
    """Build the :class:`CancelationError` subclass that matches ``reason``.

    The subclasses take the seed library's constructor arguments; this builds any of
    them from a reason, a message and the attributes known (``timeout_seconds``,
    ``parent_id``, ...).
    """
    cls = _BY_REASON[reason]
    error = cls.__new__(cls)
    CancelationError.__init__(error, reason, message, context)
    for name, value in attributes.items():
        setattr(error, name, value)
    return error


def _rebuild_cancelation(
    cls: type[CancelationError], args: tuple[Any, ...], state: dict[str, Any]
) -> CancelationError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


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

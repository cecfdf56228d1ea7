"""Lifecycle states of an operation and the reasons it can be cancelled."""

from __future__ import annotations

import enum


class OperationStatus(enum.StrEnum):
    """Where an operation is in its life: PENDING -> RUNNING -> COMPLETED/CANCELLED/FAILED.

    SHIELDED is reported while the operation runs inside :meth:`Cancelable.shield`.
    """

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    SHIELDED = "shielded"
    #: Named as in the seed library, which never sets it either: a timed-out
    #: operation is CANCELLED with reason TIMEOUT. Terminal.
    TIMEOUT = "timeout"

    @property
    def is_terminal(self) -> bool:
        """True once the operation has finished, one way or another."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        OperationStatus.COMPLETED,
        OperationStatus.CANCELLED,
        OperationStatus.FAILED,
        OperationStatus.TIMEOUT,
    }
)


class CancelationReason(enum.StrEnum):
    """Why an operation was cancelled."""

    TIMEOUT = "timeout"
    MANUAL = "manual"
    SIGNAL = "signal"
    CONDITION = "condition"
    PARENT = "parent"
    ERROR = "error"

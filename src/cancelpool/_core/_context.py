"""The observable state of one operation: what it is, where it is, why it stopped."""

from __future__ import annotations

import random
import time
from typing import Any

from ._enums import CancelationReason, OperationStatus

_random_bits = random.getrandbits
# Bits a version-4 UUID fixes: version 4 (bits 76-79) and the RFC 4122 variant (bits 62-63).
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_operation_id() -> str:
    """A random (version 4) UUID string.

    Several times cheaper than ``str(uuid.uuid4())``, which reads ``os.urandom``: ids
    must be unique, not secret. ``random`` is reseeded in forked children, so worker
    processes do not repeat each other's ids.
    """
    value = (_random_bits(128) & _UUID4_CLEAR) | _UUID4_SET
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class OperationContext:
    """State and metadata of one operation.

    A context is created with its :class:`Cancelable` and stays readable after the
    operation ends: status, timing, the cancellation reason and message, the error, and
    the ``partial_result`` the operation stored before it was stopped. Contexts pickle,
    so they cross process boundaries with a job's outcome.
    """

    __slots__ = (
        "_id",
        "cancel_message",
        "cancel_reason",
        "end_time",
        "error",
        "metadata",
        "name",
        "parent_id",
        "partial_result",
        "start_time",
        "status",
    )

    def __init__(
        self,
        *,
        id: str | None = None,
        name: str | None = None,
        parent_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._id = id
        self.name = name
        self.parent_id = parent_id
        self.metadata: dict[str, Any] = metadata if metadata is not None else {}
        self.status = OperationStatus.PENDING
        # Set at creation, as in the seed library; stamped again when the operation
        # starts, so that its duration is the time it ran.
        self.start_time: float | None = time.time()
        self.end_time: float | None = None
        self.cancel_reason: CancelationReason | None = None
        self.cancel_message: str | None = None
        self.partial_result: Any = None
        self.error: BaseException | None = None

    @property
    def id(self) -> str:
        """A unique id (a UUID string unless one was given), made on first use."""
        if self._id is None:
            self._id = new_operation_id()
        return self._id

    @property
    def elapsed_time(self) -> float | None:
        """Seconds from start to end (or to now while running); None before start."""
        if self.start_time is None or (
            self.end_time is None and self.status is OperationStatus.PENDING
        ):
            return None
        end = self.end_time if self.end_time is not None else time.time()
        return end - self.start_time

    @property
    def duration(self) -> float | None:
        """Same as :attr:`elapsed_time`."""
        return self.elapsed_time

    @property
    def duration_seconds(self) -> float | None:
        """Seconds the operation ran, as the seed library names it (see
        :attr:`elapsed_time`); None while it has not ended and is not running."""
        if self.end_time is None and self.status is not OperationStatus.RUNNING:
            return None
        return self.elapsed_time

    @property
    def is_terminal(self) -> bool:
        """True once the operation has completed, failed or been cancelled."""
        return self.status.is_terminal

    @property
    def is_success(self) -> bool:
        """True if the operation completed normally."""
        return self.status is OperationStatus.COMPLETED

    @property
    def is_cancelled(self) -> bool:
        """True if the operation ended cancelled (for any reason)."""
        return self.status in (OperationStatus.CANCELLED, OperationStatus.TIMEOUT)

    def update_status(self, status: OperationStatus) -> None:
        """Set the status; a terminal one also stamps ``end_time`` (seed library API).

        Meant for contexts a program keeps itself (a shield's tracking operation);
        a running :class:`Cancelable` sets its own status.
        """
        if not isinstance(status, OperationStatus):
            raise TypeError(f"status must be an OperationStatus, not {status!r}")
        self.status = status
        if status.is_terminal:
            self.end_time = time.time()

    def log_context(self) -> dict[str, Any]:
        """The fields to pass as ``extra=`` to a logging call (seed library API)."""
        return {
            "operation_id": self.id,
            "operation_name": self.name,
            "status": self.status.value,
            "duration_seconds": self.duration_seconds,
            "parent_id": self.parent_id,
            "has_error": self.error is not None,
            "cancel_reason": None if self.cancel_reason is None else self.cancel_reason.value,
        }

    def copy(self) -> OperationContext:
        """A snapshot of this context, detached from the live operation."""
        self.id  # noqa: B018  -- made now, so that the snapshot keeps the same id
        new = OperationContext.__new__(OperationContext)
        for slot in OperationContext.__slots__:
            setattr(new, slot, getattr(self, slot))
        new.metadata = dict(self.metadata)
        return new

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (the error as its repr, enums as their values)."""
        return {
            "id": self.id,
            "name": self.name,
            "parent_id": self.parent_id,
            "status": self.status.value,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "elapsed_time": self.elapsed_time,
            "cancel_reason": None if self.cancel_reason is None else self.cancel_reason.value,
            "cancel_message": self.cancel_message,
            "error": None if self.error is None else repr(self.error),
            "metadata": dict(self.metadata),
        }

    def __getstate__(self) -> dict[str, Any]:
        state = {slot: getattr(self, slot) for slot in OperationContext.__slots__}
        state["_id"] = self.id
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for slot, value in state.items():
            setattr(self, slot, value)

    def __repr__(self) -> str:
        reason = f", reason={self.cancel_reason.value}" if self.cancel_reason else ""
        return (
            f"<OperationContext {self.name or '-'} id={self.id[:8]} "
            f"status={self.status.value}{reason}>"
        )

"""The token of one operation: cancelled whenever the operation is, and readable from
any thread without waiting for the event loop.

Synchronous code (in a worker thread, or on the loop without awaiting) polls
``op.token.is_cancelled`` or calls ``op.token.check()``. The loop learns of a
cancellation on its own schedule; the token does not wait for it. It reads:

* the monotonic clock against the binding deadline (the operation's own or one carried
  from an ancestor), while the loop enforces the same deadline on its own clock;
* the tokens the operation and its ancestors watch, whose flags may be raised where no
  listener runs (a shared-memory token cancelled by another process).

What the token finds it reports back through the two callables its operation gave it,
so that the operation is cancelled too, as if the loop had seen it first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ._enums import CancelationReason
from ._token import CancelationToken, Listener

#: Polls what the operation watches: ``(reason, message)`` of a cancellation found
#: there (the operation has been told), or None.
Poll = Callable[[], "tuple[CancelationReason, str | None] | None"]
#: Called once the binding deadline has passed by the clock: False if its owner ended
#: before it (the deadline no longer applies), True once the owner has been told.
DeadlinePassed = Callable[[], bool]


class OperationToken(CancelationToken):
    """The token of one operation (see the module docstring)."""

    __slots__ = ("_deadline", "_deadline_message", "_deadline_reason", "_on_deadline", "_poll")

    def __init__(self, poll: Poll) -> None:
        super().__init__()
        self._poll = poll
        self._deadline: float | None = None
        self._deadline_reason = CancelationReason.TIMEOUT
        self._deadline_message: str | None = None
        self._on_deadline: DeadlinePassed | None = None

    def arm_deadline(
        self,
        deadline: float,
        reason: CancelationReason,
        message: str,
        on_passed: DeadlinePassed,
    ) -> None:
        """Read ``deadline`` (monotonic clock) from now on: once it passes, the token
        reports ``reason`` and ``message`` after ``on_passed()`` told its owner."""
        self._deadline = deadline
        self._deadline_reason = reason
        self._deadline_message = message
        self._on_deadline = on_passed

    def release(self, listener: Listener) -> None:
        """The operation ended: from now on only the flag counts (an ended operation is
        cancelled by nothing any more), and ``listener``, the operation's own, goes.

        This also drops the token's references to its operation: it holds only
        callables of its own, so an operation that ended is freed by reference
        counting, not left in a cycle for the garbage collector. A thread reading the
        token meanwhile sees either the old callables (which answer as an ended
        operation does) or these.
        """
        self._poll = _nothing_watched
        self._on_deadline = _deadline_gone
        self.remove_listener(listener)

    @property
    def raised(self) -> bool:
        """Whether the flag is up already (no clock or watched token is read)."""
        return self._cancelled

    def mirror(self, reason: CancelationReason, message: str | None) -> None:
        """Raise the flag because the operation is cancelled: its listeners run, and
        the callbacks registered on it (sync ones here, async ones on their loop)."""
        self._flag(reason, message)

    def _flag(self, reason: CancelationReason, message: str | None) -> None:
        callbacks = self._raise_flag(reason, message)
        if callbacks:
            self._run_callbacks_sync(callbacks)

    @property
    def is_cancelled(self) -> bool:
        if self._cancelled:
            return True
        deadline = self._deadline
        if deadline is not None and time.monotonic() >= deadline:
            on_passed = self._on_deadline
            if on_passed is not None and not on_passed():
                self._deadline = None
                return False
            self._flag(self._deadline_reason, self._deadline_message)
            return True
        found = self._poll()
        if found is None:
            return False
        self._flag(*found)
        return True


def _nothing_watched() -> None:
    """The poll of an ended operation's token: it watches nothing."""
    return None


def _deadline_gone() -> bool:
    """The deadline callback of an ended operation's token: it no longer applies."""
    return False

"""A cancellation token whose flag lives in a :class:`TokenTable` slot.

The supervisor and the worker each build their own :class:`SharedToken` for a job
from the shared table and the job's :class:`SlotRef`. The slot is the truth:

* supervisor ``token.cancel_sync()`` -> writes the slot (then the pool rings the
  worker's doorbell);
* worker ``token.is_cancelled`` / ``token.check()`` -> reads the slot, so synchronous
  code sees the cancel within nanoseconds of the write, with no message involved;
* worker doorbell handler -> ``token.sync_from_table()`` -> raises the local flag, which
  runs the listeners, which wake the ``Cancelable`` awaiting in the worker's loop.

A worker never writes shared memory: cancelling a token there only records the
cancellation locally (the worker reports it to the supervisor over its pipe).
"""

from __future__ import annotations

from typing import NoReturn

from .._core._enums import CancelationReason
from .._core._exceptions import CancelationError, error_for_reason
from .._core._token import CancelationToken, Listener
from ._table import SlotRef, TokenTable


class SharedToken(CancelationToken):
    """A :class:`CancelationToken` backed by one slot of a :class:`TokenTable`.

    It is cancelled when the slot or any live ancestor slot is cancelled, in whatever
    process that happened, or when it is cancelled locally. Listeners and callbacks run
    when the local flag is raised: by :meth:`cancel_sync` / :meth:`cancel` here, or by
    :meth:`sync_from_table` after another process cancelled the slot.

    Args:
        table: the table, as created (supervisor) or received (worker).
        ref: the job's slot.
    """

    __slots__ = ("_ref", "_table")

    def __init__(self, table: TokenTable, ref: SlotRef) -> None:
        if not isinstance(table, TokenTable):
            raise TypeError(f"table must be a TokenTable, not {type(table).__name__}")
        index, generation = ref
        if not 0 <= index < table.capacity:
            raise ValueError(
                f"slot index {index} is out of range for a TokenTable of {table.capacity} slots"
            )
        super().__init__()
        self._table = table
        self._ref = SlotRef(index, generation)

    @property
    def table(self) -> TokenTable:
        """The table holding the slot."""
        return self._table

    @property
    def ref(self) -> SlotRef:
        """The slot this token reads."""
        return self._ref

    # -- state -------------------------------------------------------------------------
    @property
    def is_cancelled(self) -> bool:
        """True once the slot, an ancestor's slot, or this token locally is cancelled.

        Lock-free and cheap: a few loads from shared memory.
        """
        return self._cancelled or self._table.is_cancelled(self._ref)

    @property
    def reason(self) -> CancelationReason | None:
        """Why the token was cancelled (PARENT for an ancestor's cancel), or None."""
        if self._reason is not None:
            return self._reason
        return self._table.state(self._ref)[1]

    @property
    def message(self) -> str | None:
        """The cancellation message, or None."""
        if self._message is not None:
            return self._message
        reason = self.reason
        return None if reason is None else f"token cancelled ({reason.value})"

    @property
    def cancel_message(self) -> str | None:
        """Same as :attr:`message`."""
        return self.message

    def error(self) -> CancelationError:
        """The exception :meth:`check` raises for this token's cancellation."""
        return error_for_reason(self.reason or CancelationReason.MANUAL, self.message, None)

    def __repr__(self) -> str:
        reason = self.reason
        state = f"cancelled ({reason.value})" if reason is not None else "active"
        index, generation = self._ref
        return f"<SharedToken slot={index} gen={generation} {state} at {id(self):#x}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "a SharedToken cannot be pickled: send its SlotRef (token.ref) and build "
            "SharedToken(table, ref) in the receiving process from its own TokenTable"
        )

    # -- cancelling --------------------------------------------------------------------
    def _store(self, reason: CancelationReason, message: str | None) -> None:
        table = self._table
        if not table.closed:
            # The first cancellation wins: one that already reached the slot (written
            # by the supervisor, or an ancestor's) keeps its reason.
            cancelled, first = table.state(self._ref)
            if cancelled and first is not None:
                reason = first
            if table.writer:
                table.cancel(self._ref, reason)
        super()._store(reason, message)

    def add_listener(self, listener: Listener) -> None:
        """Run ``listener(token)`` when the token is cancelled (at once if it is).

        A cancellation that already reached the slot counts: the local flag is raised
        first (see :meth:`sync_from_table`), so a ``Cancelable`` entered in a worker
        after its job was cancelled is cancelled at entry, without waiting for the
        doorbell.
        """
        self.sync_from_table()
        super().add_listener(listener)

    def sync_from_table(self, message: str | None = None) -> bool:
        """Raise the local flag if the slot (or an ancestor) reads cancelled.

        Call it when the worker's doorbell rings: it runs the token's listeners (which
        wake a ``Cancelable`` awaiting in this process) and callbacks, in this thread.
        ``message`` is used if the supervisor sent one along.

        Returns:
            True if this call raised the flag; False if the slot is not cancelled or
            the local flag was already raised.
        """
        if self._cancelled:
            return False
        cancelled, reason = self._table.state(self._ref)
        if not cancelled or reason is None:
            return False
        callbacks = self._raise_flag(reason, message)
        if callbacks is None:
            return False
        self._run_callbacks_sync(callbacks)
        return True


SharedToken.__module__ = "cancelpool.shm"

"""A block of an operation that cancellation cannot interrupt (``op.shield()``).

The operation reports status SHIELDED inside it. A cancellation that lands inside the
block (a ``cancel()``, a token, a deadline passing) is not forgotten: the async form
checkpoints at its exit, so it is raised there; the sync form cannot await, so it tells
the operation, whose exit then delivers it even if no await follows the block.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

import anyio

from ._enums import OperationStatus

if TYPE_CHECKING:
    from ._cancelable import Cancelable
    from ._context import OperationContext


class Shield:
    """``with op.shield():`` or ``async with op.shield() as tracker:``.

    Made by the operation, which hands it what it may call: ``on_exit()`` when the
    block ends (so the operation's own exit delivers what landed meanwhile),
    ``deliver()`` to raise that at once (the async form), and ``tracker()`` to make the
    tracking operation the async form yields.
    """

    __slots__ = ("_context", "_deliver", "_on_exit", "_previous", "_scope", "_tracker")

    def __init__(
        self,
        context: OperationContext,
        on_exit: Callable[[], None],
        deliver: Callable[[], Awaitable[None]],
        tracker: Callable[[], Cancelable],
    ) -> None:
        self._context = context
        self._on_exit = on_exit
        self._deliver = deliver
        self._tracker = tracker
        self._scope = anyio.CancelScope(shield=True)
        self._previous = context.status

    def _enter(self) -> None:
        self._previous = self._context.status
        self._context.status = OperationStatus.SHIELDED
        self._scope.__enter__()

    def _exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._context.status is OperationStatus.SHIELDED:
            self._context.status = self._previous
        # Whatever landed meanwhile must be delivered after the block, checkpoint or not.
        self._on_exit()
        return bool(self._scope.__exit__(exc_type, exc, tb))

    def __enter__(self) -> anyio.CancelScope:
        self._enter()
        return self._scope

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self._exit(exc_type, exc, tb)

    async def __aenter__(self) -> Cancelable:
        """Enter; yields a tracking operation for the block (status SHIELDED).

        The tracking operation is not entered and never cancelled by this one: it is
        for progress reports and inspection (its ``parent_id`` names this operation).
        """
        self._enter()
        return self._tracker()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        swallowed = self._exit(exc_type, exc, tb)
        if exc is None:
            # A cancellation requested inside the block (or a deadline that passed in
            # it) is raised here, as the seed library does.
            await self._deliver()
        return swallowed

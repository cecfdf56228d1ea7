"""Where an operation's cancellation starts: its timeout, the tokens it watches and
its other sources, and the background monitors that some sources need.

Each of them, when it fires, calls back into the operation, which records why and
spreads the cancellation (see ``_cancelable.py``). This module does not know how:
it only starts, listens to and stops what can fire.

Combining operations (``Cancelable.combine`` and ``@cancelable_combine``) follows
one rule, :meth:`Triggers.combined`: the earliest timeout; every token, shared (a
token is a signal meant to be shared); and a fresh copy of every other source (a
source carries the state of one run, so two operations never share one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import anyio.abc

from ._enums import CancelationReason
from ._sources import CancelationSource, SeedCallback, TimeoutSource
from ._token import CancelationToken

logger = logging.getLogger("cancelpool")

TokenListener = Callable[[CancelationToken], None]
SourceListener = Callable[[CancelationSource], None]


class Triggers:
    """What can cancel one operation; the operation owns one once it has any."""

    __slots__ = ("monitors", "sources", "timeout", "tokens")

    def __init__(self) -> None:
        #: The operation's own timeout in seconds (the earliest given), or None. It
        #: becomes the cancel scope's deadline: no task, no polling.
        self.timeout: float | None = None
        # Tuples: most operations have one or two of each, added before entry, and
        # an empty tuple costs no allocation.
        #: Sources other than a bare timeout, in the order added.
        self.sources: tuple[CancelationSource, ...] = ()
        #: Watched tokens, in the order added.
        self.tokens: tuple[CancelationToken, ...] = ()
        #: The task group the sources' monitors run in while the operation runs.
        self.monitors: anyio.abc.TaskGroup | None = None

    def add_source(self, source: CancelationSource) -> None:
        if type(source) is TimeoutSource:
            if self.timeout is None or source.timeout < self.timeout:
                self.timeout = source.timeout
        else:
            self.sources = (*self.sources, source)

    def add_token(self, token: CancelationToken) -> None:
        self.tokens = (*self.tokens, token)

    @classmethod
    def combined(cls, parts: Iterable[Triggers | None]) -> Triggers:
        """The triggers of a combination of operations (the module's one rule)."""
        new = cls()
        sources: list[CancelationSource] = []
        tokens: list[CancelationToken] = []
        for part in parts:
            if part is None:
                continue
            if part.timeout is not None and (new.timeout is None or part.timeout < new.timeout):
                new.timeout = part.timeout
            sources.extend(source.fresh_copy() for source in part.sources)
            tokens.extend(token for token in part.tokens if token not in tokens)
        new.sources = tuple(sources)
        new.tokens = tuple(tokens)
        return new

    @property
    def uses_seed_protocol(self) -> bool:
        return any(source.uses_seed_protocol for source in self.sources)

    def fired_attributes(self, reason: CancelationReason) -> dict[str, Any]:
        """What the seed library's error for ``reason`` carries from the source that
        fired with it (``signal_number``, ``condition_name``)."""
        for source in self.sources:
            if source.triggered and source.reason is reason:
                if reason is CancelationReason.SIGNAL:
                    return {"signal_number": getattr(source, "signal_number", None)}
                if reason is CancelationReason.CONDITION:
                    return {"condition_name": getattr(source, "condition_name", source.name)}
        return {}

    # -- running: entry ----------------------------------------------------------------
    async def open_monitors(self) -> None:
        """Open the task group the sources' monitors run in, if any source needs one.

        Called before the operation enters its cancel scope: the monitors' task group
        encloses the scope, so that cancelling the scope never cancels the monitors and
        the scopes unwind in order.
        """
        if any(source.needs_monitor for source in self.sources):
            self.monitors = anyio.create_task_group()
            await self.monitors.__aenter__()

    def listen(self, on_token: TokenListener, on_source: SourceListener) -> None:
        """Start the monitors and call back when a token or a source fires (at once for
        one that already has)."""
        for token in self.tokens:
            token.add_listener(on_token)
        monitors = self.monitors
        for source in self.sources:
            if monitors is not None and source.needs_monitor:
                monitors.start_soon(source.run)
            source.add_listener(on_source)

    async def start_seed_sources(self, scope: anyio.CancelScope, on_fire: SeedCallback) -> None:
        """Sources written for the seed library watch on their own, inside ``scope``."""
        for source in self.sources:
            if source.uses_seed_protocol:
                source.set_cancel_callback(on_fire)
                await source.start_monitoring(scope)

    # -- running: exit -----------------------------------------------------------------
    async def stop_seed_sources(self) -> BaseException | None:
        """Stop the seed-protocol sources; returns a cancellation that arrived meanwhile."""
        pending: BaseException | None = None
        for source in self.sources:
            if not source.uses_seed_protocol:
                continue
            try:
                await source.stop_monitoring()
            except anyio.get_cancelled_exc_class() as cancelled:
                pending = cancelled
            except Exception:
                logger.exception("cancelpool: stop_monitoring() of source %s failed", source.name)
        return pending

    def unlisten(self, on_token: TokenListener, on_source: SourceListener) -> None:
        for token in self.tokens:
            token.remove_listener(on_token)
        for source in self.sources:
            source.remove_listener(on_source)

    async def close_monitors(self) -> BaseException | None:
        """Stop the monitors (if :attr:`monitors` runs); returns an outside
        cancellation that landed meanwhile."""
        monitors, self.monitors = self.monitors, None
        if monitors is None:
            return None
        # Shielded: an outside cancellation must not interrupt the monitors' clean-up;
        # they are cancelled and exit at once.
        monitors.cancel_scope.shield = True
        monitors.cancel_scope.cancel()
        try:
            await monitors.__aexit__(None, None, None)
        except anyio.get_cancelled_exc_class() as cancelled:
            # An outside cancellation already requested of the asyncio task lands
            # here despite the shield. The operation finishes its bookkeeping, then
            # lets it out.
            return cancelled
        return None

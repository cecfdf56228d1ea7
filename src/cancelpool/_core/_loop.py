"""A thread-safe handle on the event loop that is running now (asyncio or trio).

Cancellation may be requested from any thread; the cancel scope it must reach belongs to
one event loop and may only be touched from that loop's thread. A :class:`LoopHandle`
captured inside the loop lets other threads hand work back to it: directly when already
on the loop's thread, through the loop's own thread-safe wake-up otherwise (asyncio's
``call_soon_threadsafe``, trio's ``TrioToken.run_sync_soon``). No polling is involved.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import anyio
import anyio.lowlevel

logger = logging.getLogger("cancelpool")

# Fire-and-forget asyncio tasks are kept alive here until they finish: the event loop
# only holds weak references to tasks.
_background: set[asyncio.Task[Any]] = set()

# The handle of the loop running in each thread, reused by LoopHandle.current().
_cached = threading.local()

_NO_LOOP = "this must be called from inside a running asyncio or trio event loop"


async def _guarded(fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    try:
        await fn(*args)
    except Exception:
        logger.exception("cancelpool: background callback %r failed", fn)


class LoopHandle:
    """Run callables on a given event loop's thread, from any thread.

    Also the operations' fast path to the loop's own primitives (cancel scopes, clock,
    current task), which skips anyio's per-call backend lookup.
    """

    __slots__ = ("_asyncio_loop", "_scope_class", "_trio_token", "thread_id")

    def __init__(self, asyncio_loop: asyncio.AbstractEventLoop | None, trio_token: Any) -> None:
        self._asyncio_loop = asyncio_loop
        self._trio_token = trio_token
        self._scope_class: Callable[[], anyio.CancelScope] | None = None
        self.thread_id = threading.get_ident()

    @classmethod
    def current(cls) -> LoopHandle:
        """The handle of the loop running in this thread (the same object on every call).

        Raises:
            RuntimeError: no asyncio or trio event loop runs in this thread.
        """
        cached = _cached
        # ``_get_running_loop`` returns None instead of raising: on trio the asyncio
        # probe then costs nothing.
        loop = asyncio._get_running_loop()
        if loop is not None:
            key: object = loop
        else:
            trio = sys.modules.get("trio")
            if trio is None:
                raise RuntimeError(_NO_LOOP)
            try:
                key = trio.lowlevel.current_trio_token()
            except RuntimeError:
                raise RuntimeError(_NO_LOOP) from None
        if getattr(cached, "key", None) is key:
            handle: LoopHandle = cached.handle
            return handle
        handle = cls(loop, None) if loop is not None else cls(None, key)
        # One entry per thread: a thread runs one loop at a time. The entry keeps the
        # last loop object alive until another loop runs in this thread.
        cached.key = key
        cached.handle = handle
        return handle

    @classmethod
    def current_or_none(cls) -> LoopHandle | None:
        """Like :meth:`current`, or None outside an event loop."""
        try:
            return cls.current()
        except RuntimeError:
            return None

    def current_task(self) -> object:
        """The task running now on this loop (call from the loop's thread)."""
        if self._asyncio_loop is not None:
            return asyncio.current_task(self._asyncio_loop)
        import trio

        return trio.lowlevel.current_task()

    def cancel_scope(self) -> anyio.CancelScope:
        """A new cancel scope of this loop's backend (call from the loop's thread).

        Same as ``anyio.CancelScope()``, minus anyio's backend lookup (about 2 us, the
        biggest part of entering an operation).
        """
        cls = self._scope_class
        if cls is None:
            scope = anyio.CancelScope()
            self._scope_class = type(scope)
            return scope
        return cls()

    def time(self) -> float:
        """The loop's clock, the one cancel scope deadlines use (``anyio.current_time()``)."""
        if self._asyncio_loop is not None:
            return self._asyncio_loop.time()
        import trio

        return trio.current_time()

    def in_loop_thread(self) -> bool:
        """True when called from the loop's own thread."""
        return threading.get_ident() == self.thread_id

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Schedule ``fn(*args)`` on the loop; False if the loop has closed."""
        try:
            if self._asyncio_loop is not None:
                self._asyncio_loop.call_soon_threadsafe(fn, *args)
            else:
                self._trio_token.run_sync_soon(fn, *args)
        except RuntimeError:
            return False
        return True

    def call(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run ``fn(*args)`` now if on the loop's thread, else schedule it there."""
        if threading.get_ident() == self.thread_id:
            fn(*args)
            return True
        return self.call_soon_threadsafe(fn, *args)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Start ``await fn(*args)`` as a background task of the loop, from any thread.

        Exceptions are logged, never propagated. Returns False if the loop has closed.
        """
        return self.call(self._spawn_here, fn, *args)

    def _spawn_here(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._asyncio_loop is not None:
            task = self._asyncio_loop.create_task(_guarded(fn, *args))
            _background.add(task)
            task.add_done_callback(_background.discard)
        else:
            import trio

            trio.lowlevel.spawn_system_task(_guarded, fn, *args)


async def raise_cancelled() -> NoReturn:
    """Raise the running backend's cancelled exception, as a checkpoint would.

    Used where a cancellation was requested (a token, an operation) but no enclosing
    cancel scope delivers it, so that it still unwinds like any other cancellation.
    """
    cls = anyio.get_cancelled_exc_class()
    try:
        exc: BaseException = cls()
    except TypeError:
        # trio.Cancelled has no public constructor: obtain a genuine one from a
        # throwaway scope and raise it outside that scope.
        exc = await _catch_cancelled(cls)
    raise exc


async def _catch_cancelled(cls: type[BaseException]) -> BaseException:
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.lowlevel.checkpoint()
        except cls as caught:
            return caught
    raise RuntimeError("a cancelled scope did not deliver its cancellation")  # pragma: no cover

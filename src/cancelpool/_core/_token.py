"""Cancellation tokens: a flag that any thread may raise and any task may wait on."""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel

from ._context import new_operation_id
from ._enums import CancelationReason
from ._exceptions import CancelationError, error_for_reason
from ._loop import LoopHandle, raise_cancelled

logger = logging.getLogger("cancelpool")

#: A callback run when a token is cancelled; it receives a :class:`CancelNotice` (the
#: cancellation message, which also reads as the token).
TokenCallback = Callable[[str], "Awaitable[Any] | Any"]
#: An internal hook run synchronously, in the cancelling thread, right after the flag
#: is raised. It must be cheap and thread-safe.
Listener = Callable[["CancelationToken"], None]


class CancelNotice(str):
    """What a token callback receives: the cancellation message, which also reads as
    the token (``notice.reason``, ``notice.id``, ``notice.token``).

    The seed documents show callbacks taking the message; the seed library passes
    the token. A notice is both, so a callback written either way runs unchanged.
    """

    token: CancelationToken

    def __new__(cls, message: str, token: CancelationToken) -> CancelNotice:
        notice = super().__new__(cls, message)
        notice.token = token
        return notice

    def __getattr__(self, name: str) -> Any:
        return getattr(self.token, name)


class Done:
    """The result of a call the seed library makes awaitable (``register_callback``,
    ``link``): the work is already done, so it may be awaited or ignored."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator

    def __repr__(self) -> str:
        return "<done>"


_DONE = Done()


def split_args(
    reason: CancelationReason | str | None, message: str | None
) -> tuple[CancelationReason, str | None]:
    # ``token.cancel("why")`` passes the message positionally; accept it.
    if isinstance(reason, CancelationReason):
        return reason, message
    if reason is None:
        return CancelationReason.MANUAL, message
    if isinstance(reason, str):
        try:
            return CancelationReason(reason), message
        except ValueError:
            return CancelationReason.MANUAL, reason if message is None else message
    raise TypeError(
        f"reason must be a CancelationReason or a message string, not {type(reason).__name__}"
    )


class CancelationToken:
    """A one-shot cancellation flag, safe to raise from any thread.

    ``cancel_sync()`` works from plain threads, signal handlers and other event loops:
    every :class:`Cancelable` watching the token is woken through its own loop's
    thread-safe wake-up, so a task blocked in ``await`` sees the cancellation at once.
    Reading :attr:`is_cancelled` or calling :meth:`check` is cheap enough for tight
    loops of synchronous code.
    """

    __slots__ = (
        "_callbacks",
        "_cancelled",
        "_cancelled_at",
        "_id",
        "_listeners",
        "_lock",
        "_message",
        "_reason",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._id: str | None = None
        self._cancelled_at: float | None = None
        self._cancelled = False
        self._reason: CancelationReason | None = None
        self._message: str | None = None
        self._listeners: list[Listener] = []
        self._callbacks: list[tuple[TokenCallback, LoopHandle | None]] = []

    # -- state -------------------------------------------------------------------------
    @property
    def is_cancelled(self) -> bool:
        """True once the token has been cancelled."""
        return self._cancelled

    @property
    def reason(self) -> CancelationReason | None:
        """Why the token was cancelled, or None."""
        return self._reason

    @property
    def message(self) -> str | None:
        """The cancellation message, or None."""
        return self._message

    @property
    def cancel_message(self) -> str | None:
        """Same as :attr:`message`."""
        return self._message

    @property
    def id(self) -> str:
        """A unique id (a UUID string), made on first use."""
        if self._id is None:
            self._id = new_operation_id()
        return self._id

    @property
    def cancelled_at(self) -> datetime | None:
        """When the token was cancelled (UTC), or None."""
        at = self._cancelled_at
        return None if at is None else datetime.fromtimestamp(at, UTC)

    def is_cancelation_requested(self) -> bool:
        """Same as :attr:`is_cancelled` (the seed library's non-raising check)."""
        return self.is_cancelled

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        state = f"cancelled ({self._reason.value})" if self._reason else "active"
        return f"<{type(self).__name__} {state} at {id(self):#x}>"

    # -- cancelling --------------------------------------------------------------------
    async def cancel(
        self,
        reason: CancelationReason | str | None = CancelationReason.MANUAL,
        message: str | None = None,
    ) -> bool:
        """Cancel the token; sync callbacks run now, async ones are awaited here.

        ``await token.cancel("why")`` is accepted as shorthand for a MANUAL
        cancellation with that message. Returns False if it was already cancelled.
        """
        reason, message = split_args(reason, message)
        callbacks = self._raise_flag(reason, message)
        if callbacks is None:
            return False
        if not callbacks:
            return True
        msg = CancelNotice(self._message or "", self)
        for cb, _ in callbacks:
            try:
                result = cb(msg)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("cancelpool: token callback %r failed", cb)
        return True

    def cancel_sync(
        self,
        reason: CancelationReason | str | None = CancelationReason.MANUAL,
        message: str | None = None,
    ) -> bool:
        """Cancel the token from any thread, without an event loop.

        Tasks awaiting inside a :class:`Cancelable` that watches this token are woken
        promptly through their loop's thread-safe wake-up. Sync callbacks run in the
        calling thread; async callbacks are started on the loop they were registered
        from. Returns False if it was already cancelled.
        """
        reason, message = split_args(reason, message)
        callbacks = self._raise_flag(reason, message)
        if callbacks is None:
            return False
        self._run_callbacks_sync(callbacks)
        return True

    def _run_callbacks_sync(self, callbacks: list[tuple[TokenCallback, LoopHandle | None]]) -> None:
        if not callbacks:
            return  # the common case, on the path of every cancellation: no notice made
        msg = CancelNotice(self._message or "", self)
        for cb, handle in callbacks:
            try:
                if inspect.iscoroutinefunction(cb):
                    if handle is None or not handle.spawn(cb, msg):
                        logger.warning(
                            "cancelpool: async token callback %r has no running loop", cb
                        )
                    continue
                result = cb(msg)
                if inspect.isawaitable(result) and (
                    handle is None or not handle.spawn(_await, result)
                ):
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
            except Exception:
                logger.exception("cancelpool: token callback %r failed", cb)

    def _raise_flag(
        self, reason: CancelationReason, message: str | None
    ) -> list[tuple[TokenCallback, LoopHandle | None]] | None:
        """Set the flag once and run the listeners; return the callbacks to run."""
        with self._lock:
            if self._cancelled:
                return None
            self._store(reason, message)
            listeners = self._listeners
            self._listeners = []
            callbacks = self._callbacks
            self._callbacks = []
        for listener in listeners:
            try:
                listener(self)
            except Exception:
                logger.exception("cancelpool: token listener %r failed", listener)
        return callbacks

    def _store(self, reason: CancelationReason, message: str | None) -> None:
        """Record the cancellation (called with the lock held). Subclasses extend it."""
        self._reason = reason
        self._message = message or f"token cancelled ({reason.value})"
        self._cancelled_at = time.time()  # a datetime only when asked for
        self._cancelled = True

    # -- observing ---------------------------------------------------------------------
    def register_callback(self, callback: TokenCallback) -> Done:
        """Call ``callback(notice)`` when the token is cancelled (at once if it is).

        The :class:`CancelNotice` is the message and reads as the token too. The
        callback may be sync or async. Async callbacks registered from inside an
        event loop run on that loop even when the token is cancelled from a thread.
        Registration is done on return; the result may be awaited (as the seed
        library's is) or ignored.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        handle = LoopHandle.current_or_none()
        with self._lock:
            if not self._cancelled:
                self._callbacks.append((callback, handle))
                return _DONE
        self._run_callbacks_sync([(callback, handle)])
        return _DONE

    def add_listener(self, listener: Listener) -> None:
        """Run ``listener(token)`` in the cancelling thread (at once if cancelled).

        Low-level hook for cancel scopes and bridges; it must not block.
        """
        with self._lock:
            if not self._cancelled:
                self._listeners.append(listener)
                return
        listener(self)

    def remove_listener(self, listener: Listener) -> None:
        """Forget a listener added with :meth:`add_listener` (no error if absent)."""
        with self._lock:
            try:
                self._listeners.remove(listener)
            except ValueError:
                pass

    def check(self) -> None:
        """Raise the matching :class:`CancelationError` if the token is cancelled.

        A MANUAL cancellation raises :class:`ManualCancelation`. Cheap: usable in tight
        loops of synchronous code, in any thread.
        """
        if self.is_cancelled:
            raise self.error()

    def error(self) -> CancelationError:
        """The exception :meth:`check` raises for this token's cancellation."""
        reason = self._reason or CancelationReason.MANUAL
        return error_for_reason(reason, self._message, None)

    async def check_async(self) -> None:
        """A checkpoint that raises the backend's cancelled exception if cancelled.

        Use it where cancellation should unwind like any other async cancellation.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self.is_cancelled:
            await raise_cancelled()

    async def wait_for_cancel(self) -> None:
        """Wait until the token is cancelled (returns at once if it already is).

        A cancellation of the waiting task propagates as usual.
        """
        if self.is_cancelled:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        handle = LoopHandle.current()

        def listener(_: CancelationToken) -> None:
            handle.call(event.set)

        self.add_listener(listener)
        try:
            await event.wait()
        finally:
            self.remove_listener(listener)


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable


class LinkedCancelationToken(CancelationToken):
    """A token that is also cancelled when any token it is linked to is cancelled."""

    __slots__ = ("_links",)

    def __init__(self) -> None:
        super().__init__()
        self._links: list[tuple[CancelationToken, Listener]] = []

    def link(self, other: CancelationToken, preserve_reason: bool = True) -> Done:
        """Cancel this token whenever ``other`` is cancelled (at once if it is).

        The reason is carried over (or MANUAL with ``preserve_reason=False``); the
        message says the cancellation came through a link. The link is made on
        return; the result may be awaited (as the seed library's is) or ignored.
        """
        if not isinstance(other, CancelationToken):
            raise TypeError(f"can only link to a CancelationToken, not {type(other).__name__}")
        if other is self:
            raise ValueError("a token cannot be linked to itself")

        def listener(source: CancelationToken) -> None:
            reason = source.reason if preserve_reason and source.reason else None
            self.cancel_sync(
                reason or CancelationReason.MANUAL, f"linked token cancelled: {source.message}"
            )

        self._links.append((other, listener))
        other.add_listener(listener)
        return _DONE

    def unlink_all(self) -> None:
        """Stop following every linked token."""
        links, self._links = self._links, []
        for other, listener in links:
            other.remove_listener(listener)

"""``Cancelable``: one operation, its cancel scope, its sources, and what happened to it.

An operation is cancelled by its own sources (a deadline, tokens, signals, conditions,
composites, a ``cancel()`` call) or by an ancestor operation. Its own cancellation
leaves ``async with`` as the matching :class:`CancelationError` subclass; a cancellation
from outside (an enclosing scope, the task being cancelled) passes through untouched as
the backend's cancelled exception. Either way ``context`` records status, reason,
message and the partial result.

How a cancellation request reaches the awaiting task:

* from the same loop: ``_trigger`` cancels the anyio ``CancelScope`` directly;
* from another thread (``cancel_sync``, a token cancelled in a thread): the request is
  handed to the operation's loop through its thread-safe wake-up (see ``_loop.py``),
  so a task blocked in ``await`` is woken at once, without polling;
* a deadline is the scope's own deadline; synchronous code in threads sees it through
  ``op.token`` which compares the monotonic clock with it.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import timedelta
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._context import OperationContext
from ._enums import CancelationReason, OperationStatus
from ._exceptions import CancelationError, error_for_reason
from ._loop import LoopHandle, raise_cancelled
from ._registry import OperationRegistry
from ._sources import (
    CancelationSource,
    ConditionFn,
    ConditionSource,
    SignalSource,
    TimeoutSource,
)
from ._token import CancelationToken, split_args

logger = logging.getLogger("cancelpool")

T = TypeVar("T")
P = ParamSpec("P")

ProgressCallback = Callable[[str, str, dict[str, Any]], "Awaitable[Any] | Any"]
StatusCallback = Callable[[OperationContext], "Awaitable[Any] | Any"]
ErrorCallback = Callable[[OperationContext, BaseException], "Awaitable[Any] | Any"]


def _takes_two(callback: Callable[..., Any]) -> bool:
    """Whether ``callback`` accepts ``(context, error)`` (the seed's error callback)."""
    try:
        sig = inspect.signature(callback)
    except (TypeError, ValueError):
        return False
    try:
        sig.bind(None, None)
    except TypeError:
        return False
    return True


_INF = float("inf")

#: Items of a stream kept for its partial result (the seed library's bound): more
#: costs memory per stream, fewer hands back less of a cancelled one.
STREAM_BUFFER_SIZE = 1000

# Progress reported from threads and not delivered yet, per operation (kept outside
# the objects: Cancelable has __slots__ and a report is rare next to an operation).
_sync_reports: weakref.WeakKeyDictionary[Cancelable, deque[tuple[str, dict[str, Any] | None]]] = (
    weakref.WeakKeyDictionary()
)
_sync_reports_lock = threading.Lock()

_current: ContextVar[Cancelable | None] = ContextVar("cancelpool_current_operation", default=None)


def timeout_name(timeout: float | timedelta) -> str:
    """The seed library's name for an unnamed operation with a timeout.

    Its seconds as Python prints them: ``timeout_5s`` for ``5``, ``timeout_5.0s`` for
    ``5.0`` or ``timedelta(seconds=5)`` (a program may match on these names).
    """
    value = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    return f"timeout_{value}s"


def current_operation() -> Cancelable | None:
    """The innermost :class:`Cancelable` active in this task (or thread), or None.

    Based on a context variable: concurrent tasks each see their own operation, and
    :meth:`Cancelable.run_in_thread` carries it into the worker thread.
    """
    return _current.get()


class _OperationToken(CancelationToken):
    """The token of one operation: cancelled whenever the operation is.

    Its ``is_cancelled`` is what synchronous code polls, in a thread or on the loop
    without awaiting, so it does not wait for the event loop to learn of a
    cancellation. It also reads:

    * the monotonic clock against the binding deadline (the operation's own or an
      ancestor's), which the event loop otherwise enforces on its own;
    * the tokens the operation and its ancestors watch, whose flags may be raised
      where no listener runs (a shared-memory token cancelled by another process).

    Either way the owning operation is cancelled too, as if the loop had seen it first.
    """

    __slots__ = (
        "_deadline",
        "_deadline_message",
        "_deadline_owner",
        "_deadline_reason",
        "_op",
    )

    def __init__(self, op: Cancelable) -> None:
        super().__init__()
        self._op = op
        self._deadline: float | None = None
        self._deadline_owner: Cancelable | None = None
        self._deadline_reason = CancelationReason.TIMEOUT
        self._deadline_message: str | None = None

    @property
    def is_cancelled(self) -> bool:
        if self._cancelled:
            return True
        deadline = self._deadline
        if deadline is not None and time.monotonic() >= deadline:
            owner = self._deadline_owner
            if owner is not None:
                if owner._done and owner._reason is None:
                    # The operation that owned this deadline ended before it.
                    self._deadline = None
                    return False
                # Seen here before the loop's own timer: cancel the owner first, so
                # that the cancellation flows down the hierarchy as it would have.
                owner._deadline_passed()
            self._raise_flag(self._deadline_reason, self._deadline_message)
            return True
        own = self._op
        op: Cancelable | None = own
        while op is not None and not op._done:
            for token in op._tokens:
                # Another operation's token relays through its listeners; skipping it
                # also keeps operations that watch each other from recursing here.
                if type(token) is not _OperationToken and token.is_cancelled:
                    reason = token.reason or CancelationReason.MANUAL
                    if op is own:
                        # Our listener on this flag cancels the operation.
                        self._raise_flag(reason, token.message)
                    else:
                        op._request(reason, token.message)
                        self._raise_flag(
                            CancelationReason.PARENT,
                            f"parent operation {op._label()} was cancelled "
                            f"({reason.value}): {token.message}",
                        )
                    return True
            op = op._parent
        return False


class _Shield:
    """Protects a block from cancellation; the operation reports SHIELDED meanwhile.

    A cancellation that lands inside the block (a ``cancel()``, a token, a deadline
    passing) is not forgotten: the async form checkpoints at its exit, so it is
    raised there; the sync form cannot await, so it tells the operation, whose exit
    then delivers it even if no await follows the block.
    """

    __slots__ = ("_op", "_previous", "_scope")

    def __init__(self, op: Cancelable) -> None:
        self._op = op
        self._scope = anyio.CancelScope(shield=True)
        self._previous = op.context.status

    def _enter(self) -> None:
        self._previous = self._op.context.status
        self._op.context.status = OperationStatus.SHIELDED
        self._scope.__enter__()

    def _exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._op.context.status is OperationStatus.SHIELDED:
            self._op.context.status = self._previous
        # Whatever landed meanwhile must be delivered after the block, checkpoint or not.
        self._op._shield_exited = True
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
        op = self._op
        tracker = Cancelable(
            f"{op.context.name}_shielded", metadata={"shielded": True}, register=False
        )
        tracker.context.parent_id = op.context.id
        tracker.context.status = OperationStatus.SHIELDED
        return tracker

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
            await self._op._deliver_after_shield()
        return swallowed


class Cancelable:
    """An async context manager that runs one cancellable operation.

    Example::

        async with Cancelable.with_timeout(30, name="fetch") as op:
            await op.report_progress("started")
            data = await fetch()

    Args:
        name: a label for logs, the registry and pattern cancellation.
        parent: the parent operation. Defaults to :func:`current_operation` at entry
            (the innermost operation of this task, or the one the task inherited from
            where it was started). A child is cancelled when its parent is, for any
            reason, with reason PARENT: in the parent's own task the parent's
            cancellation passes through the child untouched; in another task the child
            raises :class:`ParentCancelation` (and carries the parent's deadline).
        operation_id: the id to use instead of a fresh UUID.
        metadata: free-form data kept on the context.
        register: list the operation in :class:`OperationRegistry` while it runs (and
            in its bounded history after). Off by default: an operation nobody asked
            to track costs the registry nothing.
        register_globally: the seed library's name for ``register``.

    A ``Cancelable`` is single-use: enter it once.
    """

    __slots__ = (
        "__weakref__",
        "_children",
        "_ctx_reset",
        "_done",
        "_entered",
        "_handle",
        "_hooks",
        "_message",
        "_mono_deadline",
        "_nested",
        "_own_deadline",
        "_parent",
        "_progress",
        "_reason",
        "_register",
        "_scope",
        "_shield_exited",
        "_sources",
        "_task",
        "_tg",
        "_timeout",
        "_token",
        "_tokens",
        "context",
    )

    def __init__(
        self,
        name: str | None = None,
        *,
        parent: Cancelable | None = None,
        operation_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        register: bool = False,
        register_globally: bool | None = None,
    ) -> None:
        if register_globally is not None:  # the seed library's spelling
            register = register_globally
        if parent is not None and not isinstance(parent, Cancelable):
            raise TypeError(f"parent must be a Cancelable, not {type(parent).__name__}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, not {type(name).__name__}")
        self.context = OperationContext(id=operation_id, name=name, metadata=metadata)
        self._parent = parent
        self._register = register
        self._timeout: float | None = None
        self._sources: list[CancelationSource] = []
        self._tokens: list[CancelationToken] = []
        self._scope: anyio.CancelScope | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._handle: LoopHandle | None = None
        self._ctx_reset: contextvars.Token[Cancelable | None] | None = None
        self._reason: CancelationReason | None = None
        self._message: str | None = None
        self._token: _OperationToken | None = None
        self._children: list[Cancelable] = []
        self._progress: list[ProgressCallback] | None = None
        self._hooks: dict[str, list[StatusCallback | ErrorCallback]] | None = None
        self._nested = False
        self._shield_exited = False
        self._entered = False
        self._done = False
        self._task: object = None
        # Our own deadline on the loop's clock, and the binding one (ours or carried from
        # the parent) on the monotonic clock, which threads can read too.
        self._own_deadline = _INF
        self._mono_deadline = _INF

    # -- construction helpers ------------------------------------------------------------
    @classmethod
    def with_timeout(
        cls, timeout: float | timedelta, name: str | None = None, **kwargs: Any
    ) -> Cancelable:
        """An operation cancelled with reason TIMEOUT after ``timeout`` seconds.

        The deadline is the cancel scope's own: no background task, no polling.
        Unnamed, it is called ``timeout_<seconds>s`` (``timeout_5s``,
        ``timeout_0.5s``), as the seed library names it.
        """
        source = TimeoutSource(timeout)
        return cls(name or timeout_name(timeout), **kwargs).add_source(source)

    @classmethod
    def with_token(
        cls, token: CancelationToken, name: str | None = None, **kwargs: Any
    ) -> Cancelable:
        """An operation cancelled when ``token`` is, from any thread, with its reason.

        Unnamed, it is called ``token_based`` (the seed library's default).
        """
        return cls(name or "token_based", **kwargs).add_token(token)

    @classmethod
    def with_signal(cls, *signals: int, name: str | None = None, **kwargs: Any) -> Cancelable:
        """An operation cancelled with reason SIGNAL when one of ``signals`` arrives.

        Unnamed, it is called ``signal_based`` (the seed library's default).
        """
        source = SignalSource(*signals)
        return cls(name or "signal_based", **kwargs).add_source(source)

    @classmethod
    def with_condition(
        cls,
        condition: ConditionFn,
        check_interval: float = 1.0,
        condition_name: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Cancelable:
        """An operation cancelled with reason CONDITION once ``condition()`` is true.

        Unnamed, it is called ``condition_based`` (the seed library's default).
        """
        source = ConditionSource(condition, check_interval, condition_name)
        return cls(name or "condition_based", **kwargs).add_source(source)

    def add_source(self, source: CancelationSource) -> Cancelable:
        """Cancel this operation when ``source`` fires; returns ``self``.

        A bare :class:`TimeoutSource` becomes the scope's deadline (the earliest one
        wins); other sources run in a background task while the operation runs.
        """
        if not isinstance(source, CancelationSource):
            raise TypeError(f"add_source() takes a CancelationSource, not {source!r}")
        self._check_not_entered("add a source")
        if type(source) is TimeoutSource:
            if self._timeout is None or source.timeout < self._timeout:
                self._timeout = source.timeout
        else:
            self._sources.append(source)
        return self

    def add_token(self, token: CancelationToken) -> Cancelable:
        """Cancel this operation when ``token`` is cancelled; returns ``self``."""
        if not isinstance(token, CancelationToken):
            raise TypeError(f"expected a CancelationToken, not {type(token).__name__}")
        self._check_not_entered("add a token")
        self._tokens.append(token)
        return self

    def combine(self, *others: Cancelable) -> Cancelable:
        """A new operation cancelled by any source of ``self`` or of ``others``."""
        combined = Cancelable(
            self.context.name,
            parent=self._parent,
            metadata=dict(self.context.metadata),
            register=self._register,
        )
        for op in (self, *others):
            if not isinstance(op, Cancelable):
                raise TypeError(f"combine() takes Cancelable objects, not {op!r}")
            if op._timeout is not None:
                combined.add_source(TimeoutSource(op._timeout))
            for source in op._sources:
                combined.add_source(source)
            for token in op._tokens:
                combined.add_token(token)
        return combined

    def _check_not_entered(self, what: str) -> None:
        if self._entered:
            raise RuntimeError(f"cannot {what} to an operation that has already started")

    # -- callbacks -------------------------------------------------------------------------
    def on_progress(self, callback: ProgressCallback) -> Cancelable:
        """Call ``callback(operation_id, message, metadata)`` on every progress report
        of this operation and of its descendants. Sync or async; returns ``self``."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        if self._progress is None:
            self._progress = []
        self._progress.append(callback)
        return self

    def _add_hook(self, event: str, callback: StatusCallback | ErrorCallback) -> Cancelable:
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        if self._hooks is None:
            self._hooks = {}
        self._hooks.setdefault(event, []).append(callback)
        return self

    def on_start(self, callback: StatusCallback) -> Cancelable:
        """Call ``callback(context)`` when the operation starts."""
        return self._add_hook("start", callback)

    def on_complete(self, callback: StatusCallback) -> Cancelable:
        """Call ``callback(context)`` when the operation completes normally."""
        return self._add_hook("complete", callback)

    def on_cancel(self, callback: StatusCallback) -> Cancelable:
        """Call ``callback(context)`` when the operation is cancelled, for any reason."""
        return self._add_hook("cancel", callback)

    def on_error(self, callback: StatusCallback | ErrorCallback) -> Cancelable:
        """Call ``callback(context, error)`` when the operation fails with an exception.

        As in the seed library the callback receives the exception too; a callback
        that takes only one argument gets just the context.
        """
        return self._add_hook("error", callback)

    async def _run_hooks(self, event: str) -> None:
        callbacks = self._hooks.get(event) if self._hooks else None
        if not callbacks:
            return
        # Hooks run even while the operation is being cancelled.
        with anyio.CancelScope(shield=True):
            for callback in callbacks:
                try:
                    hook: Callable[..., Any] = callback
                    if event == "error" and _takes_two(hook):
                        result = hook(self.context, self.context.error)
                    else:
                        result = hook(self.context)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("cancelpool: %s callback %r failed", event, callback)

    async def report_progress(self, message: str, metadata: dict[str, Any] | None = None) -> None:
        """Send a progress report to this operation's callbacks and every ancestor's.

        Callbacks receive this operation's id. Async callbacks are awaited here, so a
        cancellation of the reporting task while one runs propagates as usual; a
        callback that raises is logged and never stops the operation.
        """
        meta = metadata if metadata is not None else {}
        op_id = self.context.id
        op: Cancelable | None = self
        while op is not None:
            if op._progress:
                for callback in op._progress:
                    try:
                        result = callback(op_id, message, meta)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        logger.exception("cancelpool: progress callback %r failed", callback)
            op = op._parent

    def report_progress_sync(self, message: str, metadata: dict[str, Any] | None = None) -> None:
        """:meth:`report_progress` for synchronous code, from any thread.

        For plain functions (``run_in_thread``, a pool job that is a plain function):
        the report is handed to the operation's event loop, where the callbacks run in
        the order the reports were made. Returns at once; never raises for a callback.

        Raises:
            RuntimeError: the operation is not running (report from inside it).
        """
        handle = self._handle
        if handle is None or self.context.status.is_terminal:
            raise RuntimeError(
                "report_progress_sync() needs a running operation: call it from inside "
                "the operation's block (or its run_in_thread function)"
            )
        with _sync_reports_lock:
            reports = _sync_reports.get(self)
            if reports is not None:  # a drainer is already scheduled: it takes this one
                reports.append((message, metadata))
                return
            _sync_reports[self] = deque([(message, metadata)])
        if not handle.spawn(self._drain_sync_reports):
            with _sync_reports_lock:
                _sync_reports.pop(self, None)
            logger.warning("cancelpool: progress %r lost: the event loop has closed", message)

    async def _drain_sync_reports(self) -> None:
        # One task delivers every pending report, in order (trio runs separate tasks
        # in no fixed order).
        while True:
            with _sync_reports_lock:
                reports = _sync_reports[self]
                if not reports:
                    del _sync_reports[self]
                    return
                message, metadata = reports.popleft()
            await self.report_progress(message, metadata)

    # -- state -----------------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        """The operation's name."""
        return self.context.name

    @property
    def parent(self) -> Cancelable | None:
        """The parent operation, if any."""
        return self._parent

    @property
    def tokens(self) -> tuple[CancelationToken, ...]:
        """The tokens this operation watches (:meth:`add_token`), in order."""
        return tuple(self._tokens)

    @property
    def timeout(self) -> float | None:
        """This operation's own timeout in seconds (its earliest), or None."""
        return self._timeout

    @property
    def operation_id(self) -> str:
        """The operation's id (``context.id``)."""
        return self.context.id

    @property
    def is_running(self) -> bool:
        """True while the operation runs (shielded or not)."""
        return self.context.status in (OperationStatus.RUNNING, OperationStatus.SHIELDED)

    @property
    def is_completed(self) -> bool:
        """True once the operation has completed normally."""
        return self.context.status is OperationStatus.COMPLETED

    async def check_cancelation(self) -> None:
        """A checkpoint that unwinds the operation if it has been cancelled.

        Raises the backend's cancelled exception when the operation is cancelled
        (its ``async with`` then raises the matching :class:`CancelationError`);
        otherwise returns at once.
        """
        await self._checkpoint()

    check_cancellation = check_cancelation

    @property
    def is_cancelled(self) -> bool:
        """True once cancellation has been requested, by any source or an ancestor.

        Safe to read from any thread: it never touches the cancel scope, whose state
        belongs to the event loop; a passed deadline is read from the monotonic clock.
        """
        if self._reason is not None:
            return True
        if not self._entered or self._done:
            return False
        now = time.monotonic()
        thread = threading.get_ident()
        op: Cancelable | None = self
        while op is not None:
            if op._cancel_requested(now, thread):
                return True
            if op._done:
                break
            op = op._parent
        return False

    def _cancel_requested(self, now: float, thread: int) -> bool:
        if self._reason is not None:
            return True
        scope = self._scope
        handle = self._handle
        if scope is not None and handle is not None and handle.thread_id == thread:
            # On the loop's own thread the scope is the authority (the loop's clock may
            # run a little apart from the monotonic one, e.g. uvloop's cached time).
            return scope.cancel_called
        return self._mono_deadline <= now

    @property
    def token(self) -> CancelationToken:
        """This operation's token: cancelled whenever the operation is.

        Cancelling it cancels the operation. Synchronous code (in threads, too) can
        poll ``token.is_cancelled`` or call ``token.check()`` cheaply; both also see the
        deadline pass.
        """
        token = self._token
        if token is None:
            token = self._token = _OperationToken(self)
            if self._reason is not None:
                token._raise_flag(self._reason, self._message)
            else:
                self._arm_token_deadline(token)
                token.add_listener(self._on_token)
        return token

    def _label(self) -> str:
        return repr(self.context.name) if self.context.name else self.context.id[:8]

    # -- entering and leaving --------------------------------------------------------------
    async def __aenter__(self) -> Cancelable:
        if self._entered:
            raise RuntimeError("a Cancelable can be entered only once; create a new one")
        self._entered = True
        handle = self._handle = LoopHandle.current()
        task = self._task = handle.current_task()
        parent = self._parent
        if parent is None:
            parent = self._parent = _current.get()
        ctx = self.context
        scope = handle.cancel_scope()
        timeout = self._timeout
        if timeout is not None:
            scope.deadline = self._own_deadline = handle.time() + timeout
            self._mono_deadline = time.monotonic() + timeout
        if parent is not None:
            ctx.parent_id = parent.context.id
            # Nested: the parent's ``async with`` encloses ours in this very task, so its
            # cancellation reaches us by itself. Otherwise (another task, even one that
            # inherited the parent as current operation) we must be cancelled explicitly.
            self._nested = parent._task is task and parent._scope is not None
            if not self._nested:
                parent_scope = parent._scope
                if parent_scope is not None and parent_scope.deadline < scope.deadline:
                    scope.deadline = parent_scope.deadline
                    self._mono_deadline = parent._mono_deadline
            parent._children.append(self)
        if self._sources and any(source.needs_monitor for source in self._sources):
            # The monitors' task group encloses our scope, so that cancelling the scope
            # never cancels the monitors and the scopes unwind in order.
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
        scope.__enter__()
        self._scope = scope
        self._ctx_reset = _current.set(self)
        ctx.status = OperationStatus.RUNNING
        ctx.start_time = time.time()
        if self._register:
            (OperationRegistry._instance or OperationRegistry.get_instance())._add(self)
        if self._reason is not None:  # cancelled before it started
            scope.cancel()
            self._after_reason()
        elif parent is not None and parent.is_cancelled:
            self._parent_cancelled(parent)
        own_token = self._token
        if own_token is not None and not own_token._cancelled:
            self._arm_token_deadline(own_token)
        for token in self._tokens:
            token.add_listener(self._on_token)
        if self._sources:
            self._start_sources()
            if any(source.uses_seed_protocol for source in self._sources):
                await self._start_seed_sources(scope)
        if self._hooks:
            await self._run_hooks("start")
        return self

    async def _start_seed_sources(self, scope: anyio.CancelScope) -> None:
        # Sources written for the seed library watch on their own, inside our scope.
        for source in self._sources:
            if source.uses_seed_protocol:
                source.set_cancel_callback(self._on_seed_source)
                await source.start_monitoring(scope)

    def _on_seed_source(self, reason: CancelationReason, message: str) -> None:
        if self._handle is not None:
            self._handle.call(self._trigger, reason, message or None)

    async def _stop_seed_sources(self) -> BaseException | None:
        """Stop the seed-protocol sources; returns a cancellation that arrived meanwhile."""
        pending: BaseException | None = None
        for source in self._sources:
            if not source.uses_seed_protocol:
                continue
            try:
                await source.stop_monitoring()
            except anyio.get_cancelled_exc_class() as cancelled:
                pending = cancelled
            except Exception:
                logger.exception("cancelpool: stop_monitoring() of source %s failed", source.name)
        return pending

    def _start_sources(self) -> None:
        for source in self._sources:
            if self._tg is not None and source.needs_monitor:
                self._tg.start_soon(source.run)
            source.add_listener(self._on_source)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        scope = self._scope
        if scope is None or self._done:
            # As the seed library does: an exit without a matching entry (or a second
            # exit) changes nothing and lets whatever is propagating through.
            logger.debug("cancelpool: %r exited without a matching entry; ignored", self)
            return False
        if self._sources and any(source.uses_seed_protocol for source in self._sources):
            cancelled = await self._stop_seed_sources()
            if cancelled is not None and exc is None:
                exc, exc_type, tb = cancelled, type(cancelled), cancelled.__traceback__
        if exc is None and self._shield_exited:
            # A shield ended in this block and no await may have followed it: deliver a
            # cancellation that landed in it now, inside our scope, so that it is not
            # forgotten (the operation ends CANCELLED with its reason, not COMPLETED).
            try:
                await self._deliver_after_shield()
            except anyio.get_cancelled_exc_class() as cancelled:
                exc, exc_type, tb = cancelled, type(cancelled), cancelled.__traceback__
        self._done = True
        if self._tokens:
            for token in self._tokens:
                token.remove_listener(self._on_token)
        if self._sources:
            for source in self._sources:
                source.remove_listener(self._on_source)
        replaced: BaseException | None = None
        try:
            # trio's scope reports True for a clean exit too: only an exception can be
            # swallowed.
            swallowed = bool(scope.__exit__(exc_type, exc, tb)) and exc is not None
        except BaseException as new_exc:
            # The scope raised something else (trio strips a caught Cancelled out of an
            # exception group): that is what leaves the block now.
            swallowed = False
            replaced = exc = new_exc
        if self._ctx_reset is not None:
            _current.reset(self._ctx_reset)
            self._ctx_reset = None
        parent = self._parent
        if parent is not None:
            try:
                parent._children.remove(self)
            except ValueError:
                pass
        pending: BaseException | None = None
        if self._tg is not None:
            tg, self._tg = self._tg, None
            # Shielded: an outside cancellation must not interrupt the monitors' clean-up;
            # they are cancelled and exit at once.
            tg.cancel_scope.shield = True
            tg.cancel_scope.cancel()
            try:
                await tg.__aexit__(None, None, None)
            except anyio.get_cancelled_exc_class() as cancelled:
                # An outside cancellation already requested of the asyncio task lands
                # here despite the shield. Finish the bookkeeping, then let it out.
                pending = cancelled
        self._task = None
        ctx = self.context
        ctx.end_time = time.time()
        error: CancelationError | None = None
        if swallowed or (isinstance(exc, CancelationError) and scope.cancel_called):
            # Our own scope caught its cancellation, or a token's check() raised it
            # (ours, or a child's that our cancellation reached first): one of our
            # sources did it.
            reason, message = self._reason_of_own()
            error = error_for_reason(reason, message, ctx, **self._error_attributes(reason))
            ctx.status = OperationStatus.CANCELLED
            event = "cancel"
        elif exc is None:
            ctx.status = OperationStatus.COMPLETED
            event = "complete"
        elif isinstance(exc, anyio.get_cancelled_exc_class()):
            self._settle_outside_reason()
            ctx.status = OperationStatus.CANCELLED
            event = "cancel"
        elif isinstance(exc, CancelationError) and exc.context is None:
            # A watched token's check() raised before its wake-up reached the loop.
            if self._set_reason(exc.reason, exc.message):
                self._after_reason()
            exc.context = ctx
            ctx.status = OperationStatus.CANCELLED
            event = "cancel"
        else:
            # Any other exception, including another operation's CancelationError that
            # nobody caught: this operation failed with it.
            ctx.status = OperationStatus.FAILED
            ctx.error = exc
            event = "error"
        if self._register:
            (OperationRegistry._instance or OperationRegistry.get_instance())._finish(self)
        if self._hooks:
            await self._run_hooks(event)
        if pending is not None and not isinstance(exc, anyio.get_cancelled_exc_class()):
            raise pending
        if error is not None:
            # A cancellation from an enclosing scope outranks ours: if one is pending,
            # it leaves here untouched instead of our error.
            await anyio.lowlevel.checkpoint_if_cancelled()
            raise error from (None if swallowed else exc)
        if replaced is not None:
            raise replaced
        return False

    # -- reasons ---------------------------------------------------------------------------
    def _reason_of_own(self) -> tuple[CancelationReason, str]:
        """Why this (cancelled) operation is cancelled, settling a passed deadline.

        Every cancellation path records its reason first, except a deadline: the scope
        enforces that on its own. The deadline is ours, or one carried from the parent.
        """
        if self._reason is None:
            scope = self._scope
            parent = self._parent
            if (
                parent is not None
                and not self._nested
                and scope is not None
                and scope.deadline < self._own_deadline
            ):
                reason, message = self._parent_message(parent)
            else:
                reason, message = CancelationReason.TIMEOUT, None
            if self._set_reason(reason, message):
                self._after_reason()
        assert self._reason is not None
        assert self._message is not None
        return self._reason, self._message

    def _error_attributes(self, reason: CancelationReason) -> dict[str, Any]:
        """What the seed library's exceptions carry besides a reason and message."""
        if reason is CancelationReason.TIMEOUT:
            return {"timeout_seconds": self._timeout}
        if reason is CancelationReason.PARENT:
            parent = self._parent
            return {
                "parent_id": None if parent is None else parent.context.id,
                "parent_reason": None if parent is None else parent._reason,
            }
        for source in self._sources:
            if source.triggered and source.reason is reason:
                if reason is CancelationReason.SIGNAL:
                    return {"signal_number": getattr(source, "signal_number", None)}
                if reason is CancelationReason.CONDITION:
                    return {"condition_name": getattr(source, "condition_name", source.name)}
        return {}

    def _settle_outside_reason(self) -> None:
        """Record why a cancellation from outside the operation reached it."""
        if self._reason is not None:
            return
        op = self._parent
        while op is not None:
            if op.is_cancelled:
                reason, message = self._parent_message(op)
                break
            op = op._parent
        else:
            reason = CancelationReason.PARENT
            message = f"operation {self._label()} was cancelled by an enclosing cancel scope"
        if self._set_reason(reason, message):
            self._after_reason()

    def _parent_message(self, parent: Cancelable) -> tuple[CancelationReason, str]:
        reason, message = parent._reason_of_own()
        return (
            CancelationReason.PARENT,
            f"parent operation {parent._label()} was cancelled ({reason.value}): {message}",
        )

    def _set_reason(self, reason: CancelationReason, message: str | None) -> bool:
        if self._reason is not None:
            return False
        if message is None:
            if reason is CancelationReason.TIMEOUT and self._timeout is not None:
                message = f"operation {self._label()} timed out after {self._timeout:g}s"
            else:
                message = f"operation {self._label()} was cancelled ({reason.value})"
        self._reason = reason
        self._message = message
        self.context.cancel_reason = reason
        self.context.cancel_message = message
        return True

    # -- cancelling ------------------------------------------------------------------------
    def _trigger(self, reason: CancelationReason, message: str | None) -> None:
        """Cancel now (on the operation's loop thread)."""
        if self._done or not self._set_reason(reason, message):
            return
        if self._scope is not None:
            self._scope.cancel()
        self._after_reason()

    def _after_reason(self) -> None:
        """Propagate a newly recorded reason: raise our token, cancel our children."""
        assert self._reason is not None
        if self._token is not None:
            self._token._raise_flag(self._reason, self._message)
        for child in list(self._children):
            child._parent_cancelled(self)

    def _parent_cancelled(self, parent: Cancelable) -> None:
        reason, message = self._parent_message(parent)
        if self._nested:
            # The parent's scope encloses ours: its cancellation reaches us by itself
            # and must pass through untouched. Only record why.
            if self._set_reason(reason, message):
                self._after_reason()
        elif self._handle is not None:
            self._handle.call(self._trigger, reason, message)

    def _on_token(self, token: CancelationToken) -> None:
        self._request(token.reason or CancelationReason.MANUAL, token.message)

    def _on_source(self, source: CancelationSource) -> None:
        if self._handle is not None:
            self._handle.call(self._trigger, source.reason, source.message)

    def _arm_token_deadline(self, token: _OperationToken) -> None:
        # The earliest deadline among this operation and its ancestors binds; on a tie
        # the highest ancestor owns it (a child carries its parent's deadline exactly).
        owner: Cancelable | None = None
        deadline = _INF
        op: Cancelable | None = self
        while op is not None:
            if op._mono_deadline <= deadline and op._mono_deadline != _INF:
                owner, deadline = op, op._mono_deadline
            op = op._parent
        if owner is None:
            return
        token._deadline = deadline
        token._deadline_owner = owner
        if owner is self:
            token._deadline_reason = CancelationReason.TIMEOUT
            token._deadline_message = (
                f"operation {self._label()} timed out after {self._timeout:g}s"
            )
        else:
            token._deadline_reason = CancelationReason.PARENT
            token._deadline_message = (
                f"parent operation {owner._label()} was cancelled "
                f"({CancelationReason.TIMEOUT.value}): it timed out"
            )

    def _deadline_passed(self) -> None:
        """Our deadline passed by the monotonic clock (noticed off the loop, maybe)."""
        handle = self._handle
        if handle is not None and self._reason is None:
            handle.call(self._trigger, CancelationReason.TIMEOUT, None)

    async def cancel(
        self,
        reason: CancelationReason | str | None = CancelationReason.MANUAL,
        message: str | None = None,
    ) -> None:
        """Cancel the operation (and its children) now; a checkpoint for the caller.

        Called from inside the operation, the cancellation is delivered at this
        ``await``: the operation's ``async with`` then raises the matching error.
        ``await op.cancel("why")`` is shorthand for a MANUAL cancellation with a message.
        """
        self.cancel_sync(reason, message)
        await anyio.lowlevel.checkpoint()

    def cancel_sync(
        self,
        reason: CancelationReason | str | None = CancelationReason.MANUAL,
        message: str | None = None,
    ) -> None:
        """Cancel the operation from any thread, without awaiting.

        From another thread the request is handed to the operation's event loop through
        its thread-safe wake-up: a task blocked in ``await`` resumes at once. Before the
        operation starts, the request is remembered and it is cancelled on entry.
        """
        reason, message = split_args(reason, message)
        self._request(reason, message)

    def _request(self, reason: CancelationReason, message: str | None) -> None:
        """Cancel from any thread, entered or not."""
        handle = self._handle
        if handle is not None:
            handle.call(self._trigger, reason, message)
            return
        # Not started: remember it; entry cancels the scope. If entry began meanwhile
        # (in the loop's thread) it may have looked before we wrote: hand it over too.
        self._set_reason(reason, message)
        handle = self._handle
        if handle is not None:
            handle.call(self._apply_early_reason)

    def _apply_early_reason(self) -> None:
        if not self._done and self._scope is not None and not self._scope.cancel_called:
            self._scope.cancel()
            self._after_reason()

    async def _deliver_after_shield(self) -> None:
        # asyncio runs a task's next step before a timer that came due meanwhile, so a
        # bare checkpoint would let a deadline that passed in the shield slip by. The
        # token reads the deadline (ours or an ancestor's) from the clock and cancels
        # its owner first; the checkpoint then delivers it.
        self.token.is_cancelled  # noqa: B018
        await anyio.lowlevel.checkpoint()

    # -- helpers for the body ----------------------------------------------------------------
    def shield(self) -> _Shield:
        """A block (``with`` or ``async with``) that cancellation cannot interrupt.

        The operation reports status SHIELDED inside it; a cancellation requested
        meanwhile is delivered at the first checkpoint after the block.
        """
        return _Shield(self)

    async def run_in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking ``fn(*args, **kwargs)`` in a worker thread, in this operation.

        ``current_operation()`` works inside ``fn``. A thread cannot be interrupted:
        on cancellation ``fn`` keeps running until it returns (it should poll
        ``current_operation().token.check()``), then the cancellation is raised here.
        """
        self.token  # noqa: B018  -- made now, so the thread and the loop share it
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        return await anyio.to_thread.run_sync(call)

    def wrap(self, fn: Callable[P, Awaitable[T] | T]) -> Callable[P, Awaitable[T]]:
        """Wrap ``fn`` so that every call first checks this operation's cancellation.

        Calling the wrapper when the operation is cancelled raises the backend's
        cancelled exception (inside the operation it unwinds to its ``async with``).
        """
        op = self

        @functools.wraps(fn)
        async def wrapped(*args: P.args, **kwargs: P.kwargs) -> T:
            await op._checkpoint()
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                return await result
            return result

        return wrapped

    @asynccontextmanager
    async def wrapping(self) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
        """``async with op.wrapping() as call: await call(fn, *args)``: each call checks
        cancellation first, like :meth:`wrap`."""

        async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            return await self.wrap(fn)(*args, **kwargs)

        yield call

    async def _checkpoint(self) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self.is_cancelled:
            await raise_cancelled()

    def stream(
        self,
        source: AsyncIterable[T],
        *,
        report_interval: int | None = None,
        buffer_partial: bool = True,
    ) -> AsyncIterator[T]:
        """Iterate ``source``, checking cancellation before each item.

        Cancellation is checked (a checkpoint) before each item is handed out; when the
        operation is cancelled the iteration stops there and the operation's
        ``async with`` raises as usual.

        Args:
            source: any async iterable.
            report_interval: report progress every this many items ("Processed N
                items", metadata ``count`` and ``latest_item``).
            buffer_partial: keep the last items seen (at most ``STREAM_BUFFER_SIZE``)
                in the partial result.

        ``context.partial_result`` is, as the seed library shapes it, ``{"count": n,
        "buffer": [...] or None, "completed": bool}``, kept up to date item by item,
        so a cancelled stream still hands back what it read.

        Raises:
            ValueError: ``report_interval`` is not a positive int (raised here, at the
                call, not at the first iteration).
        """
        if report_interval is not None and (
            isinstance(report_interval, bool)
            or not isinstance(report_interval, int)
            or report_interval <= 0
        ):
            raise ValueError(
                f"report_interval must be a positive number of items, not {report_interval!r}"
            )
        if not hasattr(source, "__aiter__"):
            raise TypeError(f"stream() takes an async iterable, not {type(source).__name__}")
        return self._stream(source, report_interval, buffer_partial)

    async def _stream(
        self, source: AsyncIterable[T], report_interval: int | None, buffer_partial: bool
    ) -> AsyncIterator[T]:
        seen: list[T] | None = [] if buffer_partial else None
        partial: dict[str, Any] = {"count": 0, "buffer": seen, "completed": False}
        self.context.partial_result = partial
        count = 0
        async for item in source:
            await self._checkpoint()
            count += 1
            partial["count"] = count
            if seen is not None:
                seen.append(item)
                if len(seen) > STREAM_BUFFER_SIZE:
                    del seen[0]
            if report_interval is not None and count % report_interval == 0:
                await self.report_progress(
                    f"Processed {count} items", {"count": count, "latest_item": item}
                )
            yield item
        partial["completed"] = True

    def __repr__(self) -> str:
        return f"<Cancelable {self._label()} {self.context.status.value}>"

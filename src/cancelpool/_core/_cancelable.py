"""``Cancelable``: one operation, its place in the tree of operations, and how a
cancellation spreads through it.

Concepts, one module each (trio's split of where a cancel starts from how it spreads):

* where a cancellation starts: the operation's timeout, tokens and sources
  (``_triggers.py``), or a ``cancel()`` call;
* how it spreads (here): the operation records why, first reason wins (the wording
  is ``_reasons.py``'s), cancels its cancel scope, raises its token (``_optoken.py``)
  and tells its children; a child in the parent's own task records why and lets the
  parent's cancellation pass through it, a child in another task is cancelled there;
* what it leaves: ``async with`` raises the matching :class:`CancelationError` for
  the operation's own cancellation; a cancellation from outside (an enclosing scope,
  the task being cancelled) passes through untouched as the backend's cancelled
  exception. Either way ``context`` records status, reason, message and the partial
  result, and the hooks run (``_hooks.py``);
* what it tells observers meanwhile: progress (``_progress.py``); the blocks and
  helpers of its body: ``_shield.py``, ``_body.py``; which operation is current:
  ``_current.py``.

How a cancellation request reaches the awaiting task:

* from the same loop: ``_trigger`` cancels the anyio ``CancelScope`` directly;
* from another thread (``cancel_sync``, a token cancelled in a thread): the request is
  handed to the operation's loop through its thread-safe wake-up (see ``_loop.py``),
  so a task blocked in ``await`` is woken at once, without polling;
* a deadline is the scope's own deadline on the loop's clock; synchronous code in
  threads sees it through ``op.token``, which reads the same deadline on the monotonic
  clock.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._body import STREAM_BUFFER_SIZE as STREAM_BUFFER_SIZE
from ._body import check_report_interval, stream_items, wrap_call
from ._context import OperationContext
from ._current import current_operation as current_operation
from ._current import current_var
from ._enums import CancelationReason, OperationStatus
from ._exceptions import CancelationError, error_for_reason
from ._hooks import ErrorCallback as ErrorCallback
from ._hooks import Hooks
from ._hooks import ProgressCallback as ProgressCallback
from ._hooks import StatusCallback as StatusCallback
from ._loop import LoopHandle, raise_cancelled
from ._optoken import OperationToken
from ._progress import RELAY_LOCK, ProgressRelay
from ._reasons import (
    default_message,
    label_of,
    outside_message,
    parent_deadline_message,
    parent_message,
    timeout_message,
)
from ._registry import OperationRegistry
from ._shield import Shield
from ._sources import (
    CancelationSource,
    ConditionFn,
    ConditionSource,
    SignalSource,
)
from ._token import CancelationToken, split_args
from ._triggers import Triggers
from ._validate import seconds

logger = logging.getLogger("cancelpool")

T = TypeVar("T")
P = ParamSpec("P")

_INF = float("inf")


def timeout_name(timeout: float | timedelta) -> str:
    """The seed library's name for an unnamed operation with a timeout.

    Its seconds as Python prints them: ``timeout_5s`` for ``5``, ``timeout_5.0s`` for
    ``5.0`` or ``timedelta(seconds=5)`` (a program may match on these names).
    """
    value = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    return f"timeout_{value}s"


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
        "_task",
        "_token",
        "_triggers",
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
        self._triggers: Triggers | None = None  # made by the first source or token
        self._scope: anyio.CancelScope | None = None
        self._handle: LoopHandle | None = None
        self._ctx_reset: contextvars.Token[Cancelable | None] | None = None
        self._reason: CancelationReason | None = None
        self._message: str | None = None
        self._token: OperationToken | None = None
        self._children: list[Cancelable] | None = None  # made by the first child
        self._progress: ProgressRelay | None = None
        self._hooks: Hooks | None = None
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
        op = cls(name or timeout_name(timeout), **kwargs)
        # What add_source(TimeoutSource(timeout)) does, without the source object.
        op._own_triggers().timeout = seconds(timeout, "timeout")
        return op

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
        self._own_triggers().add_source(source)
        return self

    def add_token(self, token: CancelationToken) -> Cancelable:
        """Cancel this operation when ``token`` is cancelled; returns ``self``."""
        if not isinstance(token, CancelationToken):
            raise TypeError(f"expected a CancelationToken, not {type(token).__name__}")
        self._check_not_entered("add a token")
        self._own_triggers().add_token(token)
        return self

    def _own_triggers(self) -> Triggers:
        triggers = self._triggers
        if triggers is None:
            triggers = self._triggers = Triggers()
        return triggers

    def combine(
        self,
        *others: Cancelable,
        name: str | None = None,
        operation_id: str | None = None,
        register: bool = False,
    ) -> Cancelable:
        """A new operation cancelled by whatever would cancel ``self`` or ``others``.

        Example::

            async with Cancelable.with_timeout(30).combine(Cancelable.with_token(stop)):
                await work()

        The one rule for combining (``@cancelable_combine`` follows it too): the new
        operation takes the earliest timeout, every token (shared: cancelling one
        cancels every operation watching it) and a fresh copy of every other source
        (a source holds one run's state, so two operations never share one). It is a
        new operation: it takes none of the others' callbacks, hooks, metadata or
        parent (its parent is the current operation where it is entered). As in the
        seed library it is named ``combined_<self's name>`` and its metadata lists
        the combined operations' ids (``sources``) with ``combined: True``.

        Args:
            others: the operations to combine with ``self``; none of them is entered.
            name: the new operation's name instead.
            operation_id: its id instead of a fresh one.
            register: list it in :class:`OperationRegistry`.
        """
        ops = (self, *others)
        for op in ops:
            if not isinstance(op, Cancelable):
                raise TypeError(f"combine() takes Cancelable objects, not {op!r}")
        combined = Cancelable(
            name or f"combined_{self.context.name}",
            operation_id=operation_id,
            metadata={"sources": [op.context.id for op in ops], "combined": True},
            register=register,
        )
        combined._triggers = Triggers.combined(op._triggers for op in ops)
        return combined

    def _check_not_entered(self, what: str) -> None:
        if self._entered:
            raise RuntimeError(f"cannot {what} to an operation that has already started")

    # -- observers -------------------------------------------------------------------------
    def on_progress(self, callback: ProgressCallback) -> Cancelable:
        """Call ``callback(operation_id, message, metadata)`` on every progress report
        of this operation and of its descendants. Sync or async; returns ``self``."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        self._relay().add(callback)
        return self

    @property
    def progress_callbacks(self) -> tuple[ProgressCallback, ...]:
        """The callbacks :meth:`on_progress` added to this operation, in order."""
        relay = self._progress
        return () if relay is None else relay.callbacks

    def _relay(self) -> ProgressRelay:
        relay = self._progress
        if relay is None:
            # A thread reporting progress may make it at the same time as the loop.
            with RELAY_LOCK:
                relay = self._progress
                if relay is None:
                    relay = self._progress = ProgressRelay()
        return relay

    def _add_hook(self, event: str, callback: StatusCallback | ErrorCallback) -> Cancelable:
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        if self._hooks is None:
            self._hooks = Hooks()
        self._hooks.add(event, callback)
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
            relay = op._progress
            if relay is not None:
                await relay.deliver(op_id, message, meta)
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
        relay = self._relay()
        if not relay.queue(message, metadata):
            return  # the drainer already scheduled takes it
        if not handle.spawn(self._drain_sync_reports):
            relay.drop_pending()
            logger.warning("cancelpool: progress %r lost: the event loop has closed", message)

    async def _drain_sync_reports(self) -> None:
        # One task delivers every pending report, in order (trio runs separate tasks
        # in no fixed order).
        relay = self._relay()
        while (report := relay.next_pending()) is not None:
            await self.report_progress(*report)

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
        triggers = self._triggers
        return () if triggers is None else triggers.tokens

    @property
    def sources(self) -> tuple[CancelationSource, ...]:
        """The sources this operation watches, other than its timeout, in order."""
        triggers = self._triggers
        return () if triggers is None else triggers.sources

    @property
    def timeout(self) -> float | None:
        """This operation's own timeout in seconds (its earliest), or None."""
        triggers = self._triggers
        return None if triggers is None else triggers.timeout

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
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self.is_cancelled:
            await raise_cancelled()

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
            token = self._token = OperationToken(self._poll_watched)
            if self._reason is not None:
                token.mirror(self._reason, self._message)
            else:
                self._arm_token_deadline(token)
                token.add_listener(self._on_token)
        return token

    def _label(self) -> str:
        return label_of(self.context)

    # -- entering and leaving --------------------------------------------------------------
    async def __aenter__(self) -> Cancelable:
        if self._entered:
            raise RuntimeError("a Cancelable can be entered only once; create a new one")
        self._entered = True
        handle = self._handle = LoopHandle.current()
        task = self._task = handle.current_task()
        parent = self._parent
        if parent is None:
            parent = self._parent = current_var.get()
        ctx = self.context
        scope = handle.cancel_scope()
        triggers = self._triggers
        timeout = None if triggers is None else triggers.timeout
        if timeout is not None:
            scope.deadline = self._own_deadline = handle.time() + timeout
            self._mono_deadline = time.monotonic() + timeout
        if parent is not None:
            self._join(parent, task, scope)
        if triggers is not None and triggers.sources:
            await triggers.open_monitors()
        scope.__enter__()
        self._scope = scope
        self._ctx_reset = current_var.set(self)
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
        if own_token is not None and not own_token.raised:
            self._arm_token_deadline(own_token)
        if triggers is not None and (triggers.tokens or triggers.sources):
            triggers.listen(self._on_token, self._on_source)
            if triggers.sources and triggers.uses_seed_protocol:
                await triggers.start_seed_sources(scope, self._on_seed_source)
        if self._hooks is not None:
            await self._hooks.run("start", ctx)
        return self

    def _join(self, parent: Cancelable, task: object, scope: anyio.CancelScope) -> None:
        """Become ``parent``'s child (at entry, before our scope is entered)."""
        self.context.parent_id = parent.context.id
        # Nested: the parent's ``async with`` encloses ours in this very task, so its
        # cancellation reaches us by itself. Otherwise (another task, even one that
        # inherited the parent as current operation) we must be cancelled explicitly,
        # and we carry the parent's deadline if it comes first.
        self._nested = parent._task is task and parent._scope is not None
        if not self._nested:
            parent_scope = parent._scope
            if parent_scope is not None and parent_scope.deadline < scope.deadline:
                scope.deadline = parent_scope.deadline
                self._mono_deadline = parent._mono_deadline
        if parent._children is None:
            parent._children = [self]
        else:
            parent._children.append(self)

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
        triggers = self._triggers
        if triggers is not None and triggers.sources and triggers.uses_seed_protocol:
            cancelled = await triggers.stop_seed_sources()
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
        if triggers is not None and (triggers.tokens or triggers.sources):
            triggers.unlisten(self._on_token, self._on_source)
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
            current_var.reset(self._ctx_reset)
            self._ctx_reset = None
        parent = self._parent
        if parent is not None and parent._children:
            try:
                parent._children.remove(self)
            except ValueError:
                pass
        # An outside cancellation that lands while the monitors close: let out last.
        pending = None
        if triggers is not None and triggers.monitors is not None:
            pending = await triggers.close_monitors()
        self._task = None
        self.context.end_time = time.time()
        error, event = self._outcome(scope, exc, swallowed)
        if self._token is not None:
            self._token.release(self._on_token)
        if self._register:
            (OperationRegistry._instance or OperationRegistry.get_instance())._finish(self)
        if self._hooks is not None:
            await self._hooks.run(event, self.context)
        try:
            if pending is not None and not isinstance(exc, anyio.get_cancelled_exc_class()):
                raise pending
            if error is not None:
                # A cancellation from an enclosing scope outranks ours: if one is
                # pending, it leaves here untouched instead of our error.
                await anyio.lowlevel.checkpoint_if_cancelled()
                raise error from (None if swallowed else exc)
            if replaced is not None:
                raise replaced
        finally:
            # What leaves here must not stay in this frame's locals: its traceback holds
            # the frame, a reference cycle per cancelled operation that only the cyclic
            # GC frees (a cancel_all over 100k jobs spent seconds in full collections).
            del pending, error, replaced, exc
        return False

    def _outcome(
        self, scope: anyio.CancelScope, exc: BaseException | None, swallowed: bool
    ) -> tuple[CancelationError | None, str]:
        """Record how the operation ended; returns our own error to raise (if any) and
        the hook event."""
        ctx = self.context
        if swallowed or (isinstance(exc, CancelationError) and scope.cancel_called):
            # Our own scope caught its cancellation, or a token's check() raised it
            # (ours, or a child's that our cancellation reached first): one of our
            # sources did it.
            reason, message = self._reason_of_own()
            error = error_for_reason(reason, message, ctx, **self._error_attributes(reason))
            ctx.status = OperationStatus.CANCELLED
            return error, "cancel"
        if exc is None:
            ctx.status = OperationStatus.COMPLETED
            return None, "complete"
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            self._settle_outside_reason()
            ctx.status = OperationStatus.CANCELLED
            return None, "cancel"
        if isinstance(exc, CancelationError) and exc.context is None:
            # A watched token's check() raised before its wake-up reached the loop.
            if self._set_reason(exc.reason, exc.message):
                self._after_reason()
            exc.context = ctx
            ctx.status = OperationStatus.CANCELLED
            return None, "cancel"
        # Any other exception, including another operation's CancelationError that
        # nobody caught: this operation failed with it.
        ctx.status = OperationStatus.FAILED
        ctx.error = exc
        return None, "error"

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
            return {"timeout_seconds": self.timeout}
        if reason is CancelationReason.PARENT:
            parent = self._parent
            return {
                "parent_id": None if parent is None else parent.context.id,
                "parent_reason": None if parent is None else parent._reason,
            }
        triggers = self._triggers
        return {} if triggers is None else triggers.fired_attributes(reason)

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
            message = outside_message(self._label())
        if self._set_reason(reason, message):
            self._after_reason()

    def _parent_message(self, parent: Cancelable) -> tuple[CancelationReason, str]:
        reason, message = parent._reason_of_own()
        return CancelationReason.PARENT, parent_message(parent._label(), reason, message)

    def _set_reason(self, reason: CancelationReason, message: str | None) -> bool:
        if self._reason is not None:
            return False
        if message is None:
            message = default_message(self._label(), reason, self.timeout)
        self._reason = reason
        self._message = message
        self.context.cancel_reason = reason
        self.context.cancel_message = message
        return True

    # -- spreading -------------------------------------------------------------------------
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
            self._token.mirror(self._reason, self._message)
        if self._children:
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

    def _on_seed_source(self, reason: CancelationReason, message: str) -> None:
        if self._handle is not None:
            self._handle.call(self._trigger, reason, message or None)

    # -- what the operation's token reads (see _optoken.py) ----------------------------------
    def _poll_watched(self) -> tuple[CancelationReason, str | None] | None:
        """A cancelled token watched by this operation or an ancestor, as the reason and
        message our token reports; the operation that watches it is told."""
        op: Cancelable | None = self
        while op is not None and not op._done:
            triggers = op._triggers
            if triggers is not None:
                for token in triggers.tokens:
                    # Another operation's token relays through its listeners; skipping it
                    # also keeps operations that watch each other from recursing here.
                    if type(token) is not OperationToken and token.is_cancelled:
                        reason = token.reason or CancelationReason.MANUAL
                        if op is self:
                            # Our listener on this flag cancels the operation.
                            return reason, token.message
                        op._request(reason, token.message)
                        return CancelationReason.PARENT, parent_message(
                            op._label(), reason, str(token.message)
                        )
            op = op._parent
        return None

    def _arm_token_deadline(self, token: OperationToken) -> None:
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
        if owner is self:
            timeout = self.timeout
            assert timeout is not None  # only a timeout of our own sets our deadline
            reason = CancelationReason.TIMEOUT
            message = timeout_message(self._label(), timeout)
        else:
            reason = CancelationReason.PARENT
            message = parent_deadline_message(owner._label())
        token.arm_deadline(deadline, reason, message, owner._deadline_passed)

    def _deadline_passed(self) -> bool:
        """Our deadline passed by the monotonic clock (noticed off the loop, maybe):
        False if we ended before it, else True once the loop is told."""
        if self._done and self._reason is None:
            return False
        handle = self._handle
        if handle is not None and self._reason is None:
            handle.call(self._trigger, CancelationReason.TIMEOUT, None)
        return True

    # -- cancelling ------------------------------------------------------------------------
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

    # -- helpers for the body ----------------------------------------------------------------
    def shield(self) -> Shield:
        """A block (``with`` or ``async with``) that cancellation cannot interrupt.

        The operation reports status SHIELDED inside it; a cancellation requested
        meanwhile is delivered at the first checkpoint after the block (at the latest
        when the operation's block exits).
        """
        return Shield(
            self.context, self._shield_ended, self._deliver_after_shield, self._shield_tracker
        )

    def _shield_ended(self) -> None:
        self._shield_exited = True

    def _shield_tracker(self) -> Cancelable:
        tracker = Cancelable(
            f"{self.context.name}_shielded", metadata={"shielded": True}, register=False
        )
        tracker.context.parent_id = self.context.id
        tracker.context.status = OperationStatus.SHIELDED
        return tracker

    async def _deliver_after_shield(self) -> None:
        # asyncio runs a task's next step before a timer that came due meanwhile, so a
        # bare checkpoint would let a deadline that passed in the shield slip by. The
        # token reads the deadline (ours or an ancestor's) from the clock and cancels
        # its owner first; the checkpoint then delivers it.
        self.token.is_cancelled  # noqa: B018
        await anyio.lowlevel.checkpoint()

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
        return wrap_call(self, fn)

    @asynccontextmanager
    async def wrapping(self) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
        """``async with op.wrapping() as call: await call(fn, *args)``: each call checks
        cancellation first, like :meth:`wrap`."""

        async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            return await self.wrap(fn)(*args, **kwargs)

        yield call

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
        check_report_interval(report_interval)
        if not hasattr(source, "__aiter__"):
            raise TypeError(f"stream() takes an async iterable, not {type(source).__name__}")
        return stream_items(self, source, report_interval, buffer_partial)

    def __repr__(self) -> str:
        return f"<Cancelable {self._label()} {self.context.status.value}>"

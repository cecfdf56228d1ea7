"""Bridges between plain threads and the event loop.

* :class:`ContextBridge` carries context variables, and so :func:`current_operation`,
  from async code into threads.
* :class:`AnyioBridge` lets any thread queue calls that run on the event loop::

      worker thread                         event loop thread
      -------------                         -----------------
      bridge.call_soon_threadsafe(fn, x)
        -> lock; append (fn, x) to deque
        -> first call since the last drain:
           LoopHandle wake-up  ==========>  bridge task wakes, takes the whole deque
                                            sync fn: fn(x) runs here, in order
                                            async fn: started as a task of the bridge

  The deque is bounded by ``buffer_size``: a producer faster than the loop gets
  :class:`queue.Full` at once instead of growing memory without limit. One wake-up
  is sent per batch, so a burst of calls costs the loop a single wake-up.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import inspect
import logging
import queue
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from ._loop import LoopHandle

logger = logging.getLogger("cancelpool")

T = TypeVar("T")

#: Calls an :class:`AnyioBridge` holds before it refuses more. Larger absorbs longer
#: bursts from producers; smaller notices a stalled or overloaded loop sooner and
#: bounds memory (one small tuple per call).
DEFAULT_BUFFER_SIZE = 1000


class ContextBridge:
    """Carry context variables (and so :func:`current_operation`) into threads.

    Context variables do not follow a call into another thread on their own. Capture
    them with :meth:`copy_context` where they are set, then either run a function in
    that context (:meth:`run_in_thread_with_context`, or ``ctx.run(fn)``) or apply it
    for a block of code in a thread you started (:meth:`restore_context`).
    """

    @staticmethod
    async def run_in_thread_with_context(
        fn: Callable[..., T],
        *args: Any,
        executor: concurrent.futures.Executor | None = None,
        **kwargs: Any,
    ) -> T:
        """Run blocking ``fn(*args, **kwargs)`` in a worker thread, in this context.

        ``current_operation()`` inside ``fn`` returns the operation active here; its
        ``token`` (``token.check()``, ``token.is_cancelled``) sees cancellations and
        deadlines of that operation. ``executor`` (a thread pool of yours) runs it
        instead of anyio's worker threads. A thread cannot be interrupted: if the
        calling task is cancelled meanwhile, the cancellation is raised here once
        ``fn`` returns, and ``fn``'s result is lost.
        """
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        if executor is None:
            return await anyio.to_thread.run_sync(call)
        future = executor.submit(call)
        handle = LoopHandle.current()
        done = anyio.Event()
        future.add_done_callback(lambda _: handle.call(done.set))
        try:
            await done.wait()
        except anyio.get_cancelled_exc_class():
            # As anyio's own threads: the call cannot be stopped; wait for it, then
            # let the cancellation out.
            with anyio.CancelScope(shield=True):
                await done.wait()
            raise
        return future.result()

    @staticmethod
    def copy_context() -> contextvars.Context:
        """A snapshot of the current context variables, to use in another thread.

        A ``contextvars.Context`` is a mapping of variables to values, so code
        written for the seed library (which returns a dict) iterates it unchanged.
        """
        return contextvars.copy_context()

    @staticmethod
    def restore_context(
        context: contextvars.Context | Mapping[contextvars.ContextVar[Any], Any],
    ) -> RestoredContext:
        """Apply a captured context now; as a ``with`` block, undo it at the end.

        Example::

            ctx = ContextBridge.copy_context()          # in the event loop

            def worker() -> None:                       # in a thread of your own
                with ContextBridge.restore_context(ctx):
                    current_operation().token.check()

        Every variable that has a value in ``context`` takes that value at once (as
        the seed library's plain call does); used as a ``with`` block, the previous
        values come back when it ends (also on error). Variables ``context`` has no
        value for are left alone.
        """
        if not isinstance(context, contextvars.Context) and not (
            isinstance(context, Mapping)
            and all(isinstance(var, contextvars.ContextVar) for var in context)
        ):
            raise TypeError(
                f"restore_context() takes a contextvars.Context (from copy_context()) or "
                f"a dict of ContextVar to value, not {type(context).__name__}"
            )
        return RestoredContext(context)


class RestoredContext:
    """Context variables set by :meth:`ContextBridge.restore_context`; a ``with``
    block around it resets them when it ends."""

    __slots__ = ("_resets", "context")

    def __init__(
        self, context: contextvars.Context | Mapping[contextvars.ContextVar[Any], Any]
    ) -> None:
        self.context = context
        self._resets = [var.set(value) for var, value in context.items()]

    def __enter__(self) -> contextvars.Context | Mapping[contextvars.ContextVar[Any], Any]:
        return self.context

    def __exit__(self, *exc_info: object) -> None:
        resets, self._resets = self._resets, []
        for reset in reversed(resets):
            reset.var.reset(reset)


@dataclass(frozen=True)
class BridgeStatistics:
    """Counters of one :class:`AnyioBridge`.

    Attributes:
        buffer_size: how many calls may wait at most.
        queued: calls waiting to be picked up by the bridge task.
        started: calls the bridge task has run (sync) or started (async).
        failed: calls that raised; each was logged.
        running: async calls started and not finished yet.
    """

    buffer_size: int
    queued: int
    started: int
    failed: int
    running: int


_NEW, _RUNNING, _CLOSING, _CLOSED = "new", "running", "closing", "closed"

# Running bridges, innermost (most recently entered) last: the module-level
# ``call_soon_threadsafe`` uses the last one.
_running: list[AnyioBridge] = []
# The get_instance() singletons, per class (a subclass gets its own).
_instance: dict[type[AnyioBridge], AnyioBridge] = {}
_instance_lock = threading.Lock()
_running_lock = threading.Lock()


class AnyioBridge:
    """Queue calls from any thread to run on the event loop, while ``async with``.

    Example::

        async with AnyioBridge() as bridge:
            threading.Thread(target=producer, args=(bridge,)).start()
            ...

        def producer(bridge: AnyioBridge) -> None:    # a plain thread
            bridge.call_soon_threadsafe(store, item)  # store(item) runs on the loop

    While entered, a task of the bridge runs queued calls promptly (the loop is woken
    through its own thread-safe wake-up, no polling): sync functions in the order they
    were queued, on the loop thread; async functions are started in that order as
    tasks of the bridge and run concurrently. A call that raises is logged on the
    ``cancelpool`` logger and the bridge carries on.

    Leaving the block normally runs every call already accepted and waits for the
    async ones. Leaving it with an exception (a cancellation included) cancels the
    async calls still running and drops the queued ones (logged). Once left, the
    bridge refuses calls with :class:`RuntimeError`; a bridge is entered only once.
    The bridge task lives in the block's cancel scopes: cancelling the enclosing
    operation cancels it too.

    Args:
        buffer_size: how many calls may wait to be picked up; one more raises
            :class:`queue.Full` in the calling thread.
    """

    def __init__(self, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be an int >= 1, not {buffer_size!r}")
        self._buffer_size = buffer_size
        self._lock = threading.Lock()
        self._queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._state = _NEW
        self._wake_pending = False
        self._handle: LoopHandle | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._event: anyio.Event | None = None
        self._started = 0
        self._failed = 0
        self._running_calls = 0
        self._stop: anyio.Event | None = None

    @classmethod
    def get_instance(cls) -> AnyioBridge:
        """The process-wide bridge (the seed library's singleton), made on first use.

        A bridge is single-use: once the shared one has been stopped, the next call
        makes a fresh one.
        """
        with _instance_lock:
            instance = _instance.get(cls)
            if instance is None or instance._state in (_CLOSING, _CLOSED):
                instance = _instance[cls] = cls()
            return instance

    async def start(self) -> None:
        """Run the bridge until :meth:`stop` (the seed library's way to run one).

        Run it in a task group (``tg.start_soon(bridge.start)``): it returns when
        :meth:`stop` is called, having run every call accepted before; cancelling
        it (the task group's scope) drops the queued calls instead, as leaving an
        ``async with`` with an exception does. Calls queued before it started run
        first.
        """
        stop = self._stop = anyio.Event()
        async with self:
            await stop.wait()

    async def stop(self) -> None:
        """Ask a bridge running :meth:`start` to finish; a checkpoint. No-op otherwise."""
        stop = self._stop
        if stop is not None:
            stop.set()
        await anyio.lowlevel.checkpoint()

    @property
    def is_started(self) -> bool:
        """The seed library's name for :attr:`is_running`."""
        return self.is_running

    @property
    def buffer_size(self) -> int:
        """How many calls may wait at most."""
        return self._buffer_size

    @property
    def is_running(self) -> bool:
        """True while the bridge accepts calls (inside its ``async with``)."""
        return self._state == _RUNNING

    def statistics(self) -> BridgeStatistics:
        """A snapshot of the bridge's counters."""
        with self._lock:
            return BridgeStatistics(
                buffer_size=self._buffer_size,
                queued=len(self._queue),
                started=self._started,
                failed=self._failed,
                running=self._running_calls,
            )

    def __repr__(self) -> str:
        return f"<AnyioBridge {self._state} queued={len(self._queue)}/{self._buffer_size}>"

    # -- producers (any thread) ------------------------------------------------------------
    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` to run on the bridge's event loop; returns at once.

        Safe from any thread, the loop's own included. ``fn`` may be sync or async;
        keyword arguments go through ``functools.partial``. Nothing is returned: have
        ``fn`` deliver its result (a queue, a future) if the caller needs one.

        Raises:
            queue.Full: ``buffer_size`` calls are already waiting.
            RuntimeError: the bridge has been left (closed). Before it starts, calls
                are queued and run once it does.
        """
        if not callable(fn):
            raise TypeError(f"call_soon_threadsafe() needs a callable, not {fn!r}")
        with self._lock:
            if self._state not in (_NEW, _RUNNING):
                raise RuntimeError(self._not_running_message())
            if len(self._queue) >= self._buffer_size:
                raise queue.Full(
                    f"AnyioBridge buffer is full ({self._buffer_size} calls waiting): the "
                    f"event loop is not keeping up. Slow the producer down, retry later, "
                    f"or create the bridge with a larger buffer_size."
                )
            self._queue.append((fn, args))
            if self._state == _NEW:
                # Not started: kept (bounded by buffer_size) and run once it starts, as
                # the seed library does.
                return
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            handle = self._handle
            assert handle is not None
            handle.call(self._wake)

    def _not_running_message(self) -> str:
        if self._state == _NEW:
            return (
                "this AnyioBridge has not started: enter it with `async with bridge:` "
                "before queueing calls"
            )
        return (
            "this AnyioBridge is closed: it takes calls only while its `async with` "
            "block runs; use a new bridge"
        )

    # -- the bridge task (loop thread) -----------------------------------------------------
    def _wake(self) -> None:
        event = self._event
        if event is not None:
            event.set()

    def _take(self) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
            self._wake_pending = False
            return batch

    async def _serve(self) -> None:
        tg = self._tg
        assert tg is not None
        while True:
            self._event = anyio.Event()
            batch = self._take()
            if not batch:
                if self._state != _RUNNING:
                    return
                await self._event.wait()
                continue
            for fn, args in batch:
                self._run_one(tg, fn, args)
            # Let other tasks (and the async calls just started) run between batches.
            await anyio.lowlevel.checkpoint()

    def _run_one(
        self, tg: anyio.abc.TaskGroup, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        self._count_started()
        if inspect.iscoroutinefunction(fn):
            self._count_running(+1)
            tg.start_soon(self._run_async, fn, args)
            return
        try:
            result = fn(*args)
        except Exception:
            self._count_failed()
            logger.exception("cancelpool: AnyioBridge call %r failed", fn)
            return
        if inspect.isawaitable(result):
            self._count_running(+1)
            tg.start_soon(self._await, fn, result)

    async def _run_async(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            await fn(*args)
        except Exception:
            self._count_failed()
            logger.exception("cancelpool: AnyioBridge call %r failed", fn)
        finally:
            self._count_running(-1)

    async def _await(self, fn: Callable[..., Any], awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except Exception:
            self._count_failed()
            logger.exception("cancelpool: AnyioBridge call %r failed", fn)
        finally:
            self._count_running(-1)

    def _count_started(self) -> None:
        with self._lock:
            self._started += 1

    def _count_failed(self) -> None:
        with self._lock:
            self._failed += 1

    def _count_running(self, delta: int) -> None:
        with self._lock:
            self._running_calls += delta

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> AnyioBridge:
        handle = LoopHandle.current()
        with self._lock:
            if self._state != _NEW:
                raise RuntimeError("an AnyioBridge can be entered only once; create a new one")
            self._state = _RUNNING
            self._handle = handle
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._serve)
        with _running_lock:
            _running.append(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        with _running_lock:
            if self in _running:
                _running.remove(self)
        tg = self._tg
        assert tg is not None, "__aexit__ without __aenter__"
        with self._lock:
            self._state = _CLOSING
            dropped = 0
            if exc is not None:
                dropped = len(self._queue)
                self._queue.clear()
        if exc is not None:
            tg.cancel_scope.cancel()
        self._wake()  # an idle bridge task sees the state change and ends
        try:
            # The body's exception propagates by itself; the task group only has to
            # wind down its tasks (which never raise: their errors are logged).
            await tg.__aexit__(None, None, None)
        finally:
            with self._lock:
                self._state = _CLOSED
                dropped += len(self._queue)
                self._queue.clear()
            if dropped:
                logger.warning("cancelpool: AnyioBridge closed with %d calls not run", dropped)
        return False


def call_soon_threadsafe(fn: Callable[..., Any], *args: Any) -> None:
    """Queue ``fn(*args)`` on the default bridge's event loop, from any thread.

    The default bridge is the :class:`AnyioBridge` entered most recently that is
    still running (a plain thread has no "current" loop, so a running bridge is what
    says which loop to use). With several loops in the process, hand each thread its
    bridge and call :meth:`AnyioBridge.call_soon_threadsafe` instead.

    Raises:
        RuntimeError: no AnyioBridge is running.
        queue.Full: the default bridge's buffer is full.
    """
    with _running_lock:
        bridge = _running[-1] if _running else None
    if bridge is None:
        raise RuntimeError(
            "call_soon_threadsafe() needs a running AnyioBridge to reach the event loop: "
            "run `async with AnyioBridge():` in the loop first"
        )
    bridge.call_soon_threadsafe(fn, *args)

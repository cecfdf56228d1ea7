"""Cancellation sources: things that decide *when* an operation must stop.

A source watches for one condition (a deadline, an OS signal, a predicate, a resource
threshold, a combination of other sources) and *fires* once. A :class:`Cancelable`
that holds the source is cancelled with the source's reason and message when it fires.

Sources run inside the operation they are attached to: :meth:`CancelationSource.monitor`
is awaited in a background task of that operation and returns when the source should
fire. A source can also be fired by hand with :meth:`CancelationSource.trigger_cancelation`.
"""

from __future__ import annotations

import copy
import inspect
import logging
import signal as _signal
import types
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any, Self

import anyio

from ._enums import CancelationReason
from ._validate import seconds

logger = logging.getLogger("cancelpool")

FireCallback = Callable[["CancelationSource"], None]
#: The seed library's source callback: ``(reason, message)``, sync or async.
SeedCallback = Callable[[CancelationReason, str], "Awaitable[None] | None"]


class CancelationSource:
    """Base class of every source. Subclasses override :meth:`monitor`.

    Attributes:
        reason: the reason reported when this source fires.
        name: a label used in messages.
        triggered: True once the source has fired.
        message: why it fired (set when it fires).
    """

    reason: CancelationReason = CancelationReason.MANUAL

    def __init__(self, reason: CancelationReason | None = None, name: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        self.name = name or type(self).__name__
        self.triggered = False
        self.message: str | None = None
        self._listeners: list[FireCallback] = []
        # The seed library's source protocol (see start_monitoring): the operation's
        # scope while it runs, and the callback it set.
        self.scope: anyio.CancelScope | None = None
        self._cancel_callback: SeedCallback | None = None
        self._monitoring_task: anyio.CancelScope | None = None

    # The internal, synchronous path every firing goes through.
    def fire(self, message: str | None = None) -> bool:
        """Mark the source as fired and notify whoever holds it (once)."""
        if self.triggered:
            return False
        self.triggered = True
        if message is not None or self.message is None:
            self.message = message or f"{self.name} fired"
        for listener in list(self._listeners):
            listener(self)
        return True

    async def trigger_cancelation(self, message: str | None = None) -> None:
        """Fire the source now, cancelling every operation that holds it.

        Also what a source written for the seed library calls when its condition is
        met: the callback given to :meth:`set_cancel_callback` is called with
        ``(reason, message)`` (awaited if async; an exception is logged), and
        :attr:`scope` is cancelled. Firing twice does nothing.
        """
        if not self.fire(message):
            return
        callback = self._cancel_callback
        if callback is not None:
            try:
                result = callback(self.reason, self.message or "")
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("cancelpool: cancel callback of source %s failed", self.name)
        if self.scope is not None and not self.scope.cancel_called:
            self.scope.cancel()

    # -- the seed library's source protocol ----------------------------------------------
    @property
    def uses_seed_protocol(self) -> bool:
        """Whether the source is written for the seed library (overrides
        :meth:`start_monitoring`): the operation then calls its ``start_monitoring``
        and ``stop_monitoring`` instead of running :meth:`monitor`."""
        return type(self).start_monitoring is not CancelationSource.start_monitoring

    async def start_monitoring(self, scope: anyio.CancelScope) -> None:
        """Start watching, for a source written for the seed library.

        The operation calls it on entry, inside its cancel scope, after
        :meth:`set_cancel_callback`. A subclass starts whatever watches (a task group
        of its own, say) and later calls :meth:`trigger_cancelation`. The base keeps
        ``scope``.
        """
        self.scope = scope

    async def stop_monitoring(self) -> None:
        """Stop watching; the operation calls it on exit, before its scope closes.

        The base cancels ``_monitoring_task`` (a cancel scope) if a subclass set one.
        """
        task = self._monitoring_task
        if task is not None:
            task.cancel()
            self._monitoring_task = None

    def set_cancel_callback(self, callback: SeedCallback) -> None:
        """Call ``callback(reason, message)`` (sync or async) when the source triggers."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        self._cancel_callback = callback

    def add_listener(self, listener: FireCallback) -> None:
        """Call ``listener(source)`` when the source fires (at once if it has)."""
        self._listeners.append(listener)
        if self.triggered:
            listener(self)

    def remove_listener(self, listener: FireCallback) -> None:
        """Forget ``listener`` (no error if absent)."""
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass

    @property
    def needs_monitor(self) -> bool:
        """Whether :meth:`monitor` must run in a background task."""
        return type(self).monitor is not CancelationSource.monitor

    async def monitor(self) -> None:
        """Wait until the source should fire, then return (the caller fires it).

        The base source only fires by hand, so it has nothing to watch.
        """
        await anyio.sleep_forever()

    async def run(self) -> None:
        """Monitor the source and fire it; used by operations and composites.

        If the check itself raises, the source fires with reason ERROR and a message
        naming the exception: a broken condition must not fail silently.
        """
        try:
            await self.monitor()
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            logger.exception("cancelpool: source %s failed", self.name)
            self.reason = CancelationReason.ERROR
            self.fire(f"{self.name} failed: {exc!r}")
            return
        self.fire()

    def fresh_copy(self) -> Self:
        """A copy of this source that has never fired and that nobody listens to.

        A source carries the state of one run (fired or not, its listeners, the seed
        protocol's scope and callback); two operations never share one, so combining
        operations copies their sources with this. The copy is shallow: the
        configuration (the condition, the signals, the timeout) is shared. A subclass
        keeping other per-run state should extend it.
        """
        new = copy.copy(self)
        new.triggered = False
        new.message = None
        new._listeners = []
        new.scope = None
        new._cancel_callback = None
        new._monitoring_task = None
        for attr, value in list(vars(new).items()):
            # A condition bound to the original (ResourceConditionSource checks with
            # its own method) must report to the copy.
            if isinstance(value, types.MethodType) and value.__self__ is self:
                setattr(new, attr, types.MethodType(value.__func__, new))
        return new

    def __repr__(self) -> str:
        state = "fired" if self.triggered else "armed"
        return f"<{type(self).__name__} {self.name!r} {state}>"


class TimeoutSource(CancelationSource):
    """Fires ``timeout`` seconds after monitoring starts.

    Attached directly to a :class:`Cancelable`, it becomes the cancel scope's deadline
    (no background task). Inside a composite it runs as a timer.
    """

    reason = CancelationReason.TIMEOUT

    def __init__(self, timeout: float | timedelta, name: str | None = None) -> None:
        super().__init__(name=name or "timeout")
        self.timeout = seconds(timeout, "timeout")

    async def monitor(self) -> None:
        await anyio.sleep(self.timeout)
        self.message = f"timed out after {self.timeout:g}s"


_UNCATCHABLE = frozenset(
    getattr(_signal, name) for name in ("SIGKILL", "SIGSTOP") if hasattr(_signal, name)
)


def validate_signals(signals: Iterable[int]) -> tuple[_signal.Signals, ...]:
    """Turn signal numbers into ``signal.Signals``, or raise a clear error."""
    result = []
    for sig in signals:
        try:
            known = _signal.Signals(sig)
        except (ValueError, TypeError):
            raise ValueError(
                f"{sig!r} is not a signal of this platform; use a signal.SIG* constant"
            ) from None
        if known in _UNCATCHABLE:
            raise ValueError(
                f"{known.name} cannot be caught by any process; choose another signal, "
                "e.g. signal.SIGTERM"
            )
        result.append(known)
    if not result:
        raise ValueError("give at least one signal, e.g. signal.SIGINT")
    return tuple(result)


class SignalSource(CancelationSource):
    """Fires when one of the given OS signals arrives (main thread only)."""

    reason = CancelationReason.SIGNAL

    def __init__(self, *signals: int, name: str | None = None) -> None:
        super().__init__(name=name or "signal")
        # As the seed library: no signals given means the usual stop signals.
        self.signals = validate_signals(signals or (_signal.SIGINT, _signal.SIGTERM))
        #: The number of the signal that arrived, once one has.
        self.signal_number: int | None = None

    async def monitor(self) -> None:
        with anyio.open_signal_receiver(*self.signals) as received:
            async for sig in received:
                self.signal_number = int(sig)
                self.message = f"received {_signal.Signals(sig).name}"
                return


ConditionFn = Callable[[], "bool | Awaitable[bool]"]


def validate_interval(check_interval: float) -> float:
    """A check interval must be a finite number of seconds > 0."""
    return seconds(check_interval, "check_interval", positive=True)


class ConditionSource(CancelationSource):
    """Fires when ``condition()`` returns a true value, checked every ``check_interval``.

    The condition may be sync or async. A sync condition runs on the event loop, so it
    must be quick; pass ``run_in_thread=True`` for a check that blocks. A check that
    raises is logged (``cancelpool`` logger) and tried again at the next interval: it
    neither fires the source nor stops the operation.
    """

    reason = CancelationReason.CONDITION

    def __init__(
        self,
        condition: ConditionFn,
        check_interval: float = 1.0,
        condition_name: str | None = None,
        *,
        run_in_thread: bool = False,
        name: str | None = None,
    ) -> None:
        if not callable(condition):
            raise TypeError(f"condition must be callable, not {type(condition).__name__}")
        label = condition_name or getattr(condition, "__name__", "condition")
        super().__init__(name=name or label)
        self.condition = condition
        self.condition_name = label
        self.check_interval = validate_interval(check_interval)
        self.run_in_thread = run_in_thread

    async def _check(self) -> bool:
        if self.run_in_thread:
            # Abandoned on cancellation: an operation never waits for a slow check to
            # finish before it can end; the thread completes the check on its own.
            result: Any = await anyio.to_thread.run_sync(self.condition, abandon_on_cancel=True)
        else:
            result = self.condition()
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    async def monitor(self) -> None:
        while True:
            try:
                if await self._check():
                    break
            except Exception:
                # As the seed library does: a check that raises is logged and the
                # condition is checked again; a flaky sensor does not stop the work.
                logger.exception(
                    "cancelpool: condition %r raised; checking it again in %gs",
                    self.condition_name,
                    self.check_interval,
                )
            await anyio.sleep(self.check_interval)
        self.message = f"condition {self.condition_name!r} met"


def _percent(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ValueError(f"{what} must be a percentage between 0 and 100, not {value!r}")
    return float(value)


class ResourceConditionSource(ConditionSource):
    """Fires when memory, CPU or disk usage crosses a threshold (percent, psutil).

    Every check runs in a worker thread, so the event loop never blocks on psutil.
    CPU usage is measured between two consecutive checks.
    """

    def __init__(
        self,
        memory_threshold: float | None = None,
        cpu_threshold: float | None = None,
        disk_threshold: float | None = None,
        check_interval: float = 5.0,
        *,
        disk_path: str = "/",
        name: str | None = None,
    ) -> None:
        self.memory_threshold = _percent(memory_threshold, "memory_threshold")
        self.cpu_threshold = _percent(cpu_threshold, "cpu_threshold")
        self.disk_threshold = _percent(disk_threshold, "disk_threshold")
        if memory_threshold is None and cpu_threshold is None and disk_threshold is None:
            raise ValueError("give at least one of memory_threshold, cpu_threshold, disk_threshold")
        self.disk_path = disk_path
        self._cpu_primed = False
        super().__init__(
            self._over_threshold,
            check_interval,
            "resource usage",
            run_in_thread=True,
            name=name or "resources",
        )

    def _over_threshold(self) -> bool:
        import psutil

        if self.memory_threshold is not None:
            used = psutil.virtual_memory().percent
            if used >= self.memory_threshold:
                self.message = f"memory at {used:.1f}% >= {self.memory_threshold:g}%"
                return True
        if self.cpu_threshold is not None:
            # interval=None compares with the previous call and never sleeps.
            cpu = psutil.cpu_percent(interval=None)
            if self._cpu_primed and cpu >= self.cpu_threshold:
                self.message = f"CPU at {cpu:.1f}% >= {self.cpu_threshold:g}%"
                return True
            self._cpu_primed = True
        if self.disk_threshold is not None:
            disk = psutil.disk_usage(self.disk_path).percent
            if disk >= self.disk_threshold:
                self.message = f"disk {self.disk_path} at {disk:.1f}% >= {self.disk_threshold:g}%"
                return True
        return False

    async def monitor(self) -> None:
        while not await self._check():
            await anyio.sleep(self.check_interval)


class CompositeSource(CancelationSource):
    """Fires as soon as ANY of its sources fires (alias: :data:`AnyOfSource`).

    It takes the reason and message of the member that fired first.
    """

    def __init__(self, sources: Iterable[CancelationSource], name: str | None = None) -> None:
        members = list(sources)
        if not members:
            raise ValueError(f"{type(self).__name__} needs at least one source")
        for source in members:
            if not isinstance(source, CancelationSource):
                raise TypeError(f"not a CancelationSource: {source!r}")
        super().__init__(name=name or type(self).__name__)
        self.sources = members
        for source in members:
            source.add_listener(self._member_fired)

    def _member_fired(self, member: CancelationSource) -> None:
        self.reason = member.reason
        self.fire(f"{member.name}: {member.message}")

    @property
    def needs_monitor(self) -> bool:
        return any(source.needs_monitor for source in self.sources)

    async def monitor(self) -> None:
        done = anyio.Event()

        def wake(_: CancelationSource) -> None:
            done.set()

        self.add_listener(wake)
        try:
            async with anyio.create_task_group() as tg:
                for source in self.sources:
                    if source.needs_monitor and not source.triggered:
                        tg.start_soon(source.run)
                await done.wait()
                tg.cancel_scope.cancel()
        finally:
            self.remove_listener(wake)

    async def run(self) -> None:
        await self.monitor()

    def fresh_copy(self) -> Self:
        """A fresh copy (see :meth:`CancelationSource.fresh_copy`) of fresh members."""
        new = super().fresh_copy()
        new.sources = [member.fresh_copy() for member in self.sources]
        for member in new.sources:
            member.add_listener(new._member_fired)
        return new


AnyOfSource = CompositeSource


class AllOfSource(CompositeSource):
    """Fires only once EVERY one of its sources has fired (reason CONDITION)."""

    reason = CancelationReason.CONDITION

    def __init__(self, sources: Iterable[CancelationSource], name: str | None = None) -> None:
        self.fired_sources: list[CancelationSource] = []
        super().__init__(sources, name=name)

    def fresh_copy(self) -> Self:
        new = super().fresh_copy()
        new.fired_sources = []
        return new

    def _member_fired(self, member: CancelationSource) -> None:
        if member not in self.fired_sources:
            self.fired_sources.append(member)
        if len(self.fired_sources) == len(self.sources):
            names = ", ".join(source.name for source in self.sources)
            self.fire(f"all {len(self.sources)} sources fired ({names})")

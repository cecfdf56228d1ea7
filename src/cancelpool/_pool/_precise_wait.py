"""Timers to the microsecond for a worker's asyncio loop: a timerfd in its epoll.

asyncio's ``EpollSelector`` rounds every wait up to the next millisecond, as
``epoll_wait`` counts in milliseconds: a timer that is due in 0.3 ms waits 1 ms, so a
job's timeout (its cancel scope's deadline, a loop timer) fired 0-1 ms late, half a
millisecond on average. :class:`PreciseEpollSelector` arms a ``timerfd`` (nanoseconds,
the loop's own ``CLOCK_MONOTONIC``) for each wait that has a timeout and waits in epoll
for it; the rounded epoll timeout stays as a backstop, one millisecond beyond.

::

    asyncio loop                 PreciseEpollSelector.select(timeout)
    ------------                 ------------------------------------------------------
    _run_once: next timer  --->  timeout > 0: timerfd_settime(timeout)   (one syscall)
    in `timeout` seconds         epoll.poll(ceil_ms(timeout) + 1 ms)     (backstop)
                                 the timerfd readable: drained, not reported
                                 other fds: reported as EpollSelector does

Waits without a timeout (idle) or with none left (ready callbacks) arm nothing: a
busy loop pays nothing. A timer left armed by a wait that another fd ended early
costs at most one spurious wake-up later.

Linux only (``timerfd`` through ctypes, as Python 3.11 has no ``os.timerfd_*``);
:func:`new_event_loop` falls back to asyncio's default loop where it is missing.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import select
import selectors
from typing import Any

_CLOCK_MONOTONIC = 1  # Linux's id of the clock asyncio's loop.time() reads
#: Seconds the epoll backstop waits beyond the timer: the timerfd ends the wait
#: first; only if it never fired would a timer be this late (a millisecond, as before).
_BACKSTOP = 1e-3


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _timerfd_functions() -> tuple[Any, Any]:
    libc = ctypes.CDLL(None, use_errno=True)
    create = libc.timerfd_create
    create.argtypes = [ctypes.c_int, ctypes.c_int]
    create.restype = ctypes.c_int
    settime = libc.timerfd_settime
    settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
    settime.restype = ctypes.c_int
    return create, settime


class PreciseEpollSelector(selectors.EpollSelector):
    """An ``EpollSelector`` whose timed waits end on time, to the microsecond.

    Raises:
        OSError: no timerfd here (not Linux, or a libc without it).
    """

    def __init__(self) -> None:
        try:
            create, settime = _timerfd_functions()
        except (OSError, AttributeError) as exc:
            raise OSError(f"timerfd is not available: {exc}") from None
        super().__init__()
        fd = create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            errno = ctypes.get_errno()
            super().close()
            raise OSError(errno, f"timerfd_create: {os.strerror(errno)}")
        self._timer_fd = fd
        self._settime = settime
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        # The base class's own epoll object and fd -> key table (the same objects; the
        # stubs do not declare them).
        self._epoll: select.epoll = getattr(self, "_selector")  # noqa: B009
        self._keys: dict[int, selectors.SelectorKey] = getattr(self, "_fd_to_key")  # noqa: B009
        self._epoll.register(fd, select.EPOLLIN)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            wait = -1.0
        elif timeout <= 0:
            wait = 0.0
        else:
            self._arm(timeout)
            wait = math.ceil(timeout * 1e3) * 1e-3 + _BACKSTOP
        # One more than the registered fds: the timer's event takes a place too.
        max_ev = len(self._keys) + 1
        ready: list[tuple[selectors.SelectorKey, int]] = []
        try:
            fd_event_list = self._epoll.poll(wait, max_ev)
        except InterruptedError:
            return ready
        timer_fd = self._timer_fd
        for fd, event in fd_event_list:
            if fd == timer_fd:
                self._drain()
                continue
            events = 0
            if event & ~select.EPOLLIN:
                events |= selectors.EVENT_WRITE
            if event & ~select.EPOLLOUT:
                events |= selectors.EVENT_READ
            key = self._keys.get(fd)
            if key:
                ready.append((key, events & key.events))
        return ready

    def _arm(self, timeout: float) -> None:
        # A one-shot timer, relative: no clock read here. 0 would disarm it.
        nanoseconds = max(1, int(timeout * 1e9))
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(nanoseconds, 1_000_000_000)
        if self._settime(self._timer_fd, 0, self._spec_ref, None) < 0:
            # Cannot happen for a valid fd and value; the backstop still ends the wait.
            pass

    def _drain(self) -> None:
        try:
            os.read(self._timer_fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        fd, self._timer_fd = self._timer_fd, -1
        if fd >= 0:
            os.close(fd)
        super().close()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An asyncio loop on :class:`PreciseEpollSelector`; asyncio's default loop where
    no timerfd is available."""
    try:
        selector = PreciseEpollSelector()
    except OSError:
        return asyncio.new_event_loop()
    return asyncio.SelectorEventLoop(selector)

"""Timers to the microsecond for a worker's asyncio loop.

asyncio's ``EpollSelector`` rounds every wait up to the next millisecond, as
``epoll_wait`` counts in milliseconds: a timer that is due in 0.3 ms waits 1 ms, so a
job's timeout (its cancel scope's deadline, a loop timer) fired 0-1 ms late, half a
millisecond on average. An epoll object is itself a file descriptor, readable when one
of its fds is ready, and ``select()`` waits in microseconds. :class:`PreciseEpollSelector`
waits the whole milliseconds of a timed wait in epoll, as asyncio does (an event that
ends the wait, a doorbell ring, costs the same one system call as before), and the
last fraction of a millisecond in ``select()`` on its epoll fd:

::

    asyncio loop                 PreciseEpollSelector.select(timeout)
    ------------                 ------------------------------------------------------
    _run_once: next timer  --->  timeout >= 1 ms: epoll.poll(whole ms), events as
    in `timeout` seconds           EpollSelector reports them; none: back to the loop,
                                   which asks again for the rest
                                 timeout < 1 ms: select([epoll fd], timeout), then
                                   epoll.poll(0)
    no timer / ready work  --->  epoll.poll(-1) / epoll.poll(0), as before

A timer that fires costs one more loop iteration and system call; waits ended by an
event, and waits without a timeout (idle) or with none left (ready callbacks), cost
nothing more. ``select()`` takes fds below ``FD_SETSIZE`` (1024) only: the epoll fd is
made when the worker starts, with a handful of fds open; should it ever be above, the
selector waits as asyncio's does.
"""

from __future__ import annotations

import asyncio
import select
import selectors
import sys

#: The fds ``select()`` can wait for are those below this (glibc's FD_SETSIZE).
_FD_SETSIZE = 1024


if sys.platform == "linux":

    class PreciseEpollSelector(selectors.EpollSelector):
        """An ``EpollSelector`` whose timed waits end on time, to the microsecond."""

        def __init__(self) -> None:
            super().__init__()
            self._epoll_fd = self.fileno()
            self._precise = self._epoll_fd < _FD_SETSIZE
            # The base class's epoll object and fd -> key table (the same objects; the
            # stubs do not declare them).
            self._epoll: select.epoll = getattr(self, "_selector")  # noqa: B009
            self._keys: dict[int, selectors.SelectorKey] = getattr(self, "_fd_to_key")  # noqa: B009

        def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            if timeout is None or timeout <= 0 or not self._precise:
                return super().select(timeout)
            whole_ms = int(timeout * 1e3)
            if whole_ms:
                # The whole milliseconds in epoll itself, as asyncio waits: an event
                # ends the wait in one system call. Returning early, the loop asks
                # again for the rest, below. (Half a millisecond less, as epoll rounds
                # the seconds it is given up to the millisecond: 0.013 waits 14 ms.)
                return self._events(self._epoll.poll((whole_ms - 0.5) * 1e-3, len(self._keys) or 1))
            # Under a millisecond left: waited for in select(), in microseconds; it
            # returns when an fd is ready or the time is up. Then nothing to wait for.
            select.select((self._epoll_fd,), (), (), timeout)
            return super().select(0)

        def _events(
            self, fd_events: list[tuple[int, int]]
        ) -> list[tuple[selectors.SelectorKey, int]]:
            # What EpollSelector.select reports for the events epoll returned.
            ready = []
            keys = self._keys
            for fd, event in fd_events:
                events = 0
                if event & ~select.EPOLLIN:
                    events |= selectors.EVENT_WRITE
                if event & ~select.EPOLLOUT:
                    events |= selectors.EVENT_READ
                key = keys.get(fd)
                if key:
                    ready.append((key, events & key.events))
            return ready


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An asyncio loop on :class:`PreciseEpollSelector` (asyncio's default loop where
    there is no epoll)."""
    if sys.platform == "linux":
        return asyncio.SelectorEventLoop(PreciseEpollSelector())
    return asyncio.new_event_loop()  # pragma: no cover - no epoll

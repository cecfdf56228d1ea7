"""Timers to the microsecond for a worker's asyncio loop.

asyncio's ``EpollSelector`` rounds every wait up to the next millisecond, as
``epoll_wait`` counts in milliseconds: a timer that is due in 0.3 ms waits 1 ms, so a
job's timeout (its cancel scope's deadline, a loop timer) fired 0-1 ms late, half a
millisecond on average. An epoll object is itself a file descriptor, readable when one
of its fds is ready, and ``select()`` waits in microseconds: a timed wait of
:class:`PreciseEpollSelector` waits for its epoll fd in ``select()``, then collects the
events without waiting.

::

    asyncio loop                 PreciseEpollSelector.select(timeout)
    ------------                 ------------------------------------------------------
    _run_once: next timer  --->  timeout > 0: select([epoll fd], timeout)  (microseconds)
    in `timeout` seconds         epoll.poll(0): the ready fds, as EpollSelector reports
    no timer / ready work  --->  epoll.poll(-1) / epoll.poll(0), as before (one syscall)

A timed wait costs one more system call; waits without a timeout (idle) or with none
left (ready callbacks) cost nothing more. ``select()`` takes fds below ``FD_SETSIZE``
(1024) only: the epoll fd is made when the worker starts, with a handful of fds open;
should it ever be above, the selector waits as asyncio's does.
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

        def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            if timeout is not None and timeout > 0 and self._precise:
                # Returns when an fd is ready or the time is up; then nothing more to wait.
                select.select((self._epoll_fd,), (), (), timeout)
                timeout = 0
            return super().select(timeout)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An asyncio loop on :class:`PreciseEpollSelector` (asyncio's default loop where
    there is no epoll)."""
    if sys.platform == "linux":
        return asyncio.SelectorEventLoop(PreciseEpollSelector())
    return asyncio.new_event_loop()  # pragma: no cover - no epoll

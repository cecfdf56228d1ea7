"""A doorbell: the supervisor's way to wake one worker's event loop.

The shared-memory flag says *that* a job is cancelled; a worker blocked in ``await``
does not read it until something wakes its loop. The doorbell is that something: an
``eventfd`` (Linux) or a pipe, rung by the supervisor, watched by the worker's loop
with ``loop.add_reader(bell.fileno(), ...)``. Rings coalesce: however many arrive
before the worker drains, it wakes once and checks all its jobs' slots.
"""

from __future__ import annotations

import os
import threading
from multiprocessing import reduction
from typing import Any

# Bytes read per read() when draining a pipe doorbell; rings coalesce, so a burst of
# rings is drained in one or two calls and the size barely matters.
_PIPE_DRAIN_CHUNK = 4096


class Doorbell:
    """A non-blocking wake-up channel from the supervisor to one worker.

    Create it in the supervisor and pass it to the worker in
    ``multiprocessing.Process(args=...)`` (fork, spawn or forkserver): both ends then
    share the same channel. :meth:`ring` anywhere; in the worker, watch
    :meth:`fileno` for readability and :meth:`drain` when it is readable.

    A doorbell is a context manager that :meth:`close`\\ s itself.
    """

    __slots__ = ("_eventfd", "_lock", "_rfd", "_wfd")

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._setup(fd, fd, eventfd=True)
        else:  # pragma: no cover - non-Linux fallback
            rfd, wfd = os.pipe()  # close-on-exec by default
            os.set_blocking(rfd, False)
            os.set_blocking(wfd, False)
            self._setup(rfd, wfd, eventfd=False)

    def _setup(self, rfd: int, wfd: int, *, eventfd: bool) -> None:
        self._rfd = rfd
        self._wfd = wfd
        self._eventfd = eventfd
        # Reentrant, because a signal handler may ring while the interrupted code is
        # inside ring(); it only guards against ringing an fd that close() released.
        self._lock = threading.RLock()

    @classmethod
    def _from_fds(cls, rfd: int, wfd: int, *, eventfd: bool) -> Doorbell:
        bell = cls.__new__(cls)
        bell._setup(rfd, wfd, eventfd=eventfd)
        return bell

    def __reduce__(self) -> tuple[Any, ...]:
        if self._rfd < 0:
            raise ValueError("cannot pickle a closed Doorbell")
        # DupFd carries the fds across under every start method (see TokenTable).
        if self._eventfd:
            return (_rebuild_doorbell, (reduction.DupFd(self._rfd), None))
        return (_rebuild_doorbell, (reduction.DupFd(self._rfd), reduction.DupFd(self._wfd)))

    # -- use ---------------------------------------------------------------------------
    def ring(self) -> None:
        """Wake whoever watches the doorbell. Never blocks, never raises.

        A ring while the channel is full (its count saturated, its pipe buffer full)
        is dropped: the reader has rings pending and will wake anyway. Ringing a
        closed doorbell does nothing.
        """
        with self._lock:
            if self._wfd < 0:
                return
            try:
                if self._eventfd:
                    os.eventfd_write(self._wfd, 1)
                else:
                    os.write(self._wfd, b"\1")
            except (BlockingIOError, BrokenPipeError):
                pass

    def fileno(self) -> int:
        """The fd that becomes readable when the doorbell rings (for ``add_reader``).

        Raises:
            ValueError: the doorbell is closed.
        """
        if self._rfd < 0:
            raise ValueError("this Doorbell is closed")
        return self._rfd

    def drain(self) -> int:
        """Consume the pending rings without blocking; return how many there were.

        Returns 0 if none was pending or the doorbell is closed.
        """
        with self._lock:
            rfd = self._rfd
            if rfd < 0:
                return 0
            if self._eventfd:
                try:
                    return os.eventfd_read(rfd)
                except BlockingIOError:
                    return 0
            total = 0
            try:
                while data := os.read(rfd, _PIPE_DRAIN_CHUNK):
                    total += len(data)
            except BlockingIOError:
                pass
            return total

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """Close this process's end(s) of the doorbell. Idempotent."""
        with self._lock:
            rfd, wfd = self._rfd, self._wfd
            if rfd < 0:
                return
            self._rfd = self._wfd = -1
            os.close(rfd)
            if wfd != rfd:
                os.close(wfd)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._rfd < 0

    def __enter__(self) -> Doorbell:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        kind = "eventfd" if self._eventfd else "pipe"
        state = "closed" if self._rfd < 0 else f"fd={self._rfd}"
        return f"<Doorbell {kind} {state} at {id(self):#x}>"


def _rebuild_doorbell(rdup: Any, wdup: Any | None) -> Doorbell:
    rfd = rdup.detach()
    os.set_inheritable(rfd, False)
    if wdup is None:
        return Doorbell._from_fds(rfd, rfd, eventfd=True)
    wfd = wdup.detach()
    os.set_inheritable(wfd, False)
    return Doorbell._from_fds(rfd, wfd, eventfd=False)


Doorbell.__module__ = "cancelpool.shm"

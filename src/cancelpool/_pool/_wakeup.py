"""``Wakeup``: a self-pipe that makes the supervisor thread run its loop once more.

Any thread may call :meth:`Wakeup.wake`; the supervisor thread polls :attr:`fd` among
the workers' pipes and calls :meth:`drain` when it is readable. One byte is written
per round of the loop at most: a flag says a byte is already on its way.
"""

from __future__ import annotations

import os
import threading


class Wakeup:
    """A non-blocking self-pipe with a "byte already pending" flag."""

    def __init__(self) -> None:
        self._r = -1
        self._w = -1
        self._pending = False
        # Guards closing against wake_from_anywhere(), which may run in any thread at
        # any allocation (a weakref callback) and so may take no other lock.
        self._guard = threading.Lock()

    @property
    def fd(self) -> int:
        """The end to poll for reading (-1 until :meth:`open`, and after close)."""
        return self._r

    def open(self) -> None:
        """Create the pipe."""
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def wake(self) -> None:
        """Make the supervisor thread run its loop once more.

        Callers hold the pool's lock, which :meth:`close` is called under too: so the
        write end cannot be closed (and its number reused) between check and write.
        """
        if self._pending or self._w < 0:
            return
        self._pending = True
        try:
            os.write(self._w, b"x")
        except OSError:
            pass

    def wake_from_anywhere(self) -> None:
        """:meth:`wake` for a caller that cannot take the pool's lock."""
        if self._pending:
            # A byte is on its way; drain() clears the flag only once the pipe is
            # empty, and the supervisor looks at its work after that.
            return
        with self._guard:
            self.wake()

    def drain(self) -> None:
        """Empty the pipe (the supervisor thread, when :attr:`fd` is readable)."""
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass
        # Cleared only after the pipe is empty: a wake() racing with us then either
        # left its byte in the pipe or will write a new one. Cleared before reading,
        # its byte could be read here while the flag stays set: no wake-up ever again.
        self._pending = False

    def close(self) -> None:
        """Close both ends (the pool's lock held); later wake-ups do nothing."""
        with self._guard:
            for fd in (self._r, self._w):
                if fd >= 0:
                    os.close(fd)
            self._r = self._w = -1

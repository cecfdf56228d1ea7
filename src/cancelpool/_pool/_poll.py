"""What the supervisor thread waits on, and how it tells an event's meaning.

One ``poll`` covers every worker's outbox pipe, its inbox pipe while a write is
pending, every process sentinel (a worker's or a spare's), the wake-up pipe, and the
earliest timer. Handling one event may bury a worker and start its replacement, whose
new pipes can reuse the fd numbers of the old ones: :class:`Watch` remembers what each
fd stood for when the poll began, and an event is acted on only while its fd still
means the same thing (the same process). So a worker is declared dead only by its own
sentinel, never by a reused number.
"""

from __future__ import annotations

import math
import select
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ._worker_set import WorkerProc

# What a polled fd is, in the order events are handled: what a worker said before it
# died is read before its death is handled.
OUTBOX = 0
SENTINEL = 1
SPARE = 2
WAKE = 3

_READ_EVENTS = select.POLLIN | select.POLLHUP | select.POLLERR


class Event(NamedTuple):
    """One ready fd of a worker, as it stood when the poll began."""

    kind: int
    proc: WorkerProc


class Watch:
    """The fds of one poll and what each stood for (built under the pool's lock)."""

    def __init__(self, wake_fd: int, procs: Iterable[WorkerProc], spares: Iterable[WorkerProc]):
        self.wake_fd = wake_fd
        self.readers = [wake_fd]
        self.writers: list[int] = []
        self._meaning: dict[int, tuple[int, WorkerProc, Any]] = {}
        for proc in procs:
            if proc.alive:
                self._add(proc.out_fd, OUTBOX, proc)
                self._add(proc.sentinel, SENTINEL, proc)
                if proc.write_buffer:
                    self.writers.append(proc.in_fd)
        for proc in spares:
            if proc.alive:
                self._add(proc.sentinel, SPARE, proc)
                if proc.write_buffer:
                    self.writers.append(proc.in_fd)

    def _add(self, fd: int, kind: int, proc: WorkerProc) -> None:
        self._meaning[fd] = (kind, proc, proc.process)
        self.readers.append(fd)

    def events(self, readable: set[int]) -> Iterator[Event | None]:
        """The ready fds in handling order: None for the wake-up pipe, else an
        :class:`Event` whose process is still the one the fd belonged to (checked
        as each is reached, since handling one may bury another's worker)."""
        meaning = self._meaning
        for fd in sorted(readable, key=lambda fd: meaning[fd][0] if fd in meaning else WAKE):
            if fd == self.wake_fd:
                yield None
                continue
            entry = meaning.get(fd)
            if entry is None:
                continue
            kind, proc, process = entry
            if proc.alive and process is not None and proc.process is process:
                yield Event(kind, proc)


def wait(
    readers: list[int], writers: list[int], deadline: float | None
) -> tuple[set[int], set[int]]:
    """Wait until a reader or writer fd is ready, or the deadline passes.

    ``poll`` rather than ``select``: a program with a thousand sockets open gives the
    pool fds above 1023, which ``select`` refuses.
    """
    poller = select.poll()
    for fd in readers:
        poller.register(fd, select.POLLIN)
    for fd in writers:
        poller.register(fd, select.POLLIN | select.POLLOUT if fd in readers else select.POLLOUT)
    if deadline is None:
        events = poller.poll()
    else:
        # poll() takes milliseconds: round up, or we would wake just before the deadline.
        events = poller.poll(max(0, math.ceil((deadline - time.monotonic()) * 1000)))
    readable = {fd for fd, mask in events if mask & _READ_EVENTS}
    writable = {fd for fd, mask in events if mask & (select.POLLOUT | select.POLLERR)}
    return readable, writable

"""What the supervisor thread waits on, and how it tells an event's meaning.

One ``poll`` covers every worker's outbox pipe, its inbox pipe while a write is
pending, every process sentinel (a worker's or a spare's), the wake-up pipe, and the
earliest timer. Handling one event may bury a worker and start its replacement, whose
new pipes can reuse the fd numbers of the old ones: :class:`Watch` remembers what each
fd stood for when it was built, and an event is acted on only while its fd still
means the same thing (the same process). So a worker is declared dead only by its own
sentinel, never by a reused number.

A :class:`Watch` and its ``poll`` object are kept from one turn of the supervisor's
loop to the next while the processes they were built for are the same ones
(:func:`processes`): building them costs more than the rest of a quiet turn.
"""

from __future__ import annotations

import math
import select
import time
from collections.abc import Iterator, Sequence
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
_WRITE_EVENTS = select.POLLOUT | select.POLLERR


class Event(NamedTuple):
    """One ready fd of a worker, as it stood when the poll began."""

    kind: int
    proc: WorkerProc


def processes(
    wake_fd: int, procs: Sequence[WorkerProc], spares: Sequence[WorkerProc]
) -> tuple[Any, ...]:
    """What a :class:`Watch` is built from (lock held): the wake-up fd, then the live
    process of each place and each spare, in order (None where there is none). Two
    equal keys mean the same fds with the same meanings."""
    return (
        wake_fd,
        *[proc.process if proc.alive else None for proc in procs],
        None,  # where the places end
        *[proc.process if proc.alive else None for proc in spares],
    )


class Watch:
    """The fds of one set of processes, what each stands for, and the ``poll`` object
    that waits on them (built under the pool's lock, used by the supervisor thread)."""

    def __init__(
        self, key: tuple[Any, ...], procs: Sequence[WorkerProc], spares: Sequence[WorkerProc]
    ):
        self.key = key
        self.wake_fd: int = key[0]
        self._writing = [proc for proc in (*procs, *spares) if proc.alive]
        self._poller = select.poll()
        self._writers: frozenset[int] = frozenset()
        self._meaning: dict[int, tuple[int, WorkerProc, Any]] = {}
        self._rank = {self.wake_fd: WAKE}
        self._poller.register(self.wake_fd, select.POLLIN)
        for proc in procs:
            if proc.alive:
                self._add(proc.out_fd, OUTBOX, proc)
                self._add(proc.sentinel, SENTINEL, proc)
        for proc in spares:
            if proc.alive:
                self._add(proc.sentinel, SPARE, proc)

    def _add(self, fd: int, kind: int, proc: WorkerProc) -> None:
        self._meaning[fd] = (kind, proc, proc.process)
        self._rank[fd] = kind
        self._poller.register(fd, select.POLLIN)

    def watch_writes(self) -> None:
        """Wait for the inbox pipes that have a write pending, and only those (lock
        held: the write buffers are filled under it)."""
        writers = frozenset([proc.in_fd for proc in self._writing if proc.write_buffer])
        if writers == self._writers:
            return
        for fd in self._writers - writers:
            self._poller.unregister(fd)
        for fd in writers - self._writers:
            self._poller.register(fd, select.POLLOUT)
        self._writers = writers

    def wait(self, deadline: float | None) -> tuple[list[int], frozenset[int]]:
        """Wait until a watched fd is ready, or the deadline passes: the readable fds,
        and the writable ones.

        ``poll`` rather than ``select``: a program with a thousand sockets open gives
        the pool fds above 1023, which ``select`` refuses.
        """
        if deadline is None:
            ready = self._poller.poll()
        else:
            # poll() takes milliseconds: round up, or we would wake just before the deadline.
            ready = self._poller.poll(max(0, math.ceil((deadline - time.monotonic()) * 1000)))
        readable = [fd for fd, mask in ready if mask & _READ_EVENTS and fd in self._rank]
        if not self._writers:
            return readable, frozenset()
        return readable, frozenset([fd for fd, mask in ready if mask & _WRITE_EVENTS])

    def events(self, readable: list[int]) -> Iterator[Event | None]:
        """The ready fds in handling order: None for the wake-up pipe, else an
        :class:`Event` whose process is still the one the fd belonged to (checked
        as each is reached, since handling one may bury another's worker)."""
        if len(readable) > 1:
            readable = sorted(readable, key=self._rank.__getitem__)
        meaning = self._meaning
        for fd in readable:
            if fd == self.wake_fd:
                yield None
                continue
            kind, proc, process = meaning[fd]
            if proc.alive and process is not None and proc.process is process:
                yield Event(kind, proc)

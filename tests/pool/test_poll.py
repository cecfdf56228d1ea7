"""The supervisor's poll (``_poll.Watch``) over real pipes: kept while the processes
are the same, never acting on an fd that has changed meaning, waiting for writes only
while one is pending."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cancelpool._pool import _poll
from cancelpool._pool._worker_set import WorkerProc


class _Pipes:
    """Opens real pipes and closes them all at the end of the test."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def pipe(self) -> tuple[int, int]:
        read, write = os.pipe()
        self.fds += [read, write]
        return read, write


@pytest.fixture
def pipes() -> Iterator[_Pipes]:
    opened = _Pipes()
    yield opened
    for fd in opened.fds:
        os.close(fd)


def _worker(pipes: _Pipes, process: Any = None) -> tuple[WorkerProc, int, int, int]:
    """A live worker as the supervisor sees it, on real pipes, with the other ends:
    (proc, what writes its outbox, what reads its inbox, what makes its sentinel ready)."""
    proc = WorkerProc(0)
    proc.process = process if process is not None else object()  # type: ignore[assignment]
    proc.alive = True
    proc.out_fd, outbox_writer = pipes.pipe()
    inbox_reader, proc.in_fd = pipes.pipe()
    proc.sentinel, dies = pipes.pipe()
    os.set_blocking(proc.in_fd, False)
    return proc, outbox_writer, inbox_reader, dies


def _read_some(fd: int) -> bool:
    try:
        return bool(os.read(fd, 1 << 16))
    except BlockingIOError:
        return False


def test_the_key_changes_exactly_when_a_watched_process_does(pipes: _Pipes) -> None:
    wake, _ = pipes.pipe()
    first, *_ = _worker(pipes)
    second, *_ = _worker(pipes)
    key = _poll.processes(wake, [first, second], [])
    assert _poll.processes(wake, [first, second], []) == key
    first.alive = False  # buried
    assert _poll.processes(wake, [first, second], []) != key
    first.alive = True
    first.process = object()  # type: ignore[assignment]  # replaced in its place
    assert _poll.processes(wake, [first, second], []) != key
    # A worker is not the same as a spare with the same process.
    assert _poll.processes(wake, [first], [second]) != _poll.processes(wake, [first, second], [])


def test_events_come_outbox_first_and_never_for_a_replaced_process(pipes: _Pipes) -> None:
    wake, wake_writer = pipes.pipe()
    proc, outbox_writer, _, dies = _worker(pipes)
    watch = _poll.Watch(_poll.processes(wake, [proc], []), [proc], [])
    os.write(dies, b"x")
    os.write(wake_writer, b"x")
    os.write(outbox_writer, b"x")
    readable, _ = watch.wait(None)
    events = list(watch.events(readable))
    assert events == [
        _poll.Event(_poll.OUTBOX, proc),
        _poll.Event(_poll.SENTINEL, proc),
        None,  # the wake-up pipe, last
    ]
    # The same fds, now another process's (a replacement that reused the numbers):
    # what the old poll saw is not acted on.
    proc.process = object()  # type: ignore[assignment]
    assert list(watch.events(readable)) == [None]


def test_an_inbox_is_polled_for_writing_only_while_a_write_is_pending(pipes: _Pipes) -> None:
    wake, _ = pipes.pipe()
    proc, _, inbox_reader, _ = _worker(pipes)
    watch = _poll.Watch(_poll.processes(wake, [proc], []), [proc], [])
    # Fill the inbox so that it is not writable, with more waiting in the buffer.
    while True:
        try:
            os.write(proc.in_fd, b"x" * 65536)
        except BlockingIOError:
            break
    proc.write_buffer += b"more"
    watch.watch_writes()
    assert watch.wait(0.0) == ([], frozenset())  # full: not writable yet
    os.set_blocking(inbox_reader, False)
    while _read_some(inbox_reader):  # the worker reads all of its inbox
        pass
    readable, writable = watch.wait(None)
    assert (readable, writable) == ([], frozenset([proc.in_fd]))
    proc.write_buffer.clear()  # flushed
    watch.watch_writes()
    # The pipe is writable, but nothing is pending: the poll does not wake for it
    # (it waits out its deadline instead of returning at once, for ever).
    deadline = time.monotonic() + 0.02
    assert watch.wait(deadline) == ([], frozenset())
    assert time.monotonic() >= deadline

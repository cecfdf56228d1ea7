"""A handshake between a test and the jobs it runs in worker processes.

The test listens on a Unix socket; a job connects and says who it is (a tag, its job
id and its worker's pid), then either waits for the test's "go" (:func:`arrive`,
:func:`arrive_sync`) or goes on at once (:func:`announce`). So the test knows for
certain that a job runs, where, and what it did before it arrived, and the job goes on
exactly when the test allows it. No sleeping, no polling of shared state.

Shared by the pool and fault suites (``tests/`` is on ``sys.path`` in the test process
and, through the fork server, in the workers).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from cancelpool import current_operation

T = TypeVar("T")

# Seconds. A backstop against a hung job or test, never a synchronization.
BACKSTOP = 60.0
_GO = b"g"


def _job_id() -> int:
    op = current_operation()
    if op is None:
        return -1
    while op.parent is not None:  # an operation nested in the job: its root is the job
        op = op.parent
    return int(op.context.id) if op.context.id.isdigit() else -1


@dataclass(frozen=True, eq=False)
class Arrival:
    """One job at the gate (compared by identity)."""

    tag: str
    job: int
    pid: int
    conn: socket.socket = field(repr=False)


class Gate:
    """A Unix socket that jobs report to; :meth:`release` lets waiting ones go on."""

    def __init__(self, backstop: float = BACKSTOP) -> None:
        # A short directory of our own: Unix socket paths are limited to ~107 bytes.
        self._dir = tempfile.mkdtemp(prefix="cpgate")
        self.path = os.path.join(self._dir, "s")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(512)
        self._server.settimeout(backstop)
        self.backstop = backstop
        self._waiting: list[Arrival] = []
        self.arrivals: list[Arrival] = []

    def wait(self, count: int = 1) -> list[Arrival]:
        """Block until ``count`` more jobs have arrived; return them in arrival order."""
        new: list[Arrival] = []
        for _ in range(count):
            try:
                conn, _addr = self._server.accept()
            except TimeoutError:
                raise AssertionError(
                    f"only {len(new)} of {count} jobs reached the gate within "
                    f"{self.backstop}s (backstop); arrived: {[a.tag for a in new]}"
                ) from None
            conn.settimeout(self.backstop)
            line = b""
            while not line.endswith(b"\n"):
                chunk = conn.recv(256)
                if not chunk:
                    conn.close()
                    raise AssertionError(f"a job hung up at the gate after {line!r}")
                line += chunk
            tag, job, pid = line.decode().split()
            arrival = Arrival(tag, int(job), int(pid), conn)
            self._waiting.append(arrival)
            new.append(arrival)
        self.arrivals.extend(new)
        return new

    async def wait_async(self, count: int = 1) -> list[Arrival]:
        """:meth:`wait` without blocking the event loop."""
        return await anyio.to_thread.run_sync(self.wait, count)

    def wait_tags(self, count: int) -> dict[str, Arrival]:
        """:meth:`wait` for ``count`` jobs with distinct tags; a dict by tag."""
        arrivals = self.wait(count)
        by_tag = {arrival.tag: arrival for arrival in arrivals}
        assert len(by_tag) == count, f"duplicate tags: {[a.tag for a in arrivals]}"
        return by_tag

    def release(self, *arrivals: Arrival) -> None:
        """Let the given jobs go on; without arguments, every job waiting so far."""
        chosen = list(arrivals) if arrivals else list(self._waiting)
        for arrival in chosen:
            if arrival not in self._waiting:
                continue
            self._waiting.remove(arrival)
            try:
                arrival.conn.sendall(_GO)
            except OSError:  # the job was cancelled and hung up: nothing to release
                pass
            arrival.conn.close()

    def close(self) -> None:
        """Release everyone and remove the socket."""
        self.release()
        self._server.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _hello(tag: str) -> bytes:
    return f"{tag} {_job_id()} {os.getpid()}\n".encode()


async def arrive(path: str, tag: str = "-") -> None:
    """Job side, async: report at the gate and wait for "go" (a cancellation point)."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(_hello(tag))
        await writer.drain()
        await reader.read(1)  # b"g", or b"" when the test closed the gate: same thing
    finally:
        writer.close()


def announce(path: str, tag: str = "-") -> None:
    """Job side, any context: report at the gate and go on at once."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(BACKSTOP)
        sock.connect(path)
        sock.sendall(_hello(tag))


async def announce_async(path: str, tag: str = "-") -> None:
    """:func:`announce` without blocking the worker's loop."""
    _reader, writer = await asyncio.open_unix_connection(path)
    writer.write(_hello(tag))
    await writer.drain()
    writer.close()


def arrive_sync(path: str, tag: str = "-") -> None:
    """Job side, blocking (sync jobs): report, then wait for "go" while polling the
    job's token (``token.check()`` raises once the job is cancelled)."""
    op = current_operation()
    assert op is not None, "arrive_sync() runs inside a pool job"
    token = op.token
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(_hello(tag))
        sock.settimeout(0.005)  # a token.check() loop that also notices "go"
        deadline = time.monotonic() + BACKSTOP
        while time.monotonic() < deadline:
            token.check()
            try:
                if sock.recv(1) in (_GO, b""):
                    return
            except TimeoutError:
                continue
        raise AssertionError("the test never released the gate (backstop)")


async def sleep_forever() -> None:
    """Wait until cancelled (backstop: BACKSTOP seconds, then fail loudly)."""
    await anyio.sleep(BACKSTOP)
    raise AssertionError(f"a job was never cancelled within {BACKSTOP}s (backstop)")


def start_running(
    pool: Any, gate: Gate, tag: str = "-", partial: Any = None, **options: Any
) -> Any:
    """Submit a ``_jobs.hold_running`` job and return its handle once the job is RUNNING
    in the supervisor's eyes and held at ``gate`` (``options`` go to ``submit``)."""
    from pool import _jobs  # tests/ is on sys.path

    handle = pool.submit(_jobs.hold_running, gate.path, tag, partial, **options)
    [ready] = gate.wait(1)
    assert ready.tag == f"{tag}-ready"
    reported = threading.Event()
    handle.on_progress(lambda job_id, message, meta: reported.set())
    gate.release(ready)
    assert reported.wait(BACKSTOP), f"job {tag} did not report within {BACKSTOP}s"
    [held] = gate.wait(1)
    assert held.tag == tag
    return handle


def wait_until(predicate: Callable[[], T | None], what: str, timeout: float = BACKSTOP) -> T:
    """Poll ``predicate`` until it returns something truthy (returned), with a deadline.

    For state the test cannot get a handshake for: what the supervisor thread has
    registered after a worker said something (a job's child is submitted
    asynchronously: the job goes on before the pool has registered the child).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within the {timeout}s backstop")
        time.sleep(0.001)  # a poll interval, not a synchronization

"""A handshake between a test and the jobs it runs in worker processes.

The test listens on a Unix socket; a job connects, says who it is (a tag and its
worker's pid) and then waits for the test to say "go". So the test knows for certain
that a job is running (and has done whatever it did before arriving), and the job goes
on exactly when the test allows it. No sleeping, no polling of shared state.

Test side: :class:`Gate`. Job side: :func:`arrive` (async), :func:`arrive_sync`
(blocking, for sync jobs in a worker thread; it polls the job's token while it waits)
and :func:`announce` (report and go on without waiting).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from cancelpool import current_operation

# Seconds. A backstop against a hung job or test, never a synchronization.
BACKSTOP = 60.0
_GO = b"g"


@dataclass(frozen=True, eq=False)
class Arrival:
    """One job at the gate (compared by identity: two jobs may share tag and pid)."""

    tag: str
    pid: int
    conn: socket.socket = field(repr=False)


class Gate:
    """A Unix socket that jobs report to; :meth:`release` lets them go on."""

    def __init__(self) -> None:
        # A short directory of our own: Unix socket paths are limited to ~107 bytes.
        self._dir = tempfile.mkdtemp(prefix="cpgate")
        self.path = os.path.join(self._dir, "s")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(128)
        self._server.settimeout(BACKSTOP)
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
                    f"only {len(new)} of {count} jobs reached the gate within {BACKSTOP}s"
                ) from None
            conn.settimeout(BACKSTOP)
            line = b""
            while not line.endswith(b"\n"):
                chunk = conn.recv(256)
                if not chunk:
                    raise AssertionError(f"a job hung up at the gate after {line!r}")
                line += chunk
            tag, pid = line.decode().split()
            arrival = Arrival(tag, int(pid), conn)
            self._waiting.append(arrival)
            new.append(arrival)
        self.arrivals.extend(new)
        return new

    async def wait_async(self, count: int = 1) -> list[Arrival]:
        """:meth:`wait` without blocking the event loop."""
        return await anyio.to_thread.run_sync(self.wait, count)

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


async def arrive(path: str, tag: str = "-") -> None:
    """Job side, async: report at the gate and wait for "go" (a cancellation point).

    Workers run asyncio, so this uses asyncio's streams (their reads cancel cleanly).
    """
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(f"{tag} {os.getpid()}\n".encode())
        await writer.drain()
        await reader.read(1)  # b"g", or b"" when the test closed the gate: same thing
    finally:
        writer.close()


def announce(path: str, tag: str = "-") -> None:
    """Job side, any context: report at the gate and go on at once (no "go" awaited)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(BACKSTOP)
        sock.connect(path)
        sock.sendall(f"{tag} {os.getpid()}\n".encode())


def arrive_sync(path: str, tag: str = "-") -> None:
    """Job side, blocking: report at the gate, then wait for "go" while polling the
    job's cancellation token (``token.check()`` raises when the job is cancelled)."""
    op = current_operation()
    assert op is not None, "arrive_sync() runs inside a pool job"
    token = op.token
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(f"{tag} {os.getpid()}\n".encode())
        # Short receive timeouts make this a token.check() loop that also notices "go".
        sock.settimeout(0.005)
        deadline = time.monotonic() + BACKSTOP
        while time.monotonic() < deadline:
            token.check()
            try:
                if sock.recv(1) in (_GO, b""):
                    return
            except TimeoutError:
                continue
        raise AssertionError("the test never released the gate")


def start_running(
    pool: Any, gate: Gate, tag: str = "-", partial: Any = None, **options: Any
) -> Any:
    """Submit a ``_jobs.hold_running`` job and return its handle once the job is RUNNING
    in the supervisor's eyes and held at ``gate`` (``options`` go to ``submit``)."""
    import threading

    from . import _jobs

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

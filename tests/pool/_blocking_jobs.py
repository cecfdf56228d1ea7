"""Jobs that block their worker's event loop, for the watchdog tests: importable, so
that workers can unpickle them."""

from __future__ import annotations

import os
import socket
import time

import anyio

from _handshake import BACKSTOP
from cancelpool import current_operation

#: Seconds of pure computing between two looks at the socket. Well above the
#: interpreter's switch interval (5 ms): a job that releases the GIL every few
#: microseconds (a tight loop of system calls) starves every other thread of its
#: process, the worker's watchdog included (CPython's GIL convoy, a known limit said in
#: docs/pool.md); this spinner stands for a job that computes.
COMPUTE_ROUND = 0.02


def _compute_until_go(sock: socket.socket) -> str:
    """CPU work with no await, until "go" arrives: the frame the watchdog's stack must
    name (the socket is read without blocking between two rounds of work)."""
    sock.setblocking(False)
    deadline = time.monotonic() + BACKSTOP
    while time.monotonic() < deadline:
        round_ends = time.monotonic() + COMPUTE_ROUND
        while time.monotonic() < round_ends:
            sum(range(2_000))
        try:
            if sock.recv(1) in (b"g", b""):
                return "released"
        except BlockingIOError:
            continue
    raise AssertionError(f"the spinner was never released within {BACKSTOP}s (backstop)")


async def spin_until_released(gate: str, tag: str = "spinner") -> str:
    """An async function that computes without ever awaiting, so that it holds its
    worker's event loop, until the test releases it at the gate."""
    op = current_operation()
    assert op is not None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(BACKSTOP)
        sock.connect(gate)
        sock.sendall(f"{tag} {op.context.id} {os.getpid()}\n".encode())
        return _compute_until_go(sock)


async def spin_in_a_subtask(gate: str) -> str:
    """The spinning happens in a task the job started (not the job's own task)."""
    results: list[str] = []

    async def spin() -> None:
        results.append(await spin_until_released(gate, "subtask"))

    async with anyio.create_task_group() as group:
        group.start_soon(spin)
    return results[0]

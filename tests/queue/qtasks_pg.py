"""Tasks of the PostgreSQL scale-out tests (importable by the servers: PYTHONPATH)."""

from __future__ import annotations

import os

import anyio

from cancelpool import current_operation


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())  # one write with O_APPEND: atomic
    finally:
        os.close(fd)


async def run_once(path: str, tag: str) -> str:
    """Append ``tag`` to ``path`` at start: a job started twice shows up twice."""
    _append(path, tag)
    return tag


async def hold(path: str, tag: str) -> str:
    """Say it started (``tag`` in ``path``), then wait until cancelled."""
    op = current_operation()
    assert op is not None
    op.context.partial_result = {"tag": tag}
    await op.report_progress("holding", {"partial_result": {"tag": tag}})
    _append(path, tag)
    await anyio.sleep_forever()
    return tag


async def hold_until(path: str, tag: str, release: str) -> str:
    """Say it started, then finish once the file ``release`` exists."""
    _append(path, tag)
    while not os.path.exists(release):
        await anyio.sleep(0.01)  # the test creates the file: the handshake
    return tag


async def tick(path: str, tag: str, seconds: float) -> str:
    """A short job: ``start tag pid`` in ``path``, ``seconds`` of awaiting (cancellable),
    then ``end tag``: a job started twice, or finished after it saw its cancellation,
    shows in the file."""
    _append(path, f"start {tag} {os.getpid()}")
    await anyio.sleep(seconds)
    _append(path, f"end {tag}")
    return tag

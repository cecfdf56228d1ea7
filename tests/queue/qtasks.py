"""Tasks the queue tests run (importable by the servers they start: PYTHONPATH)."""

from __future__ import annotations

import os
import time
from typing import Any

import anyio

from cancelpool import current_operation


def record(path: str, tag: str) -> str:
    """Append ``tag`` to ``path`` (one line, O_APPEND: atomic), to count real runs."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{tag}\n".encode())
    finally:
        os.close(fd)
    return tag


async def checkpoint_then_wait(path: str) -> str:
    """Report progress with a partial result, then wait until ``path`` exists."""
    op = current_operation()
    assert op is not None
    op.context.partial_result = {"stage": 1}
    await op.report_progress(
        "stage 1 done", {"done": 1, "total": 2, "partial_result": {"stage": 1}}
    )
    while not os.path.exists(path):
        await anyio.sleep(0.01)  # the test creates the file; polling it is the handshake
    return "finished"


async def not_json() -> Any:
    return object()


async def kwargs_named_like_options(name: str, timeout: int) -> list[Any]:
    return [name, timeout]


def blocking_sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


NOT_CALLABLE = 42


def count_sync(n: int) -> int:
    """A plain function: reports progress from its worker thread with report_progress_sync."""
    op = current_operation()
    assert op is not None
    for i in range(1, n + 1):
        op.token.check()
        op.report_progress_sync(f"{i}/{n}", {"done": i, "total": n})
    return n


def failing_init() -> None:
    """A --worker-init that fails in every worker."""
    raise RuntimeError("the worker's setup failed")

"""Tasks of the output, stop and forced-stop tests (importable by the servers: PYTHONPATH)."""

from __future__ import annotations

import os
import time

import anyio

from cancelpool import current_operation

#: What a hostile job writes wherever it can: it retitles the terminal and clears the
#: screen, forges a line of ``watch`` output, sends a C1 CSI, reverses the text.
EVIL = "\x1b]0;PWNED\x07\x1b[2J\nFORGED 99 completed\x9b31m\u202eoknil\u2028end"


async def shout() -> None:
    """Reports EVIL as its progress message and metadata, then fails with it."""
    op = current_operation()
    assert op is not None
    await op.report_progress(EVIL, {"note": EVIL, "done": 1, "total": 2})
    raise ValueError(EVIL)


async def shout_result() -> list[str]:
    return [EVIL]


async def progress_then_wait(path: str) -> str:
    """Reports one step (with a partial result), then waits until ``path`` exists."""
    op = current_operation()
    assert op is not None
    op.context.partial_result = {"steps": 1}
    await op.report_progress("step 1", {"done": 1, "total": 4, "partial_result": {"steps": 1}})
    while not os.path.exists(path):
        await anyio.sleep(0.01)  # the test creates the file; polling it is the handshake
    return "done"


async def quiet_wait(path: str) -> str:
    """Runs without reporting anything until ``path`` exists."""
    while not os.path.exists(path):
        await anyio.sleep(0.01)  # the test creates the file; polling it is the handshake
    return "done"


async def block_loop(path: str) -> str:
    """An async job that blocks its worker's event loop (time.sleep, no await) until
    ``path`` exists: the kind of job whose neighbours cannot hear their cancels."""
    fd = os.open(path + ".blocking", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    while not os.path.exists(path):
        time.sleep(0.01)  # deliberately blocking the loop
    return "unblocked"


async def polite(ready: str) -> str:
    """Checkpoints a partial result, says it is running, then awaits its cancel."""
    op = current_operation()
    assert op is not None
    op.context.partial_result = {"polite": True}
    await op.report_progress("polite", {"partial_result": {"polite": True}})
    fd = os.open(ready, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    while True:
        await anyio.sleep(0.01)  # a checkpoint: its cancel lands here


def polite_sync(ready: str) -> str:
    """A plain function that checks its token in a loop (it runs in a worker thread)."""
    op = current_operation()
    assert op is not None
    op.context.partial_result = {"polite_sync": True}
    op.report_progress_sync("polite", {"partial_result": {"polite_sync": True}})
    fd = os.open(ready, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    while True:
        op.token.check()
        time.sleep(0.005)  # a busy loop that checks its token


def stubborn_sync(ready: str) -> str:
    """A plain function that never checks its token."""
    fd = os.open(ready, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    while True:
        time.sleep(0.05)  # ignores every cancel


async def counted(steps: int) -> int:
    """Reports ``steps`` steps of progress (done/total), then returns ``steps``."""
    op = current_operation()
    assert op is not None
    for step in range(1, steps + 1):
        await op.report_progress(f"step {step}", {"done": step, "total": steps})
    return steps


async def refuse() -> None:
    raise ValueError("no")


async def environment_of(name: str) -> str | None:
    """The worker's value of the environment variable ``name``."""
    return os.environ.get(name)

"""Job functions run by the peer pools (and free for ``_ours.py`` to reuse).

They live in their own importable module so every start method (fork, spawn, loky's,
anyio's ``python -m`` workers) can unpickle them by name. Jobs that must be seen
starting announce themselves through a file (the path is a plain ``str`` argument): pool
APIs refuse ``multiprocessing`` queues and events as job arguments, a file works for all.
"""

from __future__ import annotations

import os
import time

# How often a blocked job looks for its release file. Coarse enough to cost nothing,
# fine enough that releasing blockers does not dominate a queued-cancel round.
_RELEASE_POLL_S = 0.002
# Backstop: a blocker never waits forever, even if the harness died before releasing it.
_RELEASE_BACKSTOP_S = 60.0


def inc(x: int) -> int:
    """The trivial job."""
    return x + 1


async def ainc(x: int) -> int:
    """The trivial job, as a coroutine (aiomultiprocess runs coroutines)."""
    return x + 1


def started_ns() -> int:
    """Return when the job started, on the clock shared by all processes."""
    return time.perf_counter_ns()


def nap(seconds: float) -> None:
    time.sleep(seconds)


def sleep_marked(start_path: str, seconds: float) -> None:
    """Announce the start (the file holds this worker's pid), then sleep."""
    announce(start_path)
    time.sleep(seconds)


def block_until(start_path: str, release_path: str) -> None:
    """Announce the start, then wait until *release_path* exists."""
    announce(start_path)
    deadline = time.monotonic() + _RELEASE_BACKSTOP_S
    while not os.path.exists(release_path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"blocker never released: {release_path}")
        time.sleep(_RELEASE_POLL_S)


def append_marker(path: str, i: int) -> int:
    """Record that job *i* ran (O_APPEND: concurrent small writes never interleave)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
    return i


def announce(path: str) -> None:
    """Create *path* holding this process's pid, atomically (readers never see it empty)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, path)


# --------------------------------------------------------------- cancelpool's jobs (_ours.py)
# Async jobs for CancelPool workers. cancelpool and anyio are imported inside the
# functions so that the peer pools never pay for them.


async def astarted_ns() -> int:
    """Return when the job started (async: runs on a CancelPool worker's event loop)."""
    return time.perf_counter_ns()


async def cancel_probe(seconds: float) -> None:
    """Report "ready" (with the time) right before awaiting; record when the cancel lands.

    The progress event tells the caller the job is running and about to block in
    ``anyio.sleep``; the flush that carries it happens after the job has suspended. When
    the cancellation arrives, the job records ``perf_counter_ns()`` as its partial
    result, which comes back in ``JobCancelled.partial_result``.
    """
    import anyio

    from cancelpool import current_operation

    op = current_operation()
    assert op is not None
    await op.report_progress("ready", {"t": time.perf_counter_ns()})
    try:
        await anyio.sleep(seconds)
    except BaseException:
        op.context.partial_result = time.perf_counter_ns()
        raise


async def block_loop(start_path: str, release_path: str) -> None:
    """Announce the start, then block the worker's whole event loop until released.

    Jobs sent to this worker meanwhile stay unread in its pipe: dispatched to the
    worker, not started. Cancelling them then must still keep them from starting.
    """
    block_until(start_path, release_path)


async def progress_burst(n: int) -> int:
    """Report *n* progress events ``{"i": i}`` (the first also carries ``"t"``, when)."""
    from cancelpool import current_operation

    op = current_operation()
    assert op is not None
    await op.report_progress("x", {"i": 0, "t": time.perf_counter_ns()})
    for i in range(1, n):
        await op.report_progress("x", {"i": i})
    return n


async def progress_stream(n: int) -> int:
    """Like :func:`progress_burst`, but the job yields to its loop after every report
    (as a job doing I/O between reports would), so events leave the worker as they go."""
    import anyio.lowlevel

    from cancelpool import current_operation

    op = current_operation()
    assert op is not None
    await op.report_progress("x", {"i": 0, "t": time.perf_counter_ns()})
    for i in range(1, n):
        await anyio.lowlevel.checkpoint()
        await op.report_progress("x", {"i": i})
    return n

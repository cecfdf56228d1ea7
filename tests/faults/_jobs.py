"""Job functions for the fault tests: importable, so that workers can unpickle them.

Under every start method a worker imports this module by name (``faults._jobs``):
pytest puts ``tests/`` on ``sys.path`` before any pool starts, and the subprocess
scenarios put it there themselves. Sleeping inside a job stands for work; it never
orders a test against a job (the gate in ``_gate.py`` does that).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread

from _handshake import BACKSTOP, announce, announce_async, arrive, arrive_sync, sleep_forever
from cancelpool import current_operation, current_pool

# When a worker imported this module: a fresh worker does so to unpickle its first job.
LOADED_AT = time.monotonic()
# Memory a job keeps alive in its worker (``max_memory_per_worker`` tests).
_HOARD: list[bytes] = []


def _op() -> Any:
    op = current_operation()
    assert op is not None, "pool jobs run inside their Cancelable"
    return op


def _id() -> int:
    return int(_op().context.id)


# -- plain ---------------------------------------------------------------------------------
async def where() -> int:
    """The pid of the worker the job runs in."""
    return os.getpid()


def where_sync() -> int:
    return os.getpid()


async def echo(value: Any) -> Any:
    return value


async def nap(seconds: float, value: Any = None) -> Any:
    await anyio.sleep(seconds)
    return value


# -- families (cascades) ----------------------------------------------------------------------
async def family(
    gate: str,
    children: int = 2,
    grandchildren: int = 1,
    wait_for_children: bool = True,
) -> str:
    """A root job: ``children`` children, each with ``grandchildren`` children.

    Every member announces itself at the gate (tags ``root``, ``child``, ``grand``)
    and then waits. The root either awaits its children (``wait_for_children``) or
    waits at the gate for "go" and then returns while they still run.
    """
    pool = current_pool()
    kids = [pool.submit(branch, gate, grandchildren, name="child") for _ in range(children)]
    if wait_for_children:
        await announce_async(gate, "root")
        for kid in kids:
            await kid
        return "children ended"
    await arrive(gate, "root")
    return "returned"


async def branch(gate: str, grandchildren: int, wait_for_children: bool = True) -> str:
    """A child of :func:`family`: starts its own children, announces, then awaits them
    (``wait_for_children``) or just waits to be cancelled."""
    pool = current_pool()
    kids = [pool.submit(leaf, gate, name="grand") for _ in range(grandchildren)]
    await announce_async(gate, "child")
    if wait_for_children:
        for kid in kids:
            await kid
    await sleep_forever()
    return "unreachable"


async def leaf(gate: str) -> str:
    """A grandchild: records a partial result, announces, waits to be cancelled."""
    _op().context.partial_result = {"leaf": _id()}
    await announce_async(gate, "grand")
    await sleep_forever()
    return "unreachable"


async def lone_child_with_timeout(
    gate: str, timeout: float, wait_for_children: bool = False
) -> dict[str, Any]:
    """A parent whose only child (with one grandchild) times out: the parent sees the
    child's cancellation and goes on, waiting at the gate afterwards."""
    child = current_pool().submit(branch, gate, 1, wait_for_children, name="child", timeout=timeout)
    await announce_async(gate, "root")
    try:
        await child
    except Exception as exc:
        outcome = {"type": type(exc).__name__, "reason": str(getattr(exc, "reason", ""))}
    else:  # pragma: no cover - the child never returns
        outcome = {"type": "returned"}
    await arrive(gate, "root-after")
    return outcome


async def child_of_caller(gate: str) -> str:
    """A job submitted with ``parent=`` from the caller."""
    await announce_async(gate, "adopted")
    await sleep_forever()
    return "unreachable"


async def reporting_parent(gate: str, grandchild: bool) -> list[list[Any]]:
    """Collects what its own ``on_progress`` callbacks hear while a child (and its
    child) report; returns ``[op_id, message, metadata]`` for each report heard."""
    heard: list[list[Any]] = []
    _op().on_progress(lambda op_id, message, meta: heard.append([op_id, message, meta]))
    child = current_pool().submit(reporting_child, grandchild, name="reporter")
    await child
    # The supervisor forwards reports in the order it got them, and a grandchild's
    # report reaches it before the child's outcome: once the child has returned,
    # everything has arrived. The gate orders the test's own look at the handle.
    await arrive(gate, "parent-done")
    return heard


async def reporting_child(grandchild: bool) -> int:
    op = _op()
    await op.report_progress("child says", {"from": "child", "job": _id()})
    if grandchild:
        await current_pool().submit(reporting_grandchild, name="grand-reporter")
    return _id()


async def reporting_grandchild() -> int:
    await _op().report_progress("grandchild says", {"from": "grand", "job": _id()})
    return _id()


# -- stubborn jobs (forced stop) -------------------------------------------------------------
async def swallow(gate: str, steps: int = 1) -> str:
    """Records ``steps`` partial results, each with a progress report (which
    checkpoints it), announces, then swallows every cancellation it gets."""
    op = _op()
    for i in range(steps):
        op.context.partial_result = {"step": i}
        await op.report_progress("step", {"i": i})
    await announce_async(gate, "swallow")
    swallowed = 0
    deadline = time.monotonic() + BACKSTOP
    while time.monotonic() < deadline:
        try:
            await asyncio.sleep(BACKSTOP)
        except asyncio.CancelledError:
            swallowed += 1  # and carry on: the worker must be killed to stop this job
    return f"survived (swallowed {swallowed} cancellations)"


def sync_stubborn(gate: str, partial: Any) -> str:
    """A plain function that never looks at its token: only a forced stop ends it."""
    op = _op()
    op.context.partial_result = partial
    # A progress report checkpoints the partial result; from a thread, through anyio.
    anyio.from_thread.run(op.report_progress, "checkpoint")
    announce(gate, "sync-stubborn")
    deadline = time.monotonic() + BACKSTOP
    while time.monotonic() < deadline:
        time.sleep(0.01)  # stands for uninterruptible work
    return "survived"


def sync_hold(gate: str, tag: str) -> int:
    """A plain function: waits at the gate (polling its token); returns its pid."""
    arrive_sync(gate, tag)
    return os.getpid()


async def hold(gate: str, tag: str, partial: Any = None) -> int:
    """Records (and checkpoints) ``partial``, waits at the gate; returns its pid."""
    op = _op()
    if partial is not None:
        op.context.partial_result = partial
        await op.report_progress("checkpoint")
    await arrive(gate, tag)
    return os.getpid()


async def hold_forever(gate: str, tag: str, partial: Any = None) -> int:
    """Like :func:`hold`, but announces and then waits until cancelled."""
    op = _op()
    if partial is not None:
        op.context.partial_result = partial
        await op.report_progress("checkpoint")
    await announce_async(gate, tag)
    await sleep_forever()
    return -1


def spin_sync(gate: str, tag: str) -> int:
    """A plain function in a CPU loop that stops only at ``token.check()``."""
    op = _op()
    token = op.token
    count = 0
    deadline = time.monotonic() + BACKSTOP
    while time.monotonic() < deadline:
        token.check()
        count += 1
        if count % 1000 == 1:
            op.context.partial_result = {"spins": count}
            if count == 1:
                announce(gate, tag)
    return -1


async def spin_async(gate: str, tag: str, seconds: float = BACKSTOP) -> int:
    """An async job that never awaits for ``seconds`` (it blocks its worker's loop)."""
    announce(gate, tag)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return -1


# -- crashes --------------------------------------------------------------------------------
async def die(gate: str, how: str, partial: Any = None) -> str:
    """Checkpoints ``partial``, waits at the gate, then kills its own worker ``how``."""
    op = _op()
    if partial is not None:
        op.context.partial_result = partial
        await op.report_progress("checkpoint")
    await arrive(gate, f"die-{how}")
    _die(how)
    return "survived"


def _die(how: str) -> None:
    if how == "exit":
        os._exit(3)
    elif how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "segfault":
        ctypes.string_at(0)
    else:  # pragma: no cover
        raise ValueError(how)


async def crash_until(counter: str, crashes: int) -> int:
    """Counts its attempts in a file; kills its worker on the first ``crashes``."""
    path = Path(counter)
    attempt = int(path.read_text() or 0) + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt <= crashes:
        os._exit(3)
    return attempt


async def hoard(megabytes: int, at_least: float = 0.0) -> int:
    """Keeps ``megabytes`` of touched memory alive in the worker, taking at least
    ``at_least`` seconds in all; returns the worker's pid."""
    deadline = time.monotonic() + at_least
    _HOARD.append(b"\x01" * (megabytes << 20))
    await anyio.sleep(max(0.0, deadline - time.monotonic()))
    return os.getpid()


def worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate()]


async def hold_tag(gate: str, tag: str) -> str:
    """Waits at the gate; returns its own tag (tells children apart by result)."""
    await arrive(gate, tag)
    return tag


async def parent_of(gate: str, tag: str) -> Any:
    """Starts one :func:`hold_tag` child, announces, returns the child's result."""
    child = current_pool().submit(hold_tag, gate, tag, name=f"child-{tag}")
    await announce_async(gate, f"parent-{tag}")
    return await child


async def report(message: str, metadata: Any = None) -> str:
    """Reports one progress event, then returns."""
    await _op().report_progress(message, metadata)
    return "reported"


async def fail_with(message: str) -> None:
    raise ValueError(message)


async def return_value(value: Any) -> Any:
    return value


async def child_named(name: str) -> Any:
    """Submits a child with an odd ``name``; returns the child's outcome."""
    try:
        child = current_pool().submit(echo, "child ran", name=name)
    except Exception as exc:
        return ["refused", type(exc).__name__, str(exc)]
    return ["ran", await child]


# -- chaos ------------------------------------------------------------------------------------
async def chaos(
    value: int,
    duration: float,
    children: int = 0,
    child_duration: float = 0.0,
    wait_for_children: bool = False,
) -> int:
    """A job of the fault-injection run: reports, starts children, sleeps, returns.

    Children it does not await and that still run when it returns are cancelled
    (children never outlive their parent); awaited ones pass their failure on to it.
    """
    op = _op()
    op.context.partial_result = {"value": value}
    await op.report_progress("start", {"value": value})
    pool = current_pool()
    kids = [pool.submit(chaos_leaf, child_duration, name="chaos-child") for _ in range(children)]
    await anyio.sleep(duration)
    if wait_for_children:
        for kid in kids:
            await kid
    return value


async def chaos_leaf(duration: float) -> float:
    await anyio.sleep(duration)
    return duration


def chaos_sync(value: int, duration: float) -> int:
    """A plain function that polls its token while it works."""
    token = _op().token
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        token.check()
        time.sleep(0.001)
    return value


async def chaos_stubborn(value: int) -> int:
    """Swallows every cancellation: only a forced stop (or a worker's death) ends it."""
    op = _op()
    op.context.partial_result = {"value": value}
    await op.report_progress("stubborn")
    deadline = time.monotonic() + BACKSTOP
    while time.monotonic() < deadline:
        try:
            await asyncio.sleep(BACKSTOP)
        except asyncio.CancelledError:
            pass
    return value


async def child_after_gate(gate: str) -> Any:
    """Waits at the gate, then starts one child and returns its result."""
    await arrive(gate, "parent")
    return await current_pool().submit(echo, "child ran", name="late-child")


# -- bad input ---------------------------------------------------------------------------------
class Opaque:
    """Picklable, but not progress metadata msgpack can encode."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque)

    __hash__ = object.__hash__


def _refuse(message: str) -> None:
    raise ValueError(message)


class RefusesToUnpickle:
    """Pickles fine; unpickling it raises (in the worker, or back in the caller)."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, (self.message,))


class RefusesToPickle:
    """``__reduce__`` raises ``error(message)``."""

    def __init__(self, error: type[BaseException], message: str) -> None:
        self.error = error
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        raise self.error(self.message)


async def return_refusing_to_unpickle(message: str) -> Any:
    return RefusesToUnpickle(message)


async def return_lock() -> Any:
    return threading.Lock()


async def submit_child_with_unpicklable_argument(message: str) -> list[str]:
    """Tries ``current_pool().submit`` with an argument whose ``__reduce__`` raises."""
    try:
        current_pool().submit(echo, RefusesToPickle(ValueError, message))
    except ValueError as exc:  # the error __reduce__ raised keeps its type
        return [type(exc).__name__, str(exc), repr(exc.__cause__)]
    return ["submitted"]


async def sized(size: int) -> bytes:
    return b"r" * size


async def report_big(size: int) -> int:
    await _op().report_progress("big", {"blob": "m" * size})
    return size


# -- probes (benchmarks/measure_issue4.py) ----------------------------------------------
async def probe(gate: str, tag: str, depth: int = 0, hold_first: bool = False) -> None:
    """Waits to be cancelled and records, as its partial result, the monotonic time at
    which it saw the cancellation (the clock is shared by every process of the machine).

    With ``depth`` > 0 it first starts a child probe (tags ``child``, then ``grand``);
    with ``hold_first`` it waits at the gate for "go" before doing so.
    """
    op = _op()
    if hold_first:
        await arrive(gate, f"{tag}-ready")
    if depth:
        current_pool().submit(probe, gate, "child" if tag == "root" else "grand", depth - 1)
    try:
        await announce_async(gate, tag)
        await sleep_forever()
    except BaseException:
        op.context.partial_result = time.monotonic()
        raise


async def started_at() -> tuple[float, float]:
    """When this module was loaded in the worker, and when the job runs (monotonic)."""
    return LOADED_AT, time.monotonic()

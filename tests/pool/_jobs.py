"""Job functions for the pool tests: importable, so that workers can unpickle them.

Sleeping inside a job stands for work; it never orders the test against the job (the
gate in ``_gate.py`` does that).
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import anyio

from _handshake import BACKSTOP, announce, arrive, arrive_sync
from cancelpool import current_operation


def _op() -> Any:
    op = current_operation()
    assert op is not None, "pool jobs run inside their Cancelable"
    return op


class JobError(Exception):
    """A job's own exception type, which must arrive as itself in the caller."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.code = code


class UnpicklableError(Exception):
    """An exception that carries something pickle refuses."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


# -- plain results ------------------------------------------------------------------------
async def add(a: int, b: int) -> int:
    return a + b


def add_sync(a: int, b: int) -> int:
    return a + b


async def echo(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def echo_sync(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


async def square(x: int) -> int:
    return x * x


async def where() -> dict[str, Any]:
    """Facts about the worker the job runs in."""
    op = _op()
    return {
        "pid": os.getpid(),
        "name": op.name,
        "thread": threading.current_thread().name,
        "main_thread": threading.current_thread() is threading.main_thread(),
    }


async def loop_kind() -> tuple[str, str]:
    """The worker's event loop class and its selector's class."""
    import asyncio

    loop = asyncio.get_running_loop()
    return type(loop).__name__, type(getattr(loop, "_selector", None)).__name__


async def declared_library(in_child_task: bool) -> str | None:
    """What sniffio's context variable says in a job (or a task the job starts)."""
    import asyncio

    import sniffio

    if in_child_task:
        return await asyncio.create_task(declared_library(False))
    return sniffio.current_async_library_cvar.get()


def where_sync() -> dict[str, Any]:
    op = _op()
    return {
        "pid": os.getpid(),
        "name": op.name,
        "main_thread": threading.current_thread() is threading.main_thread(),
    }


async def nap(seconds: float, value: Any = None) -> Any:
    await anyio.sleep(seconds)
    return value


async def touch(path: str, value: Any = "ran") -> Any:
    """Leave a side effect that proves the job ran."""
    Path(path).write_text(str(value))
    return value


# -- failures -----------------------------------------------------------------------------
def _deep_failure(message: str, code: int) -> None:
    raise JobError(message, code)


async def fail(message: str, code: int = 7) -> None:
    await anyio.lowlevel.checkpoint()
    _deep_failure(message, code)


def fail_sync(message: str, code: int = 7) -> None:
    _deep_failure(message, code)


async def fail_unpicklable(message: str) -> None:
    raise UnpicklableError(message)


async def unpicklable_result() -> Any:
    return threading.Lock()


async def bad_progress_then_wait() -> str:
    """Reports metadata msgpack cannot encode, then would wait a long time."""
    await _op().report_progress("bad", {"payload": object()})
    await anyio.sleep(BACKSTOP)
    return "not failed"


async def bad_progress_then_return() -> str:
    """Reports metadata msgpack cannot encode, then returns at once."""
    await _op().report_progress("bad", {"payload": {1, 2, 3}.__iter__()})
    return "not failed"


async def kill_own_worker() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def signal_own_worker(signum: int) -> int:
    """Send ``signum`` to this job's worker (delivered before ``kill`` returns); its pid."""
    os.kill(os.getpid(), signum)
    return os.getpid()


def ignored_signals_of_a_subprocess() -> int:
    """The SigIgn mask of a program this job runs (a bit per signal, bit 0 is signal 1)."""
    status = subprocess.run(
        ["cat", "/proc/self/status"], check=True, capture_output=True, text=True
    ).stdout
    (line,) = [line for line in status.splitlines() if line.startswith("SigIgn:")]
    return int(line.split()[1], 16)


def sigterm_a_forked_child() -> int:
    """Fork (without exec) a child that waits, SIGTERM it once it runs; its exit status."""
    ready_r, ready_w = os.pipe()
    block_r, block_w = os.pipe()
    child = os.fork()
    if child == 0:  # the child: say it runs, then wait for the signal
        os.write(ready_w, b"r")
        os.read(block_r, 1)  # nobody writes: blocks until the signal
        os._exit(0)
    try:
        os.read(ready_r, 1)
        os.kill(child, signal.SIGTERM)
        _pid, status = os.waitpid(child, 0)
    finally:
        for fd in (ready_r, ready_w, block_r, block_w):
            os.close(fd)
    return status


# -- jobs that wait at the gate -------------------------------------------------------------
async def hold(gate: str, tag: str = "-", partial: Any = None, marker: str | None = None) -> str:
    """Record ``partial``, leave ``marker``, wait at the gate; returns "released"."""
    if marker is not None:
        Path(marker).write_text(tag)
    if partial is not None:
        _op().context.partial_result = partial
    await arrive(gate, tag)
    return "released"


async def hold_running(gate: str, tag: str = "-", partial: Any = None) -> str:
    """Two visits to the gate with a progress report between them.

    The first visit lets the test attach ``on_progress`` before anything is reported;
    the report ("running") then reaches the supervisor after the job's Started message,
    so once the test has seen it the job's status is RUNNING; the second visit holds
    the job until the test releases it (or cancels it).
    """
    op = _op()
    if partial is not None:
        op.context.partial_result = partial
    await arrive(gate, f"{tag}-ready")
    await op.report_progress("running", {"tag": tag})
    await arrive(gate, tag)
    return "released"


def hold_sync(gate: str, tag: str = "-", partial: Any = None) -> str:
    """A sync job in a worker thread: wait at the gate while polling ``token.check()``."""
    if partial is not None:
        _op().context.partial_result = partial
    arrive_sync(gate, tag)
    return "released"


async def steps(gate: str, count: int) -> int:
    """Wait at the gate, then report ``count`` progress events and return ``count``."""
    await arrive(gate)
    op = _op()
    for i in range(count):
        op.context.partial_result = i
        await op.report_progress(f"step {i}", {"i": i, "of": count, "items": [i, str(i)]})
    return count


async def ticker(interval: float) -> int:
    """Report progress every ``interval`` seconds until cancelled (backstop: BACKSTOP)."""
    op = _op()
    deadline = time.monotonic() + BACKSTOP
    i = 0
    while time.monotonic() < deadline:
        op.context.partial_result = {"ticks": i}
        await op.report_progress("tick", {"i": i})
        i += 1
        await anyio.sleep(interval)
    return -1


def spin(gate: str | None = None, limit: float = BACKSTOP) -> int:
    """A sync CPU-style loop that only stops through ``token.check()`` (or at ``limit``,
    returning -1). Announces itself at ``gate`` once its first partial result is set."""
    op = _op()
    token = op.token
    count = 0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        token.check()
        count += 1
        if count % 1000 == 1:
            op.context.partial_result = count
            if count == 1 and gate is not None:
                announce(gate)
    return -1


async def spin_async(gate: str | None = None, limit: float = BACKSTOP) -> int:
    """An async job that never awaits: only ``token.check()`` can stop it."""
    return spin(gate, limit)


async def stubborn(gate: str, partial: Any) -> str:
    """Checkpoints ``partial`` (a progress report sends it), then waits at the gate
    shielded from cancellation: only a forced stop (killing the worker) ends it."""
    op = _op()
    op.context.partial_result = partial
    await op.report_progress("checkpoint")
    with anyio.CancelScope(shield=True):
        await arrive(gate, "stubborn")
    return "released"


async def block_loop(seconds: float) -> str:
    """Blocks its worker's event loop (no await, no token check): only the supervisor's
    timeout backstop and a forced stop can end it early."""
    time.sleep(seconds)
    return "blocked to the end"


async def block_loop_after_await(seconds: float) -> str:
    """Like :func:`block_loop`, after one await (its worker has announced it by then)."""
    await anyio.sleep(0)
    time.sleep(seconds)
    return "blocked to the end"


# -- regressions (test_pool_regressions.py) -----------------------------------------------
async def exit_at_gate(gate: str, tag: str = "-", code: int = 3) -> None:
    """Wait at the gate, then end the worker process on the spot (no cleanup)."""
    await arrive(gate, tag)
    os._exit(code)


async def die_once_then_finish(marker: str, seconds: float) -> str:
    """First attempt (``marker`` absent): write the start time to ``marker``, work for
    ``seconds``, then kill its own worker. Later attempts: write their start time to
    ``marker + ".again"``, work for ``seconds`` and return "second attempt"."""
    first = not Path(marker).exists()
    Path(marker if first else marker + ".again").write_text(repr(time.time()))
    await anyio.sleep(seconds)
    if first:
        os.kill(os.getpid(), signal.SIGKILL)
    return "second attempt"


def _refuse_unpickling() -> None:
    raise RuntimeError("this object refuses to be unpickled")


class Unreadable:
    """Pickles fine; unpickling it raises (its ``__reduce__`` names a raising function)."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _refuse_unpickling, ()


async def unreadable_result() -> Unreadable:
    return Unreadable()


async def await_unreadable_child() -> str:
    """Submit a child whose result cannot be unpickled; return what awaiting it raised."""
    from cancelpool import current_pool

    child = current_pool().submit(unreadable_result)
    try:
        await child
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "the child's result was read"


async def report_and_return(count: int, value: Any = None) -> Any:
    """Report ``count`` progress events and return ``value`` at once."""
    op = _op()
    for i in range(count):
        await op.report_progress(f"step {i}", {"i": i})
    return value


class Stateful:
    """A callable object whose state may change between submits."""

    def __init__(self, value: Any) -> None:
        self.value = value

    async def __call__(self, suffix: str = "") -> str:
        return f"{self.value}{suffix}"


async def inner_timeout_escapes(seconds: float) -> str:
    """An operation inside the job times out, and the job lets the error escape."""
    from cancelpool import Cancelable

    async with Cancelable.with_timeout(seconds, name="inner"):
        await anyio.sleep(BACKSTOP)
    return "the inner timeout never fired"


async def shielded_child(gate: str, tag: str) -> str:
    """Wait at the gate shielded from cancellation; return ``tag`` once released."""
    with anyio.CancelScope(shield=True):
        await arrive(gate, tag)
    return tag


async def parent_of_shielded(gate: str, tag: str, count: int) -> list[Any]:
    """Announce ``parent-<tag>`` at the gate, submit ``count`` :func:`shielded_child`
    jobs tagged ``<tag>-<i>`` and return their results in order."""
    from cancelpool import current_pool

    pool = current_pool()
    children = [pool.submit(shielded_child, gate, f"{tag}-{i}") for i in range(count)]
    announce(gate, f"parent-{tag}")
    return [await child for child in children]


async def announce_and_wait(gate: str, tag: str = "-") -> str:
    """Report at the gate and go on working (for BACKSTOP seconds)."""
    announce(gate, tag)
    await anyio.sleep(BACKSTOP)
    return "waited"


def report_sync(count: int) -> int:
    """A plain function in a worker thread reporting progress with report_progress_sync."""
    op = _op()
    for i in range(count):
        op.report_progress_sync(f"sync {i}", {"i": i})
    return count


async def work_then_record(path: str, seconds: float) -> str:
    """Work for ``seconds`` (the job's own workload), then write "finished" to ``path``."""
    await anyio.sleep(seconds)
    Path(path).write_text("finished")
    return "finished"


async def record_cancellation(gate: str, path: str) -> None:
    """Report at the gate, wait; when cancelled, write the reason to ``path``."""
    announce(gate, "waiting")
    try:
        await anyio.sleep(BACKSTOP)
    finally:
        reason = _op().context.cancel_reason
        Path(path).write_text(str(reason.value if reason is not None else None))


def raise_base(kind: str) -> None:
    """Raise SystemExit or KeyboardInterrupt (``kind``) from a job."""
    raise {"SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt}[kind](kind)


async def raise_base_async(kind: str) -> None:
    raise_base(kind)


def _exit_on_load() -> None:
    raise SystemExit("raised while the result was unpickled")


class ExitsWhenUnpickled:
    """Pickles fine in the worker; unpickling it (in the caller) raises SystemExit."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_exit_on_load, ())


async def return_exiting_on_unpickle() -> ExitsWhenUnpickled:
    return ExitsWhenUnpickled()


class RefusesToPickle:
    """``__reduce__`` raises ``pickle.PicklingError``."""

    def __reduce__(self) -> tuple[Any, ...]:
        import pickle

        raise pickle.PicklingError("this result refuses to be pickled")


async def return_refusing_to_pickle() -> RefusesToPickle:
    return RefusesToPickle()


class Box:
    """A result that can be weakly referenced (to see when the caller lets it go)."""

    def __init__(self, value: Any) -> None:
        self.value = value


def box(value: Any) -> Box:
    return Box(value)


_initialized: list[Any] = []


def initialize(*args: Any) -> None:
    """A pool initializer: record the call in this worker process."""
    _initialized.append((os.getpid(), args))


def initialized() -> list[Any]:
    """What :func:`initialize` recorded in this worker."""
    return list(_initialized)


def failing_initializer(message: str) -> None:
    raise ValueError(message)


def exiting_initializer(code: int) -> None:
    """An initializer that ends its worker process at once: nothing to report."""
    os._exit(code)


def first_process_only(path: str, exit_code: int | None) -> None:
    """An initializer that only the first process to run it passes (it takes a file, as
    one binding a port would); later ones raise, or exit with ``exit_code``."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        if exit_code is not None:
            os._exit(exit_code)
        raise RuntimeError("another process holds the resource") from None


def keep_garbage() -> None:
    """An initializer: from now on the collector keeps what it would free, for
    :func:`garbage_census` to look at."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)


async def garbage_census() -> list[str]:
    """The types of the objects only the garbage collector could have freed since the
    last census (reference cycles), sorted; empty when every object died by refcount."""
    gc.collect()
    found = sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage})
    gc.garbage.clear()
    return found

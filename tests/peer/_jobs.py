"""Job functions for the ported executor tests: importable by name (``peer._jobs``).

Under every start method a worker imports this module to unpickle a job: pytest puts
``tests/`` on ``sys.path`` before any pool starts, and the interpreter-exit scripts put
it on ``PYTHONPATH`` themselves. A short sleep inside a job stands for work; it never
orders a test against a job (the gate of ``_handshake.py`` does that).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from pathlib import Path
from typing import Any

from _handshake import announce, announce_async, arrive, arrive_sync

# What the initializer of this worker process set (see ``init``).
INITIALIZER_STATUS = "uninitialized"
# How many times ``init`` ran in this worker process.
INIT_CALLS = 0
# Set by a test in its own process before forking workers (see ``marker``).
FORK_MARKER = "unset"


def mul(x: int, y: int) -> int:
    return x * y


def capture(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def get_pid() -> int:
    return os.getpid()


def whoami() -> tuple[int, int, str]:
    """This worker's pid, its parent's pid, and the fork marker it inherited."""
    return os.getpid(), os.getppid(), FORK_MARKER


def blocked(gate: str, tag: str, value: Any = None) -> Any:
    """Report at the gate and wait there for the test's "go"; then return ``value``."""
    arrive_sync(gate, tag)
    return value


async def blocked_async(gate: str, tag: str, value: Any = None) -> Any:
    await arrive(gate, tag)
    return value


def blocked_then_raise(gate: str, tag: str) -> None:
    arrive_sync(gate, tag)
    raise Exception("this is an exception")


def announced(gate: str, tag: str, value: Any = None) -> Any:
    """Report at the gate (who and where) and go on at once."""
    announce(gate, tag)
    return value


async def announced_async(gate: str, tag: str, value: Any = None) -> Any:
    await announce_async(gate, tag)
    return value


def sleep_and_print(seconds: float, msg: str) -> None:
    time.sleep(seconds)  # stands for work that is still going on at interpreter exit
    print(msg)
    sys.stdout.flush()


def init(status: str, counter: str | None = None) -> None:
    """An ``initializer=``: records its argument, counts its calls (in a file too)."""
    global INITIALIZER_STATUS, INIT_CALLS
    INITIALIZER_STATUS = status
    INIT_CALLS += 1
    if counter is not None:
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")


def get_init_status() -> tuple[str, int]:
    return INITIALIZER_STATUS, INIT_CALLS


async def get_init_status_async() -> tuple[str, int]:
    return INITIALIZER_STATUS, INIT_CALLS


def init_fail(counter: str) -> None:
    """An ``initializer=`` that fails (after counting the attempt in ``counter``)."""
    with open(counter, "a") as f:
        f.write(f"{os.getpid()}\n")
    raise ValueError("error in initializer")


class MyObject:
    def my_method(self) -> None:
        pass


def make_dummy_object(_: Any) -> MyObject:
    return MyObject()


def make_big(size: int) -> bytes:
    return b"x" * size


class RemoteError(RuntimeError):
    pass


def raise_runtime_123() -> None:
    raise RuntimeError(123)  # some comment


# -- the deadlock tests' saboteurs ------------------------------------------------------------
def crash(delay: float | None = None) -> None:
    """Kill this process with a segfault (no Python cleanup at all)."""
    if delay:
        time.sleep(delay)  # stands for work done before the crash
    import faulthandler

    faulthandler.disable()
    ctypes.string_at(0)  # reading address 0: SIGSEGV


def exit_1() -> None:
    sys.exit(1)


async def exit_1_async() -> None:
    sys.exit(1)


def raise_error(err: type[BaseException]) -> None:
    raise err()


async def raise_error_async(err: type[BaseException]) -> None:
    raise err()


def raise_error_ignore_stderr(err: type[BaseException]) -> None:
    import io

    sys.stderr = io.StringIO()
    raise err()


def return_instance(cls: type[Any]) -> Any:
    return cls()


class CrashAtPickle:
    """Segfaults the process that pickles it."""

    def __reduce__(self) -> Any:
        crash()


class CrashAtUnpickle:
    """Segfaults the process that unpickles it."""

    def __reduce__(self) -> Any:
        return crash, ()


class ExitAtPickle:
    """Raises SystemExit in the process that pickles it."""

    def __reduce__(self) -> Any:
        sys.exit(1)


class ExitAtUnpickle:
    """Raises SystemExit in the process that unpickles it."""

    def __reduce__(self) -> Any:
        return exit_1, ()


class ErrorAtPickle:
    """Raises PicklingError in the process that pickles it."""

    def __reduce__(self) -> Any:
        from pickle import PicklingError

        raise PicklingError("Error in pickle")


class ErrorAtUnpickle:
    """Raises UnpicklingError in the process that unpickles it."""

    def __reduce__(self) -> Any:
        from pickle import UnpicklingError

        return raise_error_ignore_stderr, (UnpicklingError,)


def touch(path: str) -> None:
    Path(path).touch()


def wait_if(gate: str, tag: str, block: bool) -> str:
    """Return ``tag``; first wait at the gate for "go" if ``block``."""
    if block:
        arrive_sync(gate, tag)
    return tag


class DelMarker:
    """Touches ``path`` when it is freed in a process other than the one that made it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.maker = os.getpid()

    def __del__(self) -> None:
        if os.getpid() != self.maker:
            Path(self.path).touch()


def tag_and_pid(tag: str) -> tuple[str, int]:
    return tag, os.getpid()


async def tag_and_pid_async(tag: str) -> tuple[str, int]:
    return tag, os.getpid()

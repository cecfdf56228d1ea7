"""CPython's ``ExecutorDeadlockTest``, ported: a pickling, unpickling or crashing
problem on either side never hangs the pool, fails only its own job, and the pool goes
on.

CPython's pool becomes "broken" (``BrokenProcessPool``) whenever a worker dies or the
result handler fails. Deviation, for every test here: this pool never becomes broken; a
worker that dies fails only its own job (a ``WorkerCrashed``, of the ``WorkerLost``
family) and is replaced, and a job whose data cannot cross fails with that error
(DESIGN "Decisions": a crashed worker fails only its own jobs; the pool never becomes
"broken"; issue 9 item 2: any ``BaseException`` while handling a worker's message fails
that job and the pool goes on). So each test also checks that the next job runs.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import faulthandler
import io
import os
import signal
import tempfile
import threading
from collections.abc import Callable
from pickle import PicklingError, UnpicklingError
from typing import Any

import pytest

from cancelpool import CancelPool, WorkerCrashed

from . import _jobs

# Seconds a job that hit a saboteur may take to resolve before the pool counts as
# deadlocked: CPython's support.SHORT_TIMEOUT. A backstop, not a measurement.
DEADLOCK_TIMEOUT = 30.0


@pytest.fixture
def pool(make_pool: Callable[..., CancelPool]) -> CancelPool:
    # CPython's _check_crash makes a fresh 2-worker executor per case.
    return make_pool(workers=2)


def fail_on_deadlock(pool: CancelPool) -> None:
    """Dump every thread's stack, stop the pool's workers, and fail the test."""
    with tempfile.TemporaryFile(mode="w+") as f:
        faulthandler.dump_traceback(file=f)
        f.seek(0)
        stacks = f.read()
    for worker in pool.statistics().workers:
        if worker.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)  # this test's own workers
    pytest.fail(f"the pool deadlocked:\n\n{stacks}")


def check_crash(
    pool: CancelPool,
    error: type[BaseException],
    fn: Callable[..., Any],
    *args: Any,
    ignore_stderr: bool = False,
) -> BaseException:
    """Run ``fn(*args)``: its handle must raise ``error`` within the backstop; then the
    pool must still run jobs. Returns the exception raised."""
    future = pool.submit(fn, *args)
    quiet = contextlib.redirect_stderr(io.StringIO()) if ignore_stderr else contextlib.nullcontext()
    raised: BaseException | None = None
    with quiet:
        try:
            future.result(timeout=DEADLOCK_TIMEOUT)
        except cf.TimeoutError:
            if not future.done():
                fail_on_deadlock(pool)
            raise
        except BaseException as exc:  # SystemExit expected in some cases
            raised = exc
    assert raised is not None, f"{fn.__name__} did not fail"
    assert isinstance(raised, error), f"expected {error.__name__}, got {raised!r}"
    # Deviation (see the module docstring): the pool survives.
    assert pool.submit(pow, 2, 8).result(timeout=DEADLOCK_TIMEOUT) == 256
    return raised


def test_error_at_task_pickle(pool: CancelPool) -> None:
    # Deviation: CPython's submit() returns and result() raises PicklingError; here
    # arguments are pickled in submit(), which raises it at the call site (STYLE
    # "Errors": misuse fails at the call site with a sentence that says what to do).
    with pytest.raises(PicklingError) as info:
        pool.submit(id, _jobs.ErrorAtPickle())
    assert "Error in pickle" in _chain_text(info.value)
    assert pool.submit(pow, 2, 8).result(timeout=DEADLOCK_TIMEOUT) == 256


def test_exit_at_task_unpickle(pool: CancelPool) -> None:
    # SystemExit while the worker unpickles the arguments. Deviation: CPython's worker
    # dies (BrokenProcessPool, a RuntimeError); here the job fails with a RuntimeError
    # and the pool goes on (module docstring).
    check_crash(pool, RuntimeError, id, _jobs.ExitAtUnpickle())


def test_error_at_task_unpickle(pool: CancelPool) -> None:
    # Deviation: CPython raises BrokenProcessPool; here the job fails with the
    # unpickling error itself, its type kept and chained (issue 9 item 3: pickle
    # failures keep their type, chained).
    raised = check_crash(pool, UnpicklingError, id, _jobs.ErrorAtUnpickle())
    assert raised.__cause__ is not None


def test_crash_at_task_unpickle(pool: CancelPool) -> None:
    check_crash(pool, WorkerCrashed, id, _jobs.CrashAtUnpickle())


def test_crash_during_func_exec_on_worker(pool: CancelPool) -> None:
    check_crash(pool, WorkerCrashed, _jobs.crash)


@pytest.mark.parametrize("fn", [_jobs.exit_1, _jobs.exit_1_async], ids=["sync", "async"])
def test_exit_during_func_exec_on_worker(pool: CancelPool, fn: Callable[[], None]) -> None:
    # The job's own SystemExit is what result() raises (issue 9 item 3).
    raised = check_crash(pool, SystemExit, fn)
    assert raised.args == (1,)


@pytest.mark.parametrize("fn", [_jobs.raise_error, _jobs.raise_error_async], ids=["sync", "async"])
def test_error_during_func_exec_on_worker(pool: CancelPool, fn: Callable[..., None]) -> None:
    check_crash(pool, RuntimeError, fn, RuntimeError)


def test_crash_during_result_pickle_on_worker(pool: CancelPool) -> None:
    check_crash(pool, WorkerCrashed, _jobs.return_instance, _jobs.CrashAtPickle)


def test_exit_during_result_pickle_on_worker(pool: CancelPool) -> None:
    check_crash(pool, SystemExit, _jobs.return_instance, _jobs.ExitAtPickle)


def test_error_during_result_pickle_on_worker(pool: CancelPool) -> None:
    raised = check_crash(pool, PicklingError, _jobs.return_instance, _jobs.ErrorAtPickle)
    assert "Error in pickle" in _chain_text(raised)


def test_error_during_result_unpickle_in_result_handler(pool: CancelPool) -> None:
    # Deviation: CPython's result handler breaks the pool (BrokenProcessPool); here the
    # job fails with the unpickling error, type kept and chained (issue 9 items 2, 3).
    raised = check_crash(
        pool, UnpicklingError, _jobs.return_instance, _jobs.ErrorAtUnpickle, ignore_stderr=True
    )
    assert raised.__cause__ is not None


def test_exit_during_result_unpickle_in_result_handler(pool: CancelPool) -> None:
    # SystemExit while the supervisor thread unpickles a result (issue 9 item 2: it
    # used to kill that thread and hang every handle). Deviation: CPython raises
    # BrokenProcessPool (a RuntimeError) and breaks the pool; here the job fails with a
    # RuntimeError whose __cause__ is the SystemExit, and the pool goes on.
    raised = check_crash(pool, RuntimeError, _jobs.return_instance, _jobs.ExitAtUnpickle)
    assert isinstance(raised.__cause__, SystemExit), repr(raised.__cause__)


def test_shutdown_deadlock(make_pool: Callable[..., CancelPool]) -> None:
    # A worker that dies after shutdown() was called does not deadlock the pool.
    pool = make_pool(workers=2)
    future = pool.submit(_jobs.crash, 0.1)
    done = threading.Event()

    def shut() -> None:
        pool.shutdown(wait=True)
        done.set()

    thread = threading.Thread(target=shut)
    thread.start()
    thread.join(DEADLOCK_TIMEOUT)
    if not done.is_set():
        fail_on_deadlock(pool)
    with pytest.raises(WorkerCrashed):
        future.result(timeout=0)


def test_shutdown_deadlock_pickle(make_pool: Callable[..., CancelPool]) -> None:
    # bpo-39104: a job that fails to pickle around shutdown(wait=False) deadlocks
    # nothing. Deviation: the pickling error is raised by submit() (see
    # test_error_at_task_pickle).
    pool = make_pool(workers=2)
    assert pool.submit(id, 42).result(timeout=DEADLOCK_TIMEOUT)
    supervisor = [t for t in threading.enumerate() if t.name.startswith("cancelpool-supervisor")]
    with pytest.raises(PicklingError):
        pool.submit(id, _jobs.ErrorAtPickle())
    pool.shutdown(wait=False)
    for thread in supervisor:
        thread.join(DEADLOCK_TIMEOUT)
        assert not thread.is_alive(), "the supervisor thread did not end"


def _chain_text(exc: BaseException) -> str:
    """The messages of ``exc`` and of every exception it is chained to."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(parts)

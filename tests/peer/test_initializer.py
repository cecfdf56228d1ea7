"""CPython's ``InitializerMixin`` and ``FailingInitializerMixin``, ported:
``CancelPool(initializer=, initargs=)`` under forkserver, spawn and fork."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from pathlib import Path

import pytest

from _handshake import BACKSTOP
from cancelpool import CancelPool

from . import _jobs

WORKERS = 2  # CPython's initializer tests use 2 workers


@pytest.mark.parametrize("job", [_jobs.get_init_status, _jobs.get_init_status_async])
def test_initializer(make_pool: Callable[..., CancelPool], job: Callable[[], object]) -> None:
    pool = make_pool(workers=WORKERS, initializer=_jobs.init, initargs=("initialized",))
    futures = [pool.submit(job) for _ in range(WORKERS * 4)]
    for future in futures:
        # Beyond CPython: the initializer ran exactly once in the job's worker.
        assert future.result(timeout=BACKSTOP) == ("initialized", 1)


def test_initializer_runs_in_replacements(
    make_pool: Callable[..., CancelPool], tmp_path: Path
) -> None:
    # Once per worker process, a replacement too (issue 9 item 3).
    counter = tmp_path / "calls"
    pool = make_pool(
        workers=1, max_tasks_per_child=1, initializer=_jobs.init, initargs=("again", str(counter))
    )
    pids = set()
    for _ in range(3):
        status, calls = pool.submit(_jobs.get_init_status).result(timeout=BACKSTOP)
        assert (status, calls) == ("again", 1)
        pids.add(pool.submit(_jobs.get_pid).result(timeout=BACKSTOP))
    pool.shutdown(wait=True)
    lines = counter.read_text().split()
    assert len(lines) == len(set(lines)), "an initializer ran twice in one process"
    assert pids <= {int(pid) for pid in lines}


def test_failing_initializer(make_pool: Callable[..., CancelPool], tmp_path: Path) -> None:
    counter = tmp_path / "attempts"
    pool = make_pool(workers=WORKERS, initializer=_jobs.init_fail, initargs=(str(counter),))
    # Deviation: CPython checks that the error is logged (logger concurrent.futures,
    # CRITICAL); here the error reaches the caller on the handle, as the __cause__ of
    # the BrokenExecutor (issue 9 item 3: "fails jobs with a clear error").
    try:
        future = pool.submit(_jobs.get_init_status)
    except cf.BrokenExecutor as error:  # the pool may already know it is broken
        broken: BaseException = error
    else:
        with pytest.raises(cf.BrokenExecutor) as info:
            future.result(timeout=BACKSTOP)
        broken = info.value
    assert "initializer" in str(broken)
    cause = broken.__cause__
    assert isinstance(cause, ValueError), repr(cause)
    assert str(cause) == "error in initializer"
    # From now on submit() fails at once (CPython waits up to 5 s for self._broken;
    # here the first failed job has already marked the pool broken).
    with pytest.raises(cf.BrokenExecutor):
        pool.submit(_jobs.get_init_status)
    # No respawn spin: every worker tried its initializer at most once.
    pool.shutdown(wait=True)
    attempts = counter.read_text().split()
    assert 1 <= len(attempts) <= WORKERS, f"initializer attempts: {len(attempts)}"


def test_initializer_must_be_callable() -> None:
    # Bad input fails at the call site (BRIEF-common "Standards"): ProcessPoolExecutor
    # raises TypeError("initializer must be a callable").
    with pytest.raises(TypeError, match="initializer"):
        CancelPool(initializer=42)  # type: ignore[arg-type]

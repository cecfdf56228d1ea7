"""The one pool fixture of the pool, fault and peer suites, with one teardown policy,
and the one leftover check around every test of those suites.

A suite's ``conftest.py`` imports the fixtures (``from _pools import ...``) and may
override ``pool_options`` (the CancelPool options a test's pools get unless it says
otherwise) and ``pool_starts`` (whether ``make_pool`` starts the pool, or leaves that
to the first ``submit()`` as ``concurrent.futures`` does).

Teardown policy, whatever state a test left a pool in (an expected failure of a known
bug included): running jobs are cancelled (stubborn ones force-stopped after their
grace), and if the supervisor still has not finished within the backstop (a job that
never resolves), the pool's workers are killed so that it can. Then the leftover check
(``_leaks.assert_no_leftovers``) runs.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import _leaks
from cancelpool import CancelPool

# Pools that outlive one test (module-scoped): their workers are not a test's leftovers.
_long_lived: set[CancelPool] = set()


def tear_down(pool: CancelPool) -> None:
    """Stop a pool whatever state a test left it in, without hanging (see above)."""
    thread = pool._sup.thread  # white-box: the one thread whose end proves the stop
    pool.shutdown(wait=False, cancel_running=True)
    if thread is None:
        return
    thread.join(_leaks.EXIT_BACKSTOP)
    if thread.is_alive():
        for worker in pool.statistics().workers:
            if worker.pid is not None:
                try:
                    os.kill(worker.pid, signal.SIGKILL)  # this pool's own worker
                except ProcessLookupError:
                    pass
        thread.join(_leaks.EXIT_BACKSTOP)
    assert not thread.is_alive(), f"{pool!r} did not stop within {2 * _leaks.EXIT_BACKSTOP}s"


# These suites start no PostgreSQL server: its dynamic shared memory segments belong to
# a server that some other process on the machine runs (the queue suite, say).
_FOREIGN_SHM = ("PostgreSQL.",)


def assert_no_leftovers(shm_before: set[str]) -> None:
    """The one leftover check; a module-wide pool's workers are not a test's leftovers."""
    workers = (w.pid for pool in _long_lived for w in pool.statistics().workers)
    _leaks.assert_no_leftovers(
        shm_before, [pid for pid in workers if pid is not None], foreign_shm=_FOREIGN_SHM
    )


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    """Autouse: the test leaves no child process and no /dev/shm entry behind."""
    before = _leaks.dev_shm()
    yield
    assert_no_leftovers(before)


@pytest.fixture
def pool_options() -> dict[str, Any]:
    """The CancelPool options of a test's pools (a suite's conftest may override)."""
    return {"workers": 2}


@pytest.fixture
def pool_starts() -> bool:
    """Whether ``make_pool`` starts its pools (a suite's conftest may override)."""
    return True


@pytest.fixture
def make_pool(
    pool_options: dict[str, Any], pool_starts: bool
) -> Iterator[Callable[..., CancelPool]]:
    """``make_pool(**options)``: a CancelPool, torn down after the test (see above)."""
    pools: list[CancelPool] = []

    def make(**options: Any) -> CancelPool:
        pool = CancelPool(**{**pool_options, **options})
        pools.append(pool)
        if pool_starts:
            pool.__enter__()
        return pool

    yield make
    for pool in pools:
        tear_down(pool)


@pytest.fixture
def pool(make_pool: Callable[..., CancelPool]) -> CancelPool:
    """A fresh pool with the suite's options."""
    return make_pool()


@pytest.fixture(scope="module")
def shared_pool() -> Iterator[CancelPool]:
    """One two-worker pool for a whole module, for tests that cannot disturb each other
    (they only submit their own jobs and look at their own handles)."""
    before = _leaks.dev_shm()
    pool = CancelPool(workers=2).__enter__()
    _long_lived.add(pool)
    try:
        yield pool
    finally:
        _long_lived.discard(pool)
        tear_down(pool)
    assert_no_leftovers(before)

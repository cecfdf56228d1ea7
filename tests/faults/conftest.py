"""Fixtures for the fault tests: real workers, real signals, and a clean end.

Every test ends clean: no child process of the test process is left (multiprocessing's
fork server and resource tracker are long-lived helpers) and no new ``/dev/shm`` entry
exists. Pools are torn down even when a test failed half-way (an expected failure of a
known bug included): running jobs are cancelled, stubborn workers are killed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cancelpool import CancelPool

from ._util import EXIT_BACKSTOP, assert_no_leftovers, dev_shm


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    """Autouse: the test leaves no child process and no /dev/shm entry behind."""
    before = dev_shm()
    yield
    assert_no_leftovers(before)


def tear_down(pool: CancelPool) -> None:
    """Stop a pool whatever state a test left it in, without hanging.

    Cancels everything (stubborn jobs are force-stopped after their grace); if the
    supervisor still has not finished within the backstop (a known bug may leave a job
    that never resolves), its workers are killed so that it can.
    """
    thread = pool._sup.thread
    pool.shutdown(wait=False, cancel_running=True)
    if thread is None:
        return
    thread.join(EXIT_BACKSTOP)
    if thread.is_alive():
        for worker in pool.statistics().workers:
            if worker.pid is not None:
                try:
                    os.kill(worker.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        thread.join(EXIT_BACKSTOP)
    assert not thread.is_alive(), f"{pool!r} did not stop within {2 * EXIT_BACKSTOP}s"


@pytest.fixture
def make_pool() -> Iterator[Callable[..., CancelPool]]:
    """``make_pool(**options)``: a started CancelPool, torn down after the test."""
    pools: list[CancelPool] = []

    def make(**options: Any) -> CancelPool:
        options.setdefault("workers", 2)
        pool = CancelPool(**options)
        pools.append(pool)
        return pool.__enter__()

    yield make
    for pool in pools:
        tear_down(pool)


@pytest.fixture
def pool(make_pool: Callable[..., CancelPool]) -> CancelPool:
    """A fresh two-worker pool."""
    return make_pool()

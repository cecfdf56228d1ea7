"""Fixtures for the pool's end-to-end tests: real workers, pipes and shared memory.

Every test ends clean: no child process of the test process is left (multiprocessing's
fork server and resource tracker are long-lived helpers, and the workers of a
module-wide pool belong to that pool until its module ends) and no new ``/dev/shm``
entry exists.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest

from _leaks import EXIT_BACKSTOP, dev_shm, live_children
from cancelpool import CancelPool

# Pools that outlive one test (module-scoped): their workers are not a test's leftovers.
_long_lived: set[CancelPool] = set()


def _leftover_children() -> list[psutil.Process]:
    workers = (w.pid for pool in _long_lived for w in pool.statistics().workers)
    return live_children(pid for pid in workers if pid is not None)


def assert_no_leftovers(shm_before: set[str]) -> None:
    """No child process (but the helpers) and no new /dev/shm entry remain."""
    leftovers = _leftover_children()
    if leftovers:
        _gone, alive = psutil.wait_procs(leftovers, timeout=EXIT_BACKSTOP)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        described = []
        for proc in alive:
            try:
                described.append(f"{proc.pid} {' '.join(proc.cmdline())}")
            except psutil.Error:
                pass
            proc.kill()  # so that one leak does not fail every test after it
        assert not described, f"child processes left running: {described}"
    deadline = time.monotonic() + EXIT_BACKSTOP
    new = dev_shm() - shm_before
    while new and time.monotonic() < deadline:
        time.sleep(0.05)  # backstop poll for a parallel test's short-lived entry
        new = dev_shm() - shm_before
    assert not new, f"/dev/shm entries left behind: {sorted(new)}"


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    """Autouse: the test leaves no child process and no /dev/shm entry behind."""
    before = dev_shm()
    yield
    assert_no_leftovers(before)


@pytest.fixture
def pool() -> Iterator[CancelPool]:
    """A fresh two-worker pool, shut down (and checked for a clean end) after the test."""
    with CancelPool(workers=2) as p:
        yield p


@pytest.fixture(scope="module")
def shared_pool() -> Iterator[CancelPool]:
    """One two-worker pool for a whole module, for tests that cannot disturb each other
    (they only submit their own jobs and look at their own handles)."""
    before = dev_shm()
    with CancelPool(workers=2) as p:
        _long_lived.add(p)
        try:
            yield p
        finally:
            _long_lived.discard(p)
    assert_no_leftovers(before)

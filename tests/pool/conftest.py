"""Fixtures for the pool's end-to-end tests: real workers, pipes and shared memory.

Every test ends clean: no child process of the test process is left (multiprocessing's
fork server and resource tracker are long-lived helpers, and the workers of a
module-wide pool belong to that pool until its module ends) and no new ``/dev/shm``
entry exists.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import _leaks
from _leaks import dev_shm
from cancelpool import CancelPool

# Pools that outlive one test (module-scoped): their workers are not a test's leftovers.
_long_lived: set[CancelPool] = set()


def assert_no_leftovers(shm_before: set[str]) -> None:
    """The one leftover check (``tests/_leaks.py``); a module-wide pool's workers are
    not a test's leftovers."""
    workers = (w.pid for pool in _long_lived for w in pool.statistics().workers)
    _leaks.assert_no_leftovers(shm_before, [pid for pid in workers if pid is not None])


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

"""CPython's ``AsCompletedTests``, ported: ``concurrent.futures.as_completed()`` over
JobHandles, under forkserver, spawn and fork."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import itertools
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from _handshake import BACKSTOP, Gate
from cancelpool import CancelPool

from . import _futures, _jobs

T = TypeVar("T")


def drain(iterator: Iterator[T], into: list[T]) -> None:
    """Append what ``iterator`` yields to ``into`` until it ends or raises."""
    for item in iterator:
        into.append(item)


def test_no_timeout(executor: CancelPool) -> None:
    future1 = executor.submit(_jobs.mul, 2, 21)
    future2 = executor.submit(_jobs.mul, 7, 6)
    given = [
        _futures.cancelled_and_notified(),
        _futures.failed(),
        _futures.succeeded(),
        future1,
        future2,
    ]
    assert set(cf.as_completed(given)) == set(given)


def test_zero_timeout(executor: CancelPool, gate: Gate) -> None:
    future1 = executor.submit(_jobs.blocked, gate.path, "slow")
    done_already = [_futures.cancelled_and_notified(), _futures.failed(), _futures.succeeded()]
    completed: list[cf.Future[Any]] = []
    with pytest.raises(cf.TimeoutError):
        drain(cf.as_completed([*done_already, future1], timeout=0), completed)
    assert set(completed) == set(done_already)


def test_nonzero_timeout(executor: CancelPool, gate: Gate) -> None:
    # CPython's "TODO: should have a test with a non-zero timeout", done: the finished
    # job is yielded, then the one still at the gate makes as_completed() time out.
    future1 = executor.submit(_jobs.mul, 2, 21)
    future2 = executor.submit(_jobs.blocked, gate.path, "slow")
    assert future1.result(timeout=BACKSTOP) == 42  # so the timed part is certain
    completed: list[cf.Future[Any]] = []
    with pytest.raises(cf.TimeoutError, match=r"1 \(of 2\) futures unfinished"):
        drain(cf.as_completed([future1, future2], timeout=0.5), completed)
    assert completed == [future1]


def test_duplicate_futures(executor: CancelPool, gate: Gate) -> None:
    # Issue 20367: duplicates are yielded once; issue #31641: any iterable is accepted.
    future1 = executor.submit(_jobs.blocked, gate.path, "slow")
    gate.wait(1)
    gate.release()
    completed = list(cf.as_completed(itertools.repeat(future1, 3)))
    assert completed == [future1]


def test_free_reference_yielded_future(make_pool: Callable[..., CancelPool], gate: Gate) -> None:
    # Issue #14406: as_completed() keeps no reference to a future it has yielded.
    # Deviation: CPython resolves plain Futures by hand; here they are jobs released
    # one at a time at the gate. history=0, because finished handles are kept for
    # pool.get() / pool.jobs() by design (CancelPool docstring, ``history``).
    pool = make_pool(history=0)
    futures_list: list[cf.Future[Any]] = [
        pool.submit(_jobs.blocked, gate.path, str(i)) for i in range(3)
    ]
    futures_list.append(_futures.cancelled_and_notified())
    futures_list.append(_futures.succeeded())
    arrivals = gate.wait(3)  # all three run (3 workers) and wait for "go"

    def take_finished() -> None:
        for future in cf.as_completed(futures_list, timeout=0):
            futures_list.remove(future)
            ref = weakref.ref(future)
            del future
            gc.collect()
            assert ref() is None

    with pytest.raises(cf.TimeoutError):
        take_finished()
    assert len(futures_list) == 3

    gate.release(arrivals.pop(0))
    for future in cf.as_completed(futures_list, timeout=BACKSTOP):
        futures_list.remove(future)
        ref = weakref.ref(future)
        del future
        gc.collect()
        assert ref() is None
        if arrivals:
            gate.release(arrivals.pop(0))
    assert futures_list == []


def test_correct_timeout_exception_msg(executor: CancelPool, gate: Gate) -> None:
    # Deviation: CPython's pending and running futures are plain Futures; here one job
    # is running (at the gate) and one is queued behind a full pool.
    workers = len(executor.statistics().workers)
    running = [executor.submit(_jobs.blocked, gate.path, str(i)) for i in range(workers)]
    gate.wait(workers)
    queued = executor.submit(_jobs.mul, 1, 1)
    futures_list = [_futures.cancelled_and_notified(), queued, running[0], _futures.succeeded()]
    with pytest.raises(cf.TimeoutError) as info:
        list(cf.as_completed(futures_list, timeout=0))
    assert str(info.value) == "2 (of 4) futures unfinished"

"""CPython's ``ExecutorTest`` and ``ProcessPoolExecutorTest``, ported to ``CancelPool``.

Source: ``Lib/test/test_concurrent_futures.py`` of CPython 3.10/3.11 (the generic
executor tests and the process-pool ones), rewritten for this project. Each test runs
under forkserver, spawn and fork. Where CancelPool differs from ``ProcessPoolExecutor``
by design, the test says so in a ``Deviation:`` comment naming the decision.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import os
import signal
import threading
import weakref
from collections.abc import Callable

import pytest

from _handshake import BACKSTOP, Gate
from cancelpool import CancelPool, WorkerLost

from . import _jobs

# Seconds map(timeout=...) allows for two trivial jobs on a warm pool: CPython's value,
# generous here (they take well under a millisecond); a backstop, not a measurement.
MAP_TIMEOUT = 5.0


def test_submit(executor: CancelPool) -> None:
    assert executor.submit(pow, 2, 8).result() == 256


def test_submit_keyword(executor: CancelPool) -> None:
    assert executor.submit(_jobs.mul, 2, y=8).result() == 16
    # Keyword arguments named like submit()'s own positional parameters reach the job.
    future = executor.submit(_jobs.capture, 1, self=2, fn=3)
    assert future.result() == ((1,), {"self": 2, "fn": 3})
    with pytest.raises(TypeError):
        executor.submit(fn=_jobs.capture, arg=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        executor.submit(arg=1)  # type: ignore[call-arg]


def test_map(executor: CancelPool) -> None:
    expected = list(map(pow, range(10), range(10)))
    assert list(executor.map(pow, range(10), range(10))) == expected
    assert list(executor.map(pow, range(10), range(10), chunksize=3)) == expected


def test_map_exception(executor: CancelPool) -> None:
    results = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
    assert next(results) == (0, 1)
    assert next(results) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(results)


def test_map_timeout(executor: CancelPool, gate: Gate) -> None:
    # Deviation: CPython's third job sleeps 6 s against a 5 s timeout; here it waits at
    # the gate until the test is done, so a slow machine cannot make it finish in time.
    results: list[str] = []
    iterator = executor.map(
        _jobs.wait_if,
        [gate.path] * 3,
        ["a", "b", "late"],
        [False, False, True],
        timeout=MAP_TIMEOUT,
    )
    with pytest.raises(concurrent.futures.TimeoutError):
        results.extend(iterator)
    assert results == ["a", "b"]


def test_map_timeout_cancels_the_rest(gate: Gate, make_pool: Callable[..., CancelPool]) -> None:
    # CPython 3.11 (ThreadPoolExecutor test, gh-95166): after a map() timeout, the job
    # that timed out and the ones after it never start.
    pool = make_pool(workers=1)
    first = pool.submit(_jobs.blocked, gate.path, "first")
    gate.wait(1)
    with (
        contextlib.closing(
            pool.map(_jobs.announced, [gate.path] * 2, ["second", "third"], timeout=0)
        ) as results,
        pytest.raises(concurrent.futures.TimeoutError),
    ):
        next(results)
    gate.release()
    first.result(timeout=BACKSTOP)
    pool.shutdown(wait=True)
    assert [a.tag for a in gate.arrivals] == ["first"]


def test_shutdown_race_issue12456(executor: CancelPool) -> None:
    # More jobs than workers, left running, then shutdown(): must not hang.
    executor.map(str, [2] * (len(executor.statistics().workers) + 1))
    executor.shutdown()


def test_no_stale_references(executor: CancelPool) -> None:
    # Issue #16284: the pool keeps no reference to a job's callable once it is done.
    obj = _jobs.MyObject()
    collected = threading.Event()
    ref = weakref.ref(obj, lambda _: collected.set())
    executor.submit(obj.my_method).result(timeout=BACKSTOP)
    del obj
    gc.collect()
    assert collected.wait(BACKSTOP), "stale reference not collected"
    assert ref() is None


@pytest.mark.parametrize("number", [0, -1])
def test_max_workers_negative(number: int) -> None:
    # Deviation: CPython matches the text "max_workers must be greater than 0"; here the
    # error must name the argument the caller used and the bound (issue 9 item 3:
    # max_workers= as ProcessPoolExecutor spells it; BRIEF-common: a clear sentence).
    with pytest.raises(ValueError, match=r"max_workers.*(greater than 0|at least 1|>= ?1)"):
        CancelPool(max_workers=number)


def test_free_reference(make_pool: Callable[..., CancelPool]) -> None:
    # Issue #14406: the result iterator keeps no reference to a result once yielded.
    # Deviation: history=0, because finished handles (and so their results) are kept
    # for pool.get() / pool.jobs() by design (CancelPool docstring, ``history``).
    pool = make_pool(history=0)
    for obj in pool.map(_jobs.make_dummy_object, range(10)):
        ref = weakref.ref(obj)
        del obj
        gc.collect()
        assert ref() is None


def test_map_holds_only_unconsumed_results(make_pool: Callable[..., CancelPool]) -> None:
    # Issue 9 item 3: map() is lazy; the memory it holds grows with the results not yet
    # consumed (plus a bounded read-ahead), not with the input. 400 results of 1 MiB
    # would hold 400 MiB if the iterator kept every handle.
    pool = make_pool(history=0, workers=2)
    size = 1 << 20
    count = 400
    peak = 0
    baseline = _rss()
    for index, blob in enumerate(pool.map(_jobs.make_big, [size] * count)):
        assert len(blob) == size
        del blob
        if index % 20 == 0:
            peak = max(peak, _rss() - baseline)
    assert peak < 150 * size, f"map() held {peak / size:.0f} MiB for {count} MiB of results"


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def test_map_chunksize(executor: CancelPool) -> None:
    expected = list(map(pow, range(40), range(40)))
    for chunksize in (6, 50, 40):
        assert list(executor.map(pow, range(40), range(40), chunksize=chunksize)) == expected
    with pytest.raises(ValueError, match="chunksize"):
        list(executor.map(pow, range(40), range(40), chunksize=-1))


def test_traceback(executor: CancelPool) -> None:
    # The worker's traceback travels with the exception, as its __cause__.
    future = executor.submit(_jobs.raise_runtime_123)
    with pytest.raises(Exception, match="123") as info:
        future.result()
    exc = info.value
    assert type(exc) is RuntimeError
    assert exc.args == (123,)
    # Deviation: the cause is cancelpool's remote-traceback carrier, not
    # concurrent.futures.process._RemoteTraceback; its text holds the worker's source
    # line just the same (DESIGN "Decisions": the remote traceback as __cause__).
    cause = exc.__cause__
    assert cause is not None
    assert "raise RuntimeError(123)  # some comment" in str(cause)


def test_killed_child(executor: CancelPool, gate: Gate) -> None:
    # Deviation: CPython's pool becomes "broken" and refuses new jobs; here only the job
    # of the killed worker fails, with a WorkerLost-family error, and the pool goes on
    # (DESIGN "Decisions": a crashed worker fails only its own jobs and is replaced; the
    # pool never becomes broken).
    victim = executor.submit(_jobs.blocked, gate.path, "victim")
    bystander = executor.submit(_jobs.blocked, gate.path, "bystander", "ok")
    arrivals = gate.wait_tags(2)
    assert arrivals["victim"].pid != arrivals["bystander"].pid
    os.kill(arrivals["victim"].pid, signal.SIGKILL)
    with pytest.raises(WorkerLost):
        victim.result(timeout=BACKSTOP)
    assert not bystander.done()
    gate.release(arrivals["bystander"])
    assert bystander.result(timeout=BACKSTOP) == "ok"
    assert executor.submit(pow, 2, 8).result(timeout=BACKSTOP) == 256


def test_saturation(executor: CancelPool, gate: Gate) -> None:
    # Many more jobs than workers: the pool runs exactly its own workers.
    jobs = [executor.submit(_jobs.announced, gate.path, str(i)) for i in range(45)]
    pids = {arrival.pid for arrival in gate.wait(45)}
    concurrent.futures.wait(jobs, timeout=BACKSTOP)
    assert all(job.done() and job.exception() is None for job in jobs)
    assert pids <= {w.pid for w in executor.statistics().workers}


def test_max_tasks_per_child(make_pool: Callable[..., CancelPool]) -> None:
    # CPython 3.11: a worker is replaced after max_tasks_per_child jobs.
    pool = make_pool(workers=1, max_tasks_per_child=3)
    original = pool.submit(_jobs.get_pid).result(timeout=BACKSTOP)
    assert pool.submit(_jobs.get_pid).result(timeout=BACKSTOP) == original
    assert len(pool.statistics().workers) == 1
    assert pool.submit(_jobs.get_pid).result(timeout=BACKSTOP) == original
    new = pool.submit(_jobs.get_pid).result(timeout=BACKSTOP)
    assert new != original
    assert len(pool.statistics().workers) == 1


def test_max_tasks_early_shutdown(make_pool: Callable[..., CancelPool]) -> None:
    # CPython 3.11 (gh-90622): recycling workers while shutting down loses no job.
    pool = make_pool(workers=3, max_tasks_per_child=1)
    futures = [pool.submit(_jobs.mul, i, i) for i in range(6)]
    pool.shutdown()
    for i, future in enumerate(futures):
        assert future.result(timeout=BACKSTOP) == i * i


def test_resources_gced_in_workers(executor: CancelPool, tmp_path: os.PathLike[str]) -> None:
    # A job's arguments are released in the worker once the job is done.
    # Deviation: CPython's object sets a Manager event from __del__; here __del__ in
    # the worker touches a file (same observable: the worker freed the argument).
    marker = os.path.join(os.fspath(tmp_path), "freed")
    assert executor.submit(id, _jobs.DelMarker(marker)).result(timeout=BACKSTOP)
    # The worker frees the argument right after the job; poll for it (backstop).
    import time

    deadline = time.monotonic() + BACKSTOP
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.01)  # backstop poll for the file, not an ordering
    assert os.path.exists(marker)

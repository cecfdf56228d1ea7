"""``submit()`` while every worker is busy: jobs taken in without the pool's lock.

Such a job waits in the job table's ``incoming`` deque until the supervisor (or any
call that reads the table) registers it; these tests check it is never lost, never
runs when cancelled first, is counted, and keeps its order.
"""

from __future__ import annotations

import threading
import time

from _handshake import BACKSTOP, Gate, start_running
from cancelpool import CancelPool, JobCancelled, OperationStatus, PoolClosed

from . import _jobs


def test_busy_submits_are_counted_cancellable_and_in_order(gate: Gate) -> None:
    with CancelPool(workers=1, concurrency=1) as pool:
        running = start_running(pool, gate, "hold")
        queued = [pool.submit(_jobs.add, i, 0) for i in range(50)]
        victim = queued[10]
        # Straight after submit(), before the supervisor may have looked: the job is
        # found, counted and cancelled (it never starts).
        assert victim.cancel() is True
        assert pool.get(queued[-1].id) is queued[-1]
        stats = pool.statistics()
        assert (stats.submitted, stats.running, stats.queued) == (51, 1, 49)
        assert victim.status is OperationStatus.CANCELLED
        gate.release()
        assert running.result(BACKSTOP) == "released"
        assert isinstance(victim.exception(BACKSTOP), JobCancelled)
        finished_order: list[int] = []
        lock = threading.Lock()

        def record(handle: object) -> None:
            with lock:
                finished_order.append(queued.index(handle))  # type: ignore[arg-type]

        others = [h for h in queued if h is not victim]
        for handle in others:
            handle.add_done_callback(record)
        assert [h.result(BACKSTOP) for h in others] == [i for i in range(50) if i != 10]
        # One worker running one job at a time: they ran in the order submitted.
        assert finished_order == sorted(finished_order)
        final = pool.statistics()
        assert (final.completed, final.cancelled, final.queued) == (50, 1, 0)


def test_submits_racing_shutdown_are_run_or_refused() -> None:
    """Threads submitting while the pool shuts down: each submit() either raises
    PoolClosed or returns a handle that resolves (nothing is lost or hangs)."""
    pool = CancelPool(workers=2, concurrency=2).__enter__()
    handles: list[object] = []
    refused = [0]
    lock = threading.Lock()
    go = threading.Event()

    def submitter() -> None:
        go.wait(BACKSTOP)
        for i in range(2_000):
            try:
                handle = pool.submit(_jobs.add, i, 1)
            except PoolClosed:
                with lock:
                    refused[0] += 1
                return
            with lock:
                handles.append(handle)

    threads = [threading.Thread(target=submitter) for _ in range(4)]
    for thread in threads:
        thread.start()
    go.set()
    deadline = time.monotonic() + BACKSTOP
    while time.monotonic() < deadline:  # some jobs in before the shutdown begins
        with lock:
            if len(handles) >= 200:
                break
    pool.shutdown(wait=True)
    for thread in threads:
        thread.join(BACKSTOP)
        assert not thread.is_alive()
    assert all(h.done() for h in handles)  # type: ignore[attr-defined]
    assert all(h.exception(0) is None for h in handles)  # type: ignore[attr-defined]
    stats = pool.statistics()
    assert stats.submitted == len(handles)
    assert stats.completed == len(handles)
    assert refused[0] <= len(threads)

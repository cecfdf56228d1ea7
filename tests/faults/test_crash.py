"""Crashes: a worker that dies (SIGKILL, ``os._exit``, segfault) fails only its own jobs
with ``WorkerCrashed`` (exit code or signal in the message, partial results kept), or
re-runs them under ``retries``; it is replaced at once and the pool is never broken.
``max_tasks_per_child`` and ``max_memory_per_worker`` recycle workers between jobs."""

from __future__ import annotations

import collections
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from _handshake import BACKSTOP, Gate
from cancelpool import (
    CancelationReason,
    CancelPool,
    JobCancelled,
    OperationStatus,
    WorkerCrashed,
    WorkerLost,
)
from cancelpool._pool._worker_set import MEMORY_CHECK_INTERVAL

from . import _jobs
from ._util import descendants, is_gone

HOW = {
    "sigkill": "killed by signal 9",
    "exit": "exit code 3",
    "segfault": "killed by signal 11",
}


def worker_pids(pool: CancelPool) -> set[int]:
    pids = {w.pid for w in pool.statistics().workers}
    assert None not in pids
    return pids  # type: ignore[return-value]


def assert_healthy(pool: CancelPool, workers: int = 2) -> set[int]:
    """Every worker slot has a live process and the pool runs jobs on them."""
    pids = worker_pids(pool)
    assert len(pids) == workers
    assert not any(is_gone(pid) for pid in pids)
    handles = [pool.submit(_jobs.echo, i) for i in range(20)]
    assert [h.result(BACKSTOP) for h in handles] == list(range(20))
    return pids


@pytest.mark.parametrize("how", ["sigkill", "exit", "segfault", "external-sigkill"])
def test_a_dying_worker_fails_only_its_own_jobs(pool: CancelPool, gate: Gate, how: str) -> None:
    if how == "external-sigkill":
        victim = pool.submit(_jobs.hold, gate.path, "victim", {"rows": 1})
    else:
        victim = pool.submit(_jobs.die, gate.path, how, {"rows": 1})
    bystander = pool.submit(_jobs.hold, gate.path, "bystander")
    neighbour = pool.submit(_jobs.hold, gate.path, "neighbour", {"rows": 2})
    first = {a.tag: a for a in gate.wait(3)}
    victim_tag = "victim" if how == "external-sigkill" else f"die-{how}"
    dead_pid = first[victim_tag].pid
    # Least loaded first: the victim and its neighbour share a worker, the bystander not.
    assert first["neighbour"].pid == dead_pid
    assert first["bystander"].pid != dead_pid
    assert dead_pid in worker_pids(pool)
    if how == "external-sigkill":
        os.kill(dead_pid, signal.SIGKILL)
    else:
        gate.release(first[victim_tag])  # it kills its worker

    expected = HOW.get(how, HOW["sigkill"])
    for handle, partial in ((victim, {"rows": 1}), (neighbour, {"rows": 2})):
        exc = handle.exception(BACKSTOP)
        assert isinstance(exc, WorkerCrashed), exc
        assert isinstance(exc, WorkerLost)
        assert f"pid {dead_pid}" in str(exc)
        assert expected in str(exc)
        assert exc.job_id == str(handle.id)
        assert exc.partial_result == partial
        assert handle.status is OperationStatus.FAILED

    # The other worker's job never noticed.
    assert not bystander.done()
    gate.release(first["bystander"])
    assert bystander.result(BACKSTOP) == first["bystander"].pid

    pids = assert_healthy(pool)
    assert dead_pid not in pids
    assert first["bystander"].pid in pids
    stats = pool.statistics()
    assert (stats.failed, stats.cancelled, stats.running, stats.queued) == (2, 0, 0, 0)


def test_the_pool_survives_many_deaths_in_a_row(pool: CancelPool, gate: Gate) -> None:
    seen: set[int] = set()
    for i in range(6):
        victim = pool.submit(_jobs.hold, gate.path, f"v{i}")
        [arrival] = gate.wait(1)
        seen.add(arrival.pid)
        os.kill(arrival.pid, signal.SIGKILL)
        assert isinstance(victim.exception(BACKSTOP), WorkerCrashed)
    assert len(seen) == 6
    assert not seen & assert_healthy(pool)


def test_retries_rerun_a_job_whose_worker_died(pool: CancelPool, tmp_path: Path) -> None:
    counter = tmp_path / "attempts"
    handle = pool.submit(_jobs.crash_until, str(counter), 2, retries=2)
    assert handle.result(BACKSTOP) == 3
    assert counter.read_text() == "3"
    assert handle.status is OperationStatus.COMPLETED
    assert_healthy(pool)


def test_retries_run_out(pool: CancelPool, tmp_path: Path) -> None:
    counter = tmp_path / "attempts"
    handle = pool.submit(_jobs.crash_until, str(counter), 99, retries=1)
    exc = handle.exception(BACKSTOP)
    assert isinstance(exc, WorkerCrashed)
    assert "exit code 3" in str(exc)
    assert counter.read_text() == "2"  # the first run and one retry
    stats = pool.statistics()
    assert (stats.submitted, stats.failed) == (1, 1)
    assert_healthy(pool)


def test_retries_rerun_a_long_job_whose_worker_was_killed(pool: CancelPool, gate: Gate) -> None:
    handle = pool.submit(_jobs.hold, gate.path, "long", retries=1)
    [first] = gate.wait(1)
    os.kill(first.pid, signal.SIGKILL)
    [again] = gate.wait(1)
    assert again.pid != first.pid
    gate.release(again)
    assert handle.result(BACKSTOP) == again.pid
    assert_healthy(pool)


def test_max_tasks_per_child_replaces_workers_and_loses_no_job(
    make_pool: Callable[..., CancelPool],
) -> None:
    pool = make_pool(max_tasks_per_child=2)
    first = worker_pids(pool)
    ran_on = [pool.submit(_jobs.where).result(BACKSTOP) for _ in range(12)]
    per_worker = collections.Counter(ran_on)
    assert max(per_worker.values()) <= 2
    assert len(per_worker) >= 6
    assert all(is_gone(pid) for pid in first)
    # Submitted all at once: every job still runs exactly once.
    handles = [pool.submit(_jobs.echo, i) for i in range(40)]
    assert [h.result(BACKSTOP) for h in handles] == list(range(40))
    stats = pool.statistics()
    assert (stats.submitted, stats.completed, stats.failed) == (52, 52, 0)
    # (No look at the workers' pids here: with 2 jobs per worker, one is always on its
    # way out, its replacement on its way in.)
    assert len(stats.workers) == 2


def test_max_tasks_per_child_bounds_jobs_submitted_together(
    make_pool: Callable[..., CancelPool],
) -> None:
    pool = make_pool(max_tasks_per_child=2)
    handles = [pool.submit(_jobs.where) for _ in range(10)]
    per_worker = collections.Counter(h.result(BACKSTOP) for h in handles)
    assert max(per_worker.values()) <= 2, per_worker


def test_max_memory_per_worker_recycles_the_worker_between_jobs(
    make_pool: Callable[..., CancelPool],
) -> None:
    pool = make_pool(workers=1, max_memory_per_worker=150 << 20)  # a fresh one: ~25 MB
    light = pool.submit(_jobs.where).result(BACKSTOP)
    assert pool.submit(_jobs.where).result(BACKSTOP) == light  # under the limit: kept
    # The supervisor reads a worker's RSS at most every MEMORY_CHECK_INTERVAL: the
    # hoarding job outlasts that, so a reading is due when it ends.
    heavy = pool.submit(_jobs.hoard, 200, 2 * MEMORY_CHECK_INTERVAL).result(BACKSTOP)
    after = [pool.submit(_jobs.where).result(BACKSTOP) for _ in range(3)]
    assert heavy not in after
    assert is_gone(heavy)
    stats = pool.statistics()
    assert (stats.completed, stats.failed) == (6, 0)
    assert_healthy(pool, workers=1)


def test_children_of_a_job_whose_worker_died_are_cancelled(pool: CancelPool, gate: Gate) -> None:
    root = pool.submit(_jobs.family, gate.path, 2, 1, name="root")
    arrivals = {a.job: a for a in gate.wait(5)}
    root_pid = arrivals[root.id].pid
    os.kill(root_pid, signal.SIGKILL)
    assert isinstance(root.exception(BACKSTOP), WorkerCrashed)
    survivors = [h for h in descendants(pool, root) if arrivals[h.id].pid != root_pid]
    assert survivors  # the family spans both workers
    for handle in survivors:
        exc = handle.exception(5.0)  # backstop: cancelling takes a millisecond
        assert isinstance(exc, JobCancelled)
        assert exc.reason is CancelationReason.PARENT


def test_an_orphans_outcome_never_reaches_a_job_on_the_replacement_worker(
    pool: CancelPool, gate: Gate
) -> None:
    first = pool.submit(_jobs.parent_of, gate.path, "one")
    a = gate.wait_tags(2)
    os.kill(a["parent-one"].pid, signal.SIGKILL)
    assert isinstance(first.exception(BACKSTOP), WorkerCrashed)
    second = pool.submit(_jobs.parent_of, gate.path, "two")
    b = gate.wait_tags(2)
    orphan = pool.get(a["one"].job)
    assert orphan is not None
    gate.release(a["one"])  # the orphan ends: its outcome is nobody's business now
    orphan.exception(BACKSTOP)  # (resolved once its outcome has been dealt with)
    gate.release(b["two"])
    assert second.result(BACKSTOP) == "two"


def _spare_pids(pool: CancelPool) -> list[int]:
    with pool._sup._lock:
        return [spare.pid for spare in pool._sup._ws.spares if spare.pid is not None]


def test_a_spare_worker_replaces_a_dead_one_and_is_replenished(
    make_pool: Callable[..., CancelPool], gate: Gate
) -> None:
    pool = make_pool(workers=2, spare_workers=1)
    assert pool.submit(_jobs.echo, 3).result(BACKSTOP) == 3  # the spare learns `echo`
    # Spares start in a background thread: wait for it (a backstop, not a sleep).
    deadline = time.monotonic() + BACKSTOP
    while not _spare_pids(pool) and time.monotonic() < deadline:
        time.sleep(0.005)
    [spare] = _spare_pids(pool)
    victim = pool.submit(_jobs.hold, gate.path, "victim")
    [arrived] = gate.wait(1)
    os.kill(arrived.pid, signal.SIGKILL)
    assert isinstance(victim.exception(BACKSTOP), WorkerCrashed)
    # The spare took the dead worker's place: the pool runs on the very process.
    assert spare in {w.pid for w in pool.statistics().workers}
    assert {pool.submit(_jobs.where).result(BACKSTOP) for _ in range(6)} <= {
        w.pid for w in pool.statistics().workers
    }
    deadline = time.monotonic() + BACKSTOP
    while not _spare_pids(pool) and time.monotonic() < deadline:
        time.sleep(0.005)
    [new_spare] = _spare_pids(pool)
    assert new_spare != spare
    pool.shutdown(wait=True)
    assert is_gone(new_spare)  # a spare does not outlive its pool

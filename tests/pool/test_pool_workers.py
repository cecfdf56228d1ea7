"""Worker processes: every start method, crashes, forced stops, replacements."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from _handshake import BACKSTOP, Gate
from cancelpool import (
    CancelPool,
    JobCancelled,
    OperationStatus,
    PoolError,
    WorkerCrashed,
    WorkerLost,
)

from . import _jobs

START_METHODS = [
    pytest.param(
        "fork",
        marks=pytest.mark.filterwarnings(
            # Python >= 3.12 warns about fork() in a process with threads (xdist's, the
            # supervisor's); the worker only runs its own event loop after the fork.
            "ignore:.*use of fork\\(\\) may lead to deadlocks:DeprecationWarning"
        ),
    ),
    "spawn",
    "forkserver",
]


@pytest.mark.parametrize("method", START_METHODS)
def test_every_start_method_runs_and_cancels_jobs(method: str, gate: Gate) -> None:
    with CancelPool(workers=1, start_method=method) as pool:
        facts = pool.submit(_jobs.where).result(BACKSTOP)
        assert facts["pid"] != os.getpid()
        assert pool.submit(_jobs.add_sync, 1, 2).result(BACKSTOP) == 3
        held = pool.submit(_jobs.hold, gate.path, partial=method)
        gate.wait(1)
        assert held.cancel() is True
        exc = held.exception(BACKSTOP)
        assert isinstance(exc, JobCancelled)
        assert exc.partial_result == method


def test_a_killed_worker_fails_only_its_own_jobs_and_is_replaced(
    pool: CancelPool, gate: Gate
) -> None:
    victim = pool.submit(_jobs.hold, gate.path, "victim")
    bystander = pool.submit(_jobs.hold, gate.path, "bystander")
    arrivals = {arrival.tag: arrival for arrival in gate.wait(2)}
    victim_pid = arrivals["victim"].pid
    assert victim_pid != arrivals["bystander"].pid  # one job per worker

    os.kill(victim_pid, signal.SIGKILL)
    exc = victim.exception(BACKSTOP)
    assert isinstance(exc, WorkerCrashed)
    assert isinstance(exc, WorkerLost)
    assert isinstance(exc, PoolError)
    assert f"pid {victim_pid}" in str(exc)
    assert "killed by signal 9" in str(exc)
    assert exc.job_id == str(victim.id)
    assert victim.status is OperationStatus.FAILED

    assert not bystander.done()
    gate.release(arrivals["bystander"])
    assert bystander.result(BACKSTOP) == "released"

    # The pool replaced the worker and goes on.
    pids = {pool.submit(_jobs.where).result(BACKSTOP)["pid"] for _ in range(4)}
    assert victim_pid not in pids
    workers = pool.statistics().workers
    assert len(workers) == 2
    assert victim_pid not in {w.pid for w in workers}
    assert all(w.pid is not None and psutil.pid_exists(w.pid) for w in workers)


def test_a_job_that_kills_its_own_worker(pool: CancelPool) -> None:
    handle = pool.submit(_jobs.kill_own_worker)
    exc = handle.exception(BACKSTOP)
    assert isinstance(exc, WorkerCrashed)
    assert "killed by signal 9" in str(exc)
    assert [pool.submit(_jobs.add, i, i).result(BACKSTOP) for i in range(3)] == [0, 2, 4]


def test_a_job_ignoring_its_cancellation_is_force_stopped(gate: Gate) -> None:
    with CancelPool(workers=1) as pool:
        stubborn = pool.submit(_jobs.stubborn, gate.path, {"rows": 12}, cancel_grace=0.3)
        bystander = pool.submit(_jobs.hold, gate.path, "bystander")
        arrivals = {arrival.tag: arrival for arrival in gate.wait(2)}
        assert stubborn.cancel("stop now") is True
        exc = stubborn.exception(BACKSTOP)
        assert isinstance(exc, JobCancelled)
        assert exc.forced is True
        assert exc.message == "stop now"
        assert exc.partial_result == {"rows": 12}  # its last checkpoint
        # The other job of that worker was lost with it, and says why.
        lost = bystander.exception(BACKSTOP)
        assert isinstance(lost, WorkerLost)
        assert not isinstance(lost, WorkerCrashed)
        assert f"force-stop job {stubborn.id}" in str(lost)
        assert not psutil.pid_exists(arrivals["stubborn"].pid) or (
            psutil.Process(arrivals["stubborn"].pid).status() == psutil.STATUS_ZOMBIE
        )
        assert pool.submit(_jobs.add, 1, 1).result(BACKSTOP) == 2  # a new worker


_SUPERVISOR_SCRIPT = """
import sys
from cancelpool import CancelPool
from pool import _jobs

if __name__ == "__main__":
    pool = CancelPool(workers=2).__enter__()
    handles = [pool.submit(_jobs.hold, sys.argv[1], f"job{i}") for i in range(2)]
    sys.stdin.read()  # until killed
"""


def test_workers_exit_when_the_supervisor_process_is_killed(gate: Gate, tmp_path: Path) -> None:
    script = tmp_path / "supervisor.py"
    script.write_text(_SUPERVISOR_SCRIPT)
    tests_dir = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests_dir), *sys.path])}
    supervisor = subprocess.Popen(
        [sys.executable, str(script), gate.path], stdin=subprocess.PIPE, env=env
    )
    try:
        workers = [psutil.Process(arrival.pid) for arrival in gate.wait(2)]
        assert len({w.pid for w in workers}) == 2
        supervisor.kill()
        supervisor.wait(BACKSTOP)
        # Nobody is left to report to: the workers exit on their own (no /dev/shm
        # residue either, checked after every test).
        _gone, alive = psutil.wait_procs(workers, timeout=BACKSTOP)
        assert alive == []
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(BACKSTOP)
        assert supervisor.stdin is not None
        supervisor.stdin.close()

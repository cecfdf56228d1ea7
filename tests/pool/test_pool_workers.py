"""Worker processes: every start method, crashes, forced stops, replacements."""

from __future__ import annotations

import multiprocessing
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

import _leaks
from _handshake import BACKSTOP, Gate, start_running
from cancelpool import (
    CancelPool,
    JobCancelled,
    OperationStatus,
    PoolError,
    WorkerCrashed,
    WorkerLost,
)
from cancelpool._pool._supervisor import NAP

from . import _jobs

# Seconds within which something that should happen "at once" must have happened. Far
# below BACKSTOP, so that an outcome that only arrives through a backstop (or never)
# fails the test; still generous against a loaded machine.
PROMPT = 10.0
# File descriptors held open before a pool starts: more than select() can watch.
MANY_FDS = 1100


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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_outlives_a_stop_signal_meant_for_its_pool(pool: CancelPool, signum: int) -> None:
    # systemd (KillMode=control-group), `kill -TERM -PGID`, supervisord's stopasgroup and
    # Ctrl-C signal every process of the group, the workers too. What becomes of their
    # jobs is the supervisor's decision (serve requeues them); a worker that died of the
    # signal first turned a requeue into WorkerCrashed. (A signal a process sends itself
    # is delivered before kill() returns.)
    pid = pool.submit(_jobs.signal_own_worker, signum).result(BACKSTOP)
    assert psutil.pid_exists(pid)
    assert pid in {w.pid for w in pool.statistics().workers}


def test_a_program_a_job_runs_does_not_inherit_ignored_stop_signals(pool: CancelPool) -> None:
    # exec keeps SIG_IGN: had the worker ignored SIGTERM that way, a job's subprocess
    # would ignore the terminate() that its own cancellation sends.
    mask = pool.submit(_jobs.ignored_signals_of_a_subprocess).result(BACKSTOP)
    assert not mask & (1 << (signal.SIGTERM - 1))
    assert not mask & (1 << (signal.SIGINT - 1))


def test_workers_outlive_their_fork_server(gate: Gate) -> None:
    # Under forkserver, multiprocessing's sentinel of a worker is a pipe from the fork
    # server: when the fork server died (a SIGTERM to the process group), every live
    # worker looked dead, its jobs failed with WorkerCrashed, and the workers were left
    # running. A worker is dead when its own pidfd says so.
    with CancelPool(workers=2, start_method="forkserver") as pool:
        held = [pool.submit(_jobs.hold, gate.path, f"held-{n}") for n in range(2)]
        arrivals = gate.wait(2)
        pids = {arrival.pid for arrival in arrivals}
        (fork_server,) = {psutil.Process(pid).parent() for pid in pids}
        assert fork_server is not None
        assert fork_server.pid != os.getpid()
        # Wait for its exit without reaping it (multiprocessing reaps its fork server).
        pidfd = os.pidfd_open(fork_server.pid)
        try:
            fork_server.send_signal(signal.SIGTERM)
            assert select.select([pidfd], [], [], PROMPT)[0], "the fork server did not exit"
        finally:
            os.close(pidfd)
        # A job placed after the fork server died runs on the same, live workers.
        assert pool.submit(_jobs.where).result(BACKSTOP)["pid"] in pids
        gate.release(*arrivals)
        assert [handle.result(BACKSTOP) for handle in held] == ["released", "released"]
        assert {w.pid for w in pool.statistics().workers} == pids
        assert pool.statistics().failed == 0


def test_a_worker_whose_fork_server_died_is_still_force_stopped(gate: Gate) -> None:
    # Once the fork server is dead, any poll of the children (active_children(), the
    # start of another worker) makes multiprocessing believe every worker exited, and
    # its kill() then sends nothing: a forced stop never came and terminate() hung.
    with CancelPool(workers=1, start_method="forkserver") as pool:
        stubborn = pool.submit(_jobs.stubborn, gate.path, {"rows": 3}, cancel_grace=0.3)
        (arrival,) = gate.wait(1)
        fork_server = psutil.Process(arrival.pid).parent()
        assert fork_server is not None
        pidfd = os.pidfd_open(fork_server.pid)
        try:
            fork_server.kill()
            assert select.select([pidfd], [], [], PROMPT)[0], "the fork server did not exit"
        finally:
            os.close(pidfd)
        multiprocessing.active_children()  # the poll that misreads every worker
        assert stubborn.cancel("stop now") is True
        exc = stubborn.exception(PROMPT)
        assert isinstance(exc, JobCancelled)
        assert exc.forced is True
        assert exc.partial_result == {"rows": 3}
        assert _leaks.is_gone(arrival.pid)


def test_a_process_a_job_forks_stops_on_sigterm(pool: CancelPool) -> None:
    # A fork without exec keeps signal handlers: the worker's "leave it to the
    # supervisor" handler must not make a job's own child ignore SIGTERM.
    status = pool.submit(_jobs.sigterm_a_forked_child).result(BACKSTOP)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGTERM


def test_a_job_that_kills_its_own_worker(pool: CancelPool) -> None:
    handle = pool.submit(_jobs.kill_own_worker)
    exc = handle.exception(BACKSTOP)
    assert isinstance(exc, WorkerCrashed)
    assert "killed by signal 9" in str(exc)
    assert [pool.submit(_jobs.add, i, i).result(BACKSTOP) for i in range(3)] == [0, 2, 4]


# A grace shorter than the supervisor's longest poll (NAP) wakes it when the force timer
# is armed; a longer one is found when the supervisor looks up on its own.
@pytest.mark.parametrize("grace", [0.3, NAP + 0.5], ids=["woken", "found-on-its-own"])
def test_a_job_ignoring_its_cancellation_is_force_stopped(gate: Gate, grace: float) -> None:
    with CancelPool(workers=1) as pool:
        stubborn = pool.submit(_jobs.stubborn, gate.path, {"rows": 12}, cancel_grace=grace)
        bystander = pool.submit(_jobs.hold, gate.path, "bystander")
        arrivals = {arrival.tag: arrival for arrival in gate.wait(2)}
        cancelled_at = time.monotonic()
        assert stubborn.cancel("stop now") is True
        exc = stubborn.exception(BACKSTOP)
        assert isinstance(exc, JobCancelled)
        assert exc.forced is True
        # On time: not before its grace, and not a whole nap late either.
        assert grace <= time.monotonic() - cancelled_at < grace + NAP / 2 + PROMPT / 10
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


# -- fds above 1023 -------------------------------------------------------------------------
def test_a_pool_works_with_more_than_1024_fds_open(gate: Gate) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = MANY_FDS + 512  # ours, plus the pool's pipes, sockets and pytest's own
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    fds: list[int] = []
    try:
        while len(fds) < MANY_FDS:
            fds.extend(os.pipe())
        with CancelPool(workers=2) as pool:
            assert pool.submit(_jobs.add, 1, 2).result(BACKSTOP) == 3
            # The scenario really happened: the supervisor watches fds above 1023.
            assert pool._sup._wakeup.fd > 1024
            held = start_running(pool, gate, "held", partial="half")
            assert held.cancel("fds") is True
            with pytest.raises(JobCancelled) as info:
                held.result(BACKSTOP)
            assert info.value.partial_result == "half"
            assert pool.submit(_jobs.add_sync, 2, 3).result(BACKSTOP) == 5
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- shutdown while the only worker dies with a job queued ---------------------------------
def test_shutdown_does_not_hang_when_the_only_worker_dies_with_a_job_queued(gate: Gate) -> None:
    pool = CancelPool(workers=1, concurrency=1)
    a = pool.submit(_jobs.exit_at_gate, gate.path, "a")
    [arrival] = gate.wait(1)
    b = pool.submit(_jobs.where)  # queued: the one worker runs A and takes one job
    assert b.status is OperationStatus.PENDING
    pool.shutdown(wait=False)  # closing from here on: no new worker "while running"
    gate.release(arrival)  # A ends its worker; B still waits for one
    closer = threading.Thread(target=pool.shutdown, kwargs={"wait": True}, daemon=True)
    closer.start()
    closer.join(BACKSTOP)  # backstop against the old hang
    assert not closer.is_alive(), f"shutdown(wait=True) still blocked after {BACKSTOP}s"
    assert isinstance(a.exception(0), WorkerCrashed)
    assert b.result(0)["pid"] != arrival.pid  # a replacement worker ran it


# -- a queued sync job does not hold up async jobs behind it ------------------------------
def test_a_queued_sync_job_does_not_block_an_async_job_behind_it(
    pool: CancelPool, gate: Gate
) -> None:
    long_jobs = [pool.submit(_jobs.hold, gate.path, f"long-{i}") for i in range(2)]
    arrivals = gate.wait(2)
    assert len({a.pid for a in arrivals}) == 2  # both workers are busy
    sync_job = pool.submit(_jobs.add_sync, 1, 2)  # needs an idle worker: waits
    quick = pool.submit(_jobs.add, 3, 4)
    assert quick.result(PROMPT) == 7
    assert sync_job.status is OperationStatus.PENDING
    assert all(not h.done() for h in long_jobs)  # the gate still holds them
    gate.release()
    assert [h.result(BACKSTOP) for h in long_jobs] == ["released", "released"]
    assert sync_job.result(BACKSTOP) == 3


# -- child request ids on a replacement worker --------------------------------------------
def test_children_of_a_job_on_a_replacement_worker_get_their_own_results(gate: Gate) -> None:
    # A long grace: the orphan below ignores its cancellation until the test lets it go,
    # and must not be force-stopped (with its worker) meanwhile.
    with CancelPool(workers=2, cancel_grace=BACKSTOP) as pool:
        first = pool.submit(_jobs.parent_of_shielded, gate.path, "one", 2)
        a = {arrival.tag: arrival for arrival in gate.wait(3)}
        dead_pid = a["parent-one"].pid
        orphans = [arrival for tag, arrival in a.items() if tag.startswith("one-")]
        survivors = [arrival for arrival in orphans if arrival.pid != dead_pid]
        assert survivors, "a child of the first parent runs on the other worker"
        os.kill(dead_pid, signal.SIGKILL)
        assert isinstance(first.exception(BACKSTOP), WorkerCrashed)

        second = pool.submit(_jobs.parent_of_shielded, gate.path, "two", 2)
        b = {arrival.tag: arrival for arrival in gate.wait(3)}
        replacement = b["parent-two"].pid
        assert replacement not in (dead_pid, survivors[0].pid)  # the new worker
        # The orphans end now, while the second parent's children (request ids 1 and 2
        # in the new process, as the dead one's were) are still waiting.
        gate.release(*orphans)
        for handle in [h for h in pool.jobs() if h.parent is first]:
            handle.exception(BACKSTOP)  # its outcome has been dealt with by now
        gate.release(b["two-0"], b["two-1"])
        assert second.result(BACKSTOP) == ["two-0", "two-1"]


def test_jobs_that_end_leave_no_reference_cycle_in_their_worker(
    make_pool: Callable[..., CancelPool], gate: Gate
) -> None:
    # A job its worker can only free with the garbage collector costs that worker a
    # pause per collection (measured: 0.15-0.4 s with 5,000 jobs ended at once), so
    # every way of ending is checked: the collector must find nothing of theirs.
    pool = make_pool(workers=1, initializer=_jobs.keep_garbage)
    assert pool.submit(_jobs.garbage_census).result(BACKSTOP) is not None  # the baseline
    assert pool.submit(_jobs.add, 1, 2).result(BACKSTOP) == 3
    assert pool.submit(_jobs.add_sync, 1, 2).result(BACKSTOP) == 3
    assert pool.submit(_jobs.report_and_return, 5, "v").result(BACKSTOP) == "v"
    with pytest.raises(_jobs.JobError):
        pool.submit(_jobs.fail, "boom").result(BACKSTOP)
    running = start_running(pool, gate, "cycle", partial=[1, 2])
    running.cancel()
    assert isinstance(running.exception(BACKSTOP), JobCancelled)
    assert pool.submit(_jobs.nap, 10.0, timeout=0.05).exception(BACKSTOP) is not None
    assert pool.submit(_jobs.garbage_census).result(BACKSTOP) == []

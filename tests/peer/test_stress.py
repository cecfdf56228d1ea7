"""Worker replacement under load: 1,000 replacements, random SIGKILLs, no false death.

Every job is recycled (``max_tasks_per_child=1``, one job per worker at a time), so each
job runs in a process of its own; a random few jobs ("victims") wait at the gate and
have their worker SIGKILLed there by the test. Then:

- every victim fails with a ``WorkerLost``-family error (its own worker really died);
- every other job succeeds: zero spurious ``WorkerCrashed`` (issue 9 item 2: a worker
  is dead only when its own sentinel says so);
- every handle resolves (no hung handle), and afterwards no worker process is left.

The run takes ~20-40 s on a 2-core machine (forkserver, the default start method;
replacing 1,000 spawned interpreters would take minutes).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import random
import signal
import threading
import time
from typing import Any

import pytest

from _handshake import BACKSTOP, Gate
from _leaks import is_gone
from cancelpool import CancelPool, WorkerLost

from . import _jobs

REPLACEMENTS = 1000
WORKERS = 2
# One job in VICTIM_EVERY (on average) has its worker killed under it: enough kills
# (~50) to interleave with the recycling everywhere, few enough that the run is about
# replacements by recycling, as the issue asks.
VICTIM_EVERY = 20
# Seconds for the whole batch to resolve: a deadlock backstop, several times the
# expected run time on a loaded 2-core machine.
BATCH_BACKSTOP = 240.0


@pytest.mark.slow
@pytest.mark.timeout(BATCH_BACKSTOP + 60)
def test_replacements_under_load_no_false_death(gate: Gate) -> None:
    seed = int(os.environ.get("PEER_STRESS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    # A worker's first job replaces nobody: WORKERS more jobs than replacements.
    count = REPLACEMENTS + WORKERS
    victims = {i for i in range(count) if rng.randrange(VICTIM_EVERY) == 0}
    killed: dict[str, int] = {}  # victim tag -> pid of the worker the test killed
    collector_error: list[BaseException] = []

    def kill_victims() -> None:
        try:
            for _ in range(len(victims)):
                (arrival,) = gate.wait(1)
                # The victim waits at the gate for "go": its worker is alive and busy
                # with it, so this pid is the victim's own worker (no pid reuse).
                os.kill(arrival.pid, signal.SIGKILL)
                killed[arrival.tag] = arrival.pid
                gate.release(arrival)
        except BaseException as exc:  # reported by the test thread
            collector_error.append(exc)

    started = time.monotonic()
    with CancelPool(
        workers=WORKERS, concurrency=1, max_tasks_per_child=1, history=0, spare_workers=1
    ) as pool:
        killer = threading.Thread(target=kill_victims, name="peer-stress-killer")
        killer.start()
        handles: list[cf.Future[Any]] = []
        for i in range(count):
            handles.append(pool.submit(*_job(i, i in victims, gate.path)))
        _done, not_done = cf.wait(handles, timeout=BATCH_BACKSTOP)
        killer.join(BACKSTOP)
        elapsed = time.monotonic() - started
        stats = pool.statistics()
    context = f"seed={seed}, {len(victims)} victims, {elapsed:.1f}s, {stats}"
    assert not collector_error, f"{collector_error!r} ({context})"
    assert not not_done, f"{len(not_done)} handles never resolved ({context})"

    spurious = []
    pids: list[int] = []
    for i, handle in enumerate(handles):
        error = handle.exception(timeout=0)
        if i in victims:
            assert isinstance(error, WorkerLost), f"victim {i}: {error!r} ({context})"
            continue
        if error is not None:
            spurious.append((i, error))
            continue
        tag, pid = handle.result(timeout=0)
        assert tag == str(i)
        pids.append(pid)
    assert not spurious, f"{len(spurious)} jobs failed without a kill: {spurious[:5]} ({context})"
    assert len(killed) == len(victims)
    # Recycling: every job ran in a worker of its own.
    assert len(set(pids)) == len(pids), f"a worker ran two jobs ({context})"
    replacements = len(pids) + len(killed) - WORKERS
    assert replacements >= REPLACEMENTS, context
    # No orphan: every worker that ran a job is gone (the autouse check then looks for
    # any child process at all).
    alive = [pid for pid in (*pids, *killed.values()) if not is_gone(pid)]
    assert not alive, f"workers still running after shutdown: {alive[:10]} ({context})"
    print(f"\n{replacements} replacements, {len(killed)} kills in {elapsed:.1f}s ({context})")


def _job(i: int, victim: bool, gate: str) -> tuple[Any, ...]:
    """Half the jobs are async, half plain; a victim waits at the gate to be killed."""
    if victim:
        return (_jobs.blocked_async if i % 2 else _jobs.blocked, gate, str(i))
    return (_jobs.tag_and_pid_async if i % 2 else _jobs.tag_and_pid, str(i))

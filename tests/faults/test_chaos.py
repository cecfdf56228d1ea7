"""Fault injection: thousands of jobs with random durations, cancels, timeouts, children,
stubborn jobs and SIGKILLs of busy workers. Whatever happens, every handle resolves
exactly once, the counters add up, nothing hangs and nothing is left behind.

The run is reproducible: its seed is printed; ``CHAOS_SEED=<seed>`` replays it (the
order of events inside the pool still depends on the machine).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import random
import signal
import threading
import time
from typing import Any

import pytest

from _handshake import BACKSTOP
from cancelpool import (
    CancelationReason,
    CancelPool,
    JobCancelled,
    JobHandle,
    OperationStatus,
    WorkerLost,
)

from . import _jobs
from ._util import is_gone

JOBS = 2000
KILLS = 5
# Seconds for everything submitted to resolve once the submitting is over: a backstop
# against a hang (the run takes a few seconds).
RESOLVE_BACKSTOP = 60.0


class Recorder:
    """Counts done callbacks and progress events per handle (any thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: collections.Counter[int] = collections.Counter()
        self.progress: collections.Counter[int] = collections.Counter()
        self.progress_after_done: list[int] = []

    def on_done(self, handle: JobHandle[Any]) -> None:
        with self.lock:
            self.done[handle.id] += 1

    def on_progress(self, job_id: int, message: str, metadata: dict[str, Any]) -> None:
        with self.lock:
            self.progress[job_id] += 1


def pick_duration(rng: random.Random) -> float:
    """Mostly tiny sleeps, now and then a longer one."""
    roll = rng.random()
    if roll < 0.6:
        return 0.0
    if roll < 0.9:
        return rng.uniform(0.0, 0.01)
    if roll < 0.98:
        return rng.uniform(0.01, 0.1)
    return rng.uniform(0.1, 0.5)


def test_chaos(caplog: pytest.LogCaptureFixture) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.SystemRandom().randrange(2**32)))
    print(f"chaos seed: {seed} (replay with CHAOS_SEED={seed})")
    rng = random.Random(seed)
    caplog.set_level(logging.WARNING)
    recorder = Recorder()
    kill_at = set(rng.sample(range(100, JOBS), KILLS))

    handles: list[JobHandle[Any]] = []
    expected: dict[int, int] = {}  # job id -> the value a completed job returns
    timeouts: dict[int, float] = {}
    cancelled_by_us: set[int] = set()
    stubborn: list[JobHandle[Any]] = []
    killed: list[int] = []
    pattern_hits = 0
    started = time.monotonic()

    pool = CancelPool(workers=2, cancel_grace=0.2, history=100_000)
    with pool:
        for i in range(JOBS):
            roll = rng.random()
            timeout = rng.uniform(0.001, 0.05) if rng.random() < 0.1 else None
            name = f"chaos-{i}"
            if roll < 0.03:
                handle = pool.submit(_jobs.chaos_sync, i, pick_duration(rng), name=name)
            elif roll < 0.035:
                handle = pool.submit(_jobs.chaos_stubborn, i, name=f"stubborn-{i}")
                stubborn.append(handle)
            elif roll < 0.15:
                handle = pool.submit(
                    _jobs.chaos,
                    i,
                    pick_duration(rng),
                    rng.randint(1, 3),
                    pick_duration(rng),
                    rng.random() < 0.5,  # awaits its children
                    name=name,
                    timeout=timeout,
                )
            else:
                handle = pool.submit(_jobs.chaos, i, pick_duration(rng), name=name, timeout=timeout)
            handle.add_done_callback(recorder.on_done)
            handle.on_progress(recorder.on_progress)
            handles.append(handle)
            expected[handle.id] = i
            if timeout is not None:
                timeouts[handle.id] = timeout

            if rng.random() < 0.08:  # cancel a random recent job, maybe already done
                victim = rng.choice(handles[-50:])
                if victim.cancel("chaos"):
                    cancelled_by_us.add(victim.id)
            if stubborn and rng.random() < 0.05:
                victim = stubborn.pop(0)
                if victim.cancel("chaos"):
                    cancelled_by_us.add(victim.id)
            if rng.random() < 0.002:  # by pattern: the ten jobs chaos-<i//10>?
                prefix = f"chaos-{i // 10}"
                live = {h.id for h in pool.jobs(f"{prefix}?") if not h.done()}
                pattern_hits += pool.cancel_all(f"{prefix}?", message="chaos pattern")
                cancelled_by_us.update(live)
            if i in kill_at:
                busiest = max(pool.statistics().workers, key=lambda w: w.running)
                if busiest.pid is not None:
                    try:
                        os.kill(busiest.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass  # it just died anyway (a forced stop of a stubborn job)
                    else:
                        killed.append(busiest.pid)
            if i % 100 == 99:
                # Keep the backlog bounded so that kills hit running jobs, not a queue.
                concurrent.futures.wait(handles[-200:-100], timeout=RESOLVE_BACKSTOP)

        for victim in stubborn:
            if victim.cancel("chaos, at the end"):
                cancelled_by_us.add(victim.id)
        submitted_in = time.monotonic() - started
        _done, not_done = concurrent.futures.wait(handles, timeout=RESOLVE_BACKSTOP)
        assert not not_done, f"{len(not_done)} handles unresolved after {RESOLVE_BACKSTOP}s"
        children = [h for h in pool.jobs() if h.parent is not None]
        _, children_not_done = concurrent.futures.wait(children, timeout=RESOLVE_BACKSTOP)
        assert not children_not_done, f"{len(children_not_done)} child jobs unresolved"
        resolved_in = time.monotonic() - started

        # Exactly once: one done callback per handle, and never a second one later.
        with recorder.lock:
            counts = dict(recorder.done)
        assert all(counts.get(h.id) == 1 for h in handles), {
            h.id: counts.get(h.id) for h in handles if counts.get(h.id) != 1
        }

        # The counters add up.
        stats = pool.statistics()
        every = pool.jobs()
        assert stats.submitted == len(handles) + len(children) == len(every)
        assert (stats.running, stats.queued) == (0, 0)
        assert stats.completed + stats.cancelled + stats.failed == stats.submitted
        by_status = collections.Counter(h.status for h in every)
        counted = collections.Counter(
            {
                OperationStatus.COMPLETED: stats.completed,
                OperationStatus.CANCELLED: stats.cancelled,
                OperationStatus.FAILED: stats.failed,
            }
        )
        assert by_status == +counted  # (+ drops the zero counts)

        # Every outcome is one that this run can explain.
        outcomes: collections.Counter[str] = collections.Counter()
        for handle in handles:
            exc = handle.exception(0)
            if handle.status is OperationStatus.COMPLETED:
                assert exc is None
                assert handle.result(0) == expected[handle.id]
                outcomes["completed"] += 1
            elif handle.status is OperationStatus.CANCELLED:
                assert isinstance(exc, JobCancelled)
                if handle.id not in cancelled_by_us:
                    assert handle.id in timeouts, (handle, exc.reason, exc.message)
                    assert exc.reason is CancelationReason.TIMEOUT, (handle, exc.message)
                outcomes[f"cancelled {exc.reason.value}{' forced' if exc.forced else ''}"] += 1
            else:
                # Only a worker's death (a kill, or a forced stop of a stubborn job) fails
                # a job here: its own, or one of its children's.
                assert isinstance(exc, WorkerLost), (handle, repr(exc))
                outcomes[type(exc).__name__] += 1
        for child in children:  # nobody cancels a child but its parent's end
            exc = child.exception(0)
            if child.status is OperationStatus.CANCELLED:
                assert exc.reason is CancelationReason.PARENT, (child, exc.message)
                outcomes["child cancelled parent"] += 1
            elif child.status is OperationStatus.FAILED:
                assert isinstance(exc, WorkerLost), (child, repr(exc))
                outcomes[f"child {type(exc).__name__}"] += 1
            else:
                assert child.result(0) >= 0.0
                outcomes["child completed"] += 1
        print(
            f"chaos: {len(handles)} jobs + {len(children)} children, {len(killed)} workers "
            f"killed, {pattern_hits} cancelled by pattern; submitted in {submitted_in:.1f}s, "
            f"all resolved after {resolved_in:.1f}s; {dict(sorted(outcomes.items()))}"
        )
        assert outcomes["completed"] > JOBS // 2

        # The pool is healthy: the supervisor runs, both workers are live and work.
        assert pool._sup.thread is not None
        assert pool._sup.thread.is_alive()
        pids = {w.pid for w in pool.statistics().workers}
        assert not pids & set(killed)
        assert all(pid is not None and not is_gone(pid) for pid in pids)
        ran_on = {pool.submit(_jobs.where).result(BACKSTOP) for _ in range(40)}
        assert ran_on <= pids

    assert all(is_gone(pid) for pid in killed)
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name != "hypothesis"]
    assert not problems, [r.getMessage() for r in problems]

"""The supervisor's registry: ``jobs()``, ``get()``, ``statistics()``, bounded history.

Each test has its own pool: the counters must not see other tests' jobs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from _handshake import BACKSTOP, Gate, start_running
from cancelpool import CancelPool, OperationStatus, PoolStatistics, WorkerStatistics

from . import _jobs


def test_statistics_add_up(gate: Gate, tmp_path: Path) -> None:
    with CancelPool(workers=2, concurrency=1) as pool:
        assert [pool.submit(_jobs.add, i, 1).result(BACKSTOP) for i in range(3)] == [1, 2, 3]
        assert isinstance(pool.submit(_jobs.fail, "x").exception(BACKSTOP), _jobs.JobError)
        running = [start_running(pool, gate, f"r{i}") for i in range(2)]  # both workers busy
        queued = [pool.submit(_jobs.touch, str(tmp_path / f"q{i}")) for i in range(3)]
        assert queued[2].cancel() is True

        stats = pool.statistics()
        assert isinstance(stats, PoolStatistics)
        assert (stats.submitted, stats.running, stats.queued) == (9, 2, 2)
        assert (stats.completed, stats.failed, stats.cancelled) == (3, 1, 1)
        assert (
            stats.running + stats.queued + stats.completed + stats.failed + stats.cancelled
            == stats.submitted
        )
        assert len(stats.workers) == 2
        assert all(isinstance(w, WorkerStatistics) for w in stats.workers)
        pids = [w.pid for w in stats.workers]
        assert all(isinstance(pid, int) for pid in pids)
        assert len(set(pids)) == 2
        assert [w.running for w in stats.workers] == [1, 1]
        assert sum(w.completed for w in stats.workers) == 4  # the queued one never had one

        with pytest.raises(dataclasses.FrozenInstanceError):
            stats.completed = 0  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            stats.workers[0].running = 0  # type: ignore[misc]

        gate.release()
        assert [h.result(BACKSTOP) for h in running] == ["released"] * 2
        assert [h.result(BACKSTOP) for h in queued[:2]] == ["ran"] * 2
        final = pool.statistics()
        assert (final.submitted, final.running, final.queued) == (9, 0, 0)
        assert (final.completed, final.failed, final.cancelled) == (7, 1, 1)
        assert sum(w.running for w in final.workers) == 0
        assert sum(w.completed for w in final.workers) == 8
        assert stats.completed == 3  # a snapshot, not a live view


def test_jobs_and_get(gate: Gate) -> None:
    with CancelPool(workers=1) as pool:
        a = pool.submit(_jobs.add, 1, 1, name="user_1_a")
        b = pool.submit(_jobs.add, 2, 2, name="user_1_b", metadata={"owner": 1})
        c = pool.submit(_jobs.add, 3, 3)  # named after its function
        assert [h.result(BACKSTOP) for h in (a, b, c)] == [2, 4, 6]
        live = start_running(pool, gate, "live", name="user_1_live")

        assert c.name == "add"
        assert b.metadata == {"owner": 1}
        assert set(pool.jobs()) == {a, b, c, live}
        assert set(pool.jobs(name_pattern="user_1_*")) == {a, b, live}
        assert set(pool.jobs(name_pattern="user_?_[ab]")) == {a, b}
        assert set(pool.jobs(status=OperationStatus.COMPLETED)) == {a, b, c}
        assert pool.jobs(status=OperationStatus.RUNNING) == [live]
        assert set(pool.jobs("user_1_*", OperationStatus.COMPLETED)) == {a, b}
        assert pool.jobs(name_pattern="nobody_*") == []

        assert pool.get(a.id) is a
        assert pool.get(live.id) is live
        assert pool.get(10**9) is None
        assert live.status is OperationStatus.RUNNING
        assert live.context.status is OperationStatus.RUNNING
        assert live.context.name == "user_1_live"
        gate.release()
        assert live.result(BACKSTOP) == "released"
        assert pool.get(live.id) is live  # finished jobs stay in the history


def test_history_is_bounded() -> None:
    with CancelPool(workers=1, history=3) as pool:
        handles = [pool.submit(_jobs.add, i, 0) for i in range(6)]
        assert [h.result(BACKSTOP) for h in handles] == list(range(6))
        assert pool.jobs() == handles[3:]
        assert [pool.get(h.id) for h in handles] == [None, None, None, *handles[3:]]
        assert pool.statistics().completed == 6  # the counters do not forget

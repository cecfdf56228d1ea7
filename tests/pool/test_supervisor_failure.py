"""Never a hang, never a false death: the supervisor thread's failures and the workers'
deaths as the supervisor tells them."""

from __future__ import annotations

from typing import Any

import pytest

from _handshake import BACKSTOP, Gate
from cancelpool import CancelPool, JobCancelled, PoolBroken, WorkerLost
from cancelpool._pool import _poll

from . import _jobs


def test_a_supervisor_that_cannot_go_on_resolves_every_handle_with_pool_broken(
    monkeypatch: pytest.MonkeyPatch, gate: Gate
) -> None:
    with CancelPool(workers=1) as pool:
        running = pool.submit(_jobs.hold, gate.path)
        gate.wait(1)

        def broken_poll(*args: Any) -> Any:
            raise OSError("poll failed")

        # White-box: the one way to make the supervisor's own loop fail for real.
        monkeypatch.setattr(_poll.Watch, "wait", broken_poll)
        queued = pool.submit(_jobs.add, 1, 1)  # wakes the supervisor, whose poll fails
        for handle in (running, queued):
            exc = handle.exception(BACKSTOP)
            assert isinstance(exc, PoolBroken), repr(exc)
            assert "supervisor thread failed" in str(exc)
            assert isinstance(exc.__cause__, OSError)
        with pytest.raises(PoolBroken, match="supervisor thread failed"):
            pool.submit(_jobs.add, 1, 1)
        monkeypatch.undo()


@pytest.mark.parametrize("spares", [0, 1], ids=["no-spare", "spare"])
def test_recycling_every_job_never_declares_a_live_worker_dead(spares: int) -> None:
    # Each job's worker is replaced after it; the replacement's pipes reuse the fd
    # numbers of the buried worker. Before: an event of an old fd read as the new
    # worker's death now and then ("WorkerCrashed ... (exit code None)"), and that
    # worker was orphaned. The leftover check of the fixture catches the orphan.
    with CancelPool(workers=2, max_tasks_per_child=1, spare_workers=spares) as pool:
        handles = [pool.submit(_jobs.square, i) for i in range(120)]
        outcomes = [h.exception(BACKSTOP) for h in handles]
    lost = [repr(exc) for exc in outcomes if isinstance(exc, WorkerLost)]
    assert not lost, lost
    assert [h.result(0) for h in handles] == [i * i for i in range(120)]


def test_terminate_stops_at_once(gate: Gate) -> None:
    pool = CancelPool(workers=2)
    running = pool.submit(_jobs.hold, gate.path)
    gate.wait(1)
    queued = [pool.submit(_jobs.add, 1, i) for i in range(3)]
    pool.terminate()
    exc = running.exception(0)  # resolved by the time terminate() returns
    # Cancelled: by its own hand if it saw its token before the kill, else forced.
    assert isinstance(exc, JobCancelled), repr(exc)
    assert exc.message == "the pool was terminated"
    for handle in queued:
        assert handle.done()
    pool.terminate()  # again: harmless
    pool.shutdown()

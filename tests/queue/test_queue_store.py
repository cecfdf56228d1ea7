"""The stores' writes as the server makes them, on both stores: the fences of the
state machine, without a server in between."""

from __future__ import annotations

from typing import Any

from cancelpool.queue import JobStatus, Queue
from cancelpool.queue._records import Outcome

ADD = "cancelpool.demo_tasks:add"


def _claim_all(store: Any, owner: str) -> list[int]:
    claimed, refused = store.claim(owner, 100, ["cancelpool.demo_tasks:*"])
    assert refused == 0
    return [job.id for job in claimed]


def test_a_completion_after_an_acknowledged_cancel_is_stored_cancelled(queue: Queue) -> None:
    store: Any = queue.store
    parent = queue.submit(ADD, 1, 2)
    plain = queue.submit(ADD, 3, 4)
    assert _claim_all(store, "node-a") == [parent, plain]
    child = queue.submit(ADD, 5, 6, parent=parent)
    outcome = queue.cancel_jobs([parent])
    assert outcome.requested == (parent,)
    assert outcome.cancelled == (child,)  # queued: cancelled on the spot
    # The job returned before its node could stop it: the cancel counted still holds.
    cascade = store.record_outcomes(
        "node-a",
        [Outcome(parent, "completed", result="3"), Outcome(plain, "completed", result="7")],
    )
    assert cascade == [parent]
    got = queue.get(parent)
    assert got is not None
    assert (got.status, got.result, got.partial_result) == (JobStatus.CANCELLED, None, 3)
    assert got.cancel_reason == "manual"
    other = queue.get(plain)
    assert other is not None
    assert (other.status, other.result) == (JobStatus.COMPLETED, 7)


def test_an_outcome_of_a_node_that_lost_the_claim_changes_nothing(queue: Queue) -> None:
    store: Any = queue.store
    job = queue.submit(ADD, 1, 2)
    assert _claim_all(store, "node-a") == [job]
    assert store.record_outcomes("node-b", [Outcome(job, "completed", result="3")]) == []
    assert queue.get(job).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert store.owned("node-a") == {job}
    assert store.record_outcomes("node-a", [Outcome(job, "completed", result="3")]) == []
    # Final: a second write (a retried one, a stale node) moves nothing.
    assert store.record_outcomes("node-a", [Outcome(job, "failed", error="late")]) == []
    done = queue.get(job)
    assert done is not None
    assert (done.status, done.result, done.error) == (JobStatus.COMPLETED, 3, None)

"""Cascades across processes: cancelling a job, for any reason, cancels every
descendant wherever it runs (reason PARENT); children never outlive their parent;
children's progress reaches the parent's handle and the parent job's own callbacks."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest

from _handshake import BACKSTOP, Arrival, Gate, wait_until
from cancelpool import (
    CancelationReason,
    CancelPool,
    JobCancelled,
    OperationStatus,
    WorkerCrashed,
)

from . import _jobs
from ._util import descendants

# Seconds a job with a timeout may run before it is cancelled, in the tests that cancel
# a family by timeout. The family (5 jobs on 2 workers) is complete within a few ms;
# this is the margin against a loaded machine, and each such test waits this long.
FAMILY_TIMEOUT = 2.0


def start_family(pool: CancelPool, gate: Gate, **options: Any) -> tuple[Any, dict[int, Arrival]]:
    """Submit a root with 2 children and 1 grandchild each; return the root's handle
    once every member has announced itself (arrivals by job id)."""
    wait_for_children = options.pop("wait_for_children", True)
    root = pool.submit(_jobs.family, gate.path, 2, 1, wait_for_children, **options)
    arrivals = {arrival.job: arrival for arrival in gate.wait(5)}
    tags = sorted(arrival.tag for arrival in arrivals.values())
    assert tags == ["child", "child", "grand", "grand", "root"]
    assert arrivals.keys() == {root.id, *(h.id for h in descendants(pool, root))}
    # The family spans both workers: the cascade has to cross processes.
    assert len({arrival.pid for arrival in arrivals.values()}) == 2
    return root, arrivals


def names_job(message: str, job_id: int) -> bool:
    return re.search(rf"\bjob {job_id}\b", message) is not None


def assert_cascaded(pool: CancelPool, root: Any, what: str, *, others: int = 0) -> None:
    """Every descendant of ``root`` ended cancelled, reason PARENT, its message naming
    its parent and what happened to it; the grandchildren kept their partial results."""
    family = descendants(pool, root)
    assert len(family) == 4
    for handle in family:
        exc = handle.exception(BACKSTOP)
        assert isinstance(exc, JobCancelled), (handle, exc)
        assert exc.reason is CancelationReason.PARENT, (handle, exc.message)
        assert handle.status is OperationStatus.CANCELLED
        assert names_job(exc.message, handle.parent.id), exc.message
        if handle.parent is root:
            assert what in exc.message, exc.message
        else:
            assert exc.partial_result == {"leaf": handle.id}
    stats = pool.statistics()
    assert (stats.running, stats.queued) == (others, 0)


def test_manual_cancel_of_the_root_cancels_the_whole_family(pool: CancelPool, gate: Gate) -> None:
    root, _ = start_family(pool, gate, name="root")
    assert root.cancel("enough") is True
    exc = root.exception(BACKSTOP)
    assert isinstance(exc, JobCancelled)
    assert exc.reason is CancelationReason.MANUAL
    assert exc.message == "enough"
    assert_cascaded(pool, root, "was cancelled (manual)")


def test_cancel_all_by_pattern_cancels_the_matching_roots_families(
    pool: CancelPool, gate: Gate
) -> None:
    root, _ = start_family(pool, gate, name="report-42")
    bystander = pool.submit(_jobs.hold, gate.path, "bystander", name="other-42")
    [held] = gate.wait(1)
    assert pool.cancel_all("report-*") == 1
    assert root.exception(BACKSTOP).reason is CancelationReason.MANUAL
    assert_cascaded(pool, root, "was cancelled (manual)", others=1)
    assert not bystander.done()
    gate.release(held)
    assert bystander.result(BACKSTOP) == held.pid


def test_cancelling_an_ancestor_from_the_caller_reaches_great_grandchildren(
    pool: CancelPool, gate: Gate
) -> None:
    top = pool.submit(_jobs.hold_forever, gate.path, "top", name="top")
    gate.wait(1)
    root, _ = start_family(pool, gate, name="root", parent=top)
    assert top.cancel() is True
    assert top.exception(BACKSTOP).reason is CancelationReason.MANUAL
    exc = root.exception(BACKSTOP)
    assert exc.reason is CancelationReason.PARENT
    assert names_job(exc.message, top.id)
    assert_cascaded(pool, root, "was cancelled (parent)")


def test_the_roots_own_timeout_cancels_the_family(pool: CancelPool, gate: Gate) -> None:
    # The root waits at the gate (never released) rather than awaiting its children.
    root, _ = start_family(pool, gate, name="root", timeout=FAMILY_TIMEOUT, wait_for_children=False)
    exc = root.exception(BACKSTOP)
    assert isinstance(exc, JobCancelled)
    assert exc.reason is CancelationReason.TIMEOUT
    assert_cascaded(pool, root, "was cancelled (timeout)")


def test_the_roots_own_timeout_while_awaiting_children_cancels_them_as_parent(
    pool: CancelPool, gate: Gate
) -> None:
    root, _ = start_family(pool, gate, name="root", timeout=FAMILY_TIMEOUT)
    assert root.exception(BACKSTOP).reason is CancelationReason.TIMEOUT
    assert_cascaded(pool, root, "was cancelled (timeout)")


def test_a_grandchilds_message_names_the_cancelled_ancestor_and_its_reason(
    pool: CancelPool, gate: Gate
) -> None:
    root, _ = start_family(pool, gate, name="root")
    root.cancel("enough")
    grandchildren = [h for h in descendants(pool, root) if h.parent is not root]
    assert len(grandchildren) == 2
    for handle in grandchildren:
        exc = handle.exception(BACKSTOP)
        assert exc.reason is CancelationReason.PARENT
        assert names_job(exc.message, root.id), exc.message
        assert "manual" in exc.message, exc.message


def test_a_childs_own_timeout_cancels_only_that_child_and_below(
    pool: CancelPool, gate: Gate
) -> None:
    root = pool.submit(_jobs.lone_child_with_timeout, gate.path, FAMILY_TIMEOUT)
    arrivals = gate.wait_tags(3)  # root, child, grand (all announce without waiting)
    child = pool.get(arrivals["child"].job)
    grand = pool.get(arrivals["grand"].job)
    assert child is not None
    assert grand is not None
    assert child.parent is root
    assert grand.parent is child

    exc = child.exception(BACKSTOP)
    assert isinstance(exc, JobCancelled)
    assert exc.reason is CancelationReason.TIMEOUT
    grand_exc = grand.exception(BACKSTOP)
    assert grand_exc.reason is CancelationReason.PARENT
    assert names_job(grand_exc.message, child.id)
    assert "timeout" in grand_exc.message

    # The root heard its child's cancellation and went on: it is still running.
    [after] = gate.wait(1)
    assert after.tag == "root-after"
    assert root.status is OperationStatus.RUNNING
    gate.release(after)
    assert root.result(BACKSTOP) == {"type": "JobCancelled", "reason": "timeout"}


def test_children_never_outlive_a_parent_that_returns(pool: CancelPool, gate: Gate) -> None:
    root, arrivals = start_family(pool, gate, name="root", wait_for_children=False)
    gate.release(next(a for a in arrivals.values() if a.tag == "root"))
    assert root.result(BACKSTOP) == "returned"
    assert_cascaded(pool, root, "completed")


def test_a_child_submitted_by_the_caller_with_parent(pool: CancelPool, gate: Gate) -> None:
    parent = pool.submit(_jobs.hold_forever, gate.path, "parent", name="parent")
    gate.wait(1)
    child = pool.submit(_jobs.child_of_caller, gate.path, parent=parent, name="adopted")
    grandchild = pool.submit(_jobs.child_of_caller, gate.path, parent=child)
    gate.wait(2)
    assert parent.cancel("caller says stop") is True
    for handle, ancestor in ((child, parent), (grandchild, child)):
        exc = handle.exception(BACKSTOP)
        assert isinstance(exc, JobCancelled)
        assert exc.reason is CancelationReason.PARENT
        assert names_job(exc.message, ancestor.id)
    # A child of a job that has ended never starts.
    late = pool.submit(_jobs.where, parent=parent)
    exc = late.exception(BACKSTOP)
    assert exc.reason is CancelationReason.PARENT
    assert names_job(exc.message, parent.id)
    assert late.started_at is None


def test_a_caller_submitted_child_never_outlives_its_parent(pool: CancelPool, gate: Gate) -> None:
    parent = pool.submit(_jobs.hold, gate.path, "parent")
    [held] = gate.wait(1)
    child = pool.submit(_jobs.child_of_caller, gate.path, parent=parent)
    gate.wait(1)
    gate.release(held)
    assert parent.result(BACKSTOP) == held.pid
    exc = child.exception(BACKSTOP)
    assert exc.reason is CancelationReason.PARENT
    assert "completed" in exc.message


class Heard:
    """A progress callback that records events and says when ``expected`` arrived."""

    def __init__(self, expected: int) -> None:
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.expected = expected
        self.complete = threading.Event()

    def __call__(self, job_id: int, message: str, metadata: dict[str, Any]) -> None:
        self.events.append((job_id, message, metadata))
        if len(self.events) >= self.expected:
            self.complete.set()


@pytest.mark.parametrize("grandchild", [False, True], ids=["child", "grandchild"])
def test_progress_of_descendants_reaches_the_parents_handle(
    pool: CancelPool, gate: Gate, grandchild: bool
) -> None:
    root = pool.submit(_jobs.reporting_parent, gate.path, grandchild)
    heard = Heard(2 if grandchild else 1)
    root.on_progress(heard)  # before the child exists: the root first submits it
    [done] = gate.wait(1)
    assert heard.complete.wait(BACKSTOP), f"only {heard.events} within {BACKSTOP}s (backstop)"
    gate.release(done)
    root.result(BACKSTOP)
    ids = {h.name: h.id for h in descendants(pool, root)}
    child = ids["reporter"]
    expected = [(child, "child says", {"from": "child", "job": child})]
    if grandchild:
        grand = ids["grand-reporter"]
        expected.append((grand, "grandchild says", {"from": "grand", "job": grand}))
    assert heard.events == expected


def test_progress_of_a_child_reaches_the_parent_jobs_own_callbacks(
    pool: CancelPool, gate: Gate
) -> None:
    root = pool.submit(_jobs.reporting_parent, gate.path, False)
    gate.wait(1)
    gate.release()
    heard = root.result(BACKSTOP)
    [child] = descendants(pool, root)
    assert heard == [[str(child.id), "child says", {"from": "child", "job": child.id}]]


def test_progress_of_a_grandchild_reaches_the_grandparent_jobs_own_callbacks(
    pool: CancelPool, gate: Gate
) -> None:
    root = pool.submit(_jobs.reporting_parent, gate.path, True)
    gate.wait(1)
    gate.release()
    heard = root.result(BACKSTOP)
    ids = {h.name: h.id for h in descendants(pool, root)}
    grand = ids["grand-reporter"]
    assert [str(grand), "grandchild says", {"from": "grand", "job": grand}] in heard


# Seconds a parent gets to see the outcome of its child before the test calls it a hang:
# a backstop (it takes about a millisecond), short because these did hang once.
OUTCOME_BACKSTOP = 5.0


def test_a_parent_awaiting_a_child_whose_worker_died_hears_of_it(
    pool: CancelPool, gate: Gate
) -> None:
    parent = pool.submit(_jobs.parent_of, gate.path, "kid")
    arrivals = gate.wait_tags(2)
    assert arrivals["kid"].pid != arrivals["parent-kid"].pid
    os.kill(arrivals["kid"].pid, signal.SIGKILL)
    child = pool.get(arrivals["kid"].job)
    assert isinstance(child.exception(BACKSTOP), WorkerCrashed)
    assert isinstance(parent.exception(OUTCOME_BACKSTOP), WorkerCrashed)


def test_a_parent_awaiting_a_child_cancelled_while_queued_hears_of_it(
    make_pool: Callable[..., CancelPool], gate: Gate
) -> None:
    pool = make_pool(workers=1, concurrency=1)  # the child waits in the queue
    parent = pool.submit(_jobs.parent_of, gate.path, "kid")
    gate.wait(1)
    # The parent goes on once it has sent its child; the pool registers it soon after.
    [child] = wait_until(lambda: descendants(pool, parent), "the child is registered")
    assert child.status is OperationStatus.PENDING
    assert pool.cancel(child) is True
    assert isinstance(child.exception(BACKSTOP), JobCancelled)
    exc = parent.exception(OUTCOME_BACKSTOP)
    assert isinstance(exc, JobCancelled)


def test_a_child_queued_behind_a_sync_job_still_runs(
    make_pool: Callable[..., CancelPool], gate: Gate
) -> None:
    pool = make_pool(workers=1)
    parent = pool.submit(_jobs.child_after_gate, gate.path)
    [arrival] = gate.wait(1)
    sync = pool.submit(_jobs.where_sync)  # needs the worker to itself: queued
    gate.release(arrival)  # the parent now starts its child, queued behind `sync`
    assert parent.result(OUTCOME_BACKSTOP) == "child ran"
    assert sync.result(BACKSTOP) == arrival.pid

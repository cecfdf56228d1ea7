"""The inline test mode (``CancelPool(inline=True)``) reports the same job events as a
real pool, on its event-loop thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cancelpool import (
    CancelationReason,
    CancelPool,
    JobCancelled,
    JobFinished,
    JobProgress,
    JobStarted,
    JobSubmitted,
)
from pool import _jobs

from ._collect import Collector


@pytest.fixture
def inline() -> Iterator[tuple[CancelPool, Collector]]:
    pool = CancelPool(inline=True)
    seen = Collector()
    pool.subscribe(seen)
    with pool:
        yield pool, seen


def test_inline_jobs_are_submitted_started_report_and_finish(
    inline: tuple[CancelPool, Collector],
) -> None:
    pool, seen = inline
    handle = pool.submit(_jobs.report_and_return, 2, "done", name="reporter")
    assert handle.result() == "done"
    [finished] = seen.wait_for(JobFinished)
    assert seen.kinds_of_job(handle.id) == [
        "JobSubmitted",
        "JobStarted",
        "JobProgress",
        "JobProgress",
        "JobFinished",
    ]
    assert seen.of(JobSubmitted)[0].name == "reporter"
    assert seen.of(JobStarted)[0].attempt == 1
    assert [p.progress for p in seen.of(JobProgress)] == [{"i": 0}, {"i": 1}]
    assert finished.outcome == "succeeded"
    assert finished.duration is not None
    assert seen.threads == {"cancelpool-inline"}


def test_inline_failures_and_cancellations_finish_with_their_outcome(
    inline: tuple[CancelPool, Collector],
) -> None:
    pool, seen = inline
    failing = pool.submit(_jobs.fail, "broken on purpose")
    with pytest.raises(_jobs.JobError):
        failing.result()
    sleeper = pool.submit(_jobs.nap, 60)
    seen.wait_for(JobStarted, lambda e: e.job_id == sleeper.id)
    sleeper.cancel("enough")
    with pytest.raises(JobCancelled):
        sleeper.result()
    [failed, cancelled] = seen.wait_for(JobFinished, count=2)
    assert failed.outcome == "failed"
    assert failed.message is not None
    assert "broken on purpose" in failed.message
    assert cancelled.outcome == "cancelled"
    assert cancelled.reason is CancelationReason.MANUAL
    assert cancelled.message == "enough"
    assert cancelled.cancel_latency is not None

"""CancelPool(inline=True), the test mode: the pool's own behaviour tests, run again on
inline pools.

The test functions of the real-pool modules are imported here, so pytest collects them
a second time; their pools are then inline ones: the fixtures (``shared_pool``,
``pool``, ``make_pool``) are this module's, and the ``CancelPool`` their modules call is
swapped for one that is always inline (``_inline_everywhere``). One body of assertions
checks both modes. The tests about processes (a pid, a worker killed) are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cancelpool import CancelPool, JobCancelled, PoolBroken

from . import (
    test_pool_async,
    test_pool_cancel,
    test_pool_errors,
    test_pool_progress,
    test_pool_results,
)
from .test_pool_async import *  # noqa: F403
from .test_pool_cancel import *  # noqa: F403
from .test_pool_errors import *  # noqa: F403
from .test_pool_progress import *  # noqa: F403
from .test_pool_results import *  # noqa: F403

MODULES = (
    test_pool_async,
    test_pool_cancel,
    test_pool_errors,
    test_pool_progress,
    test_pool_results,
)

#: Behaviour that exists only with worker processes.
PROCESS_ONLY = (
    "test_async_job_runs_in_the_workers_event_loop",  # another pid
    "test_sync_job_runs_in_a_worker_thread_with_its_operation",  # another pid
    # its job kills its own process (here: the test's) to be retried
    "test_a_retried_attempt_is_not_cut_short_by_the_first_attempts_timeout",
    # it counts on the pipe's latency: in-process, all 30 reports can be made before
    # the test attaches its callback
    "test_a_plain_function_reports_progress_from_its_thread",
)
for _name in PROCESS_ONLY:
    del globals()[_name]


class InlinePool(CancelPool):
    """What ``CancelPool(...)`` makes in the imported tests' modules here."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, inline=True, **options)


@pytest.fixture(autouse=True)
def _inline_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in MODULES:
        if hasattr(module, "CancelPool"):
            monkeypatch.setattr(module, "CancelPool", InlinePool)


@pytest.fixture(scope="module")
def shared_pool() -> Iterator[CancelPool]:
    pool = CancelPool(workers=2, inline=True).__enter__()
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_running=True)


@pytest.fixture
def pool_options() -> dict[str, Any]:
    return {"workers": 2, "inline": True}


def test_an_inline_pool_starts_no_process_and_no_thread_outlives_it() -> None:
    import threading

    import psutil

    from . import _jobs

    children = set(psutil.Process().children(recursive=True))
    threads = set(threading.enumerate())
    with CancelPool(workers=2, inline=True) as pool:
        assert pool.submit(_jobs.add, 1, 2).result(10) == 3
        assert pool.submit(_jobs.add_sync, 1, 2).result(10) == 3
        assert set(psutil.Process().children(recursive=True)) == children
        assert "inline" in repr(pool)
        inline_thread = pool._sup.thread  # white-box: the thread whose end proves the stop
    assert inline_thread is not None
    assert not inline_thread.is_alive()
    assert {t for t in threading.enumerate() if not t.daemon} <= threads


def test_inline_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="inline must be True or False"):
        CancelPool(inline="yes")  # type: ignore[arg-type]


# -- what only the inline pool has to show ------------------------------------------------------
def test_a_job_that_ignores_its_cancel_resolves_as_forced(gate: Any) -> None:
    from . import _jobs

    with CancelPool(workers=1, inline=True, cancel_grace=0.2) as pool:
        handle = pool.submit(_jobs.stubborn, gate.path, {"pages": 3})
        gate.wait(1)
        assert handle.cancel("stop now") is True
        exc = handle.exception(test_pool_cancel.BACKSTOP)
        assert isinstance(exc, JobCancelled)
        assert exc.forced is True
        assert exc.message == "stop now"
        assert exc.partial_result == {"pages": 3}
        gate.release()  # its code, which nothing can kill in-process, ends now


def test_a_failing_initializer_breaks_the_inline_pool(caplog: pytest.LogCaptureFixture) -> None:
    from . import _jobs

    with (
        caplog.at_level("ERROR", logger="cancelpool"),
        CancelPool(
            workers=1, inline=True, initializer=_jobs.failing_initializer, initargs=("no db",)
        ) as pool,
    ):
        # The initializer runs as the pool starts: a submit that comes after it failed
        # raises at once, one that comes before fails its job (both are the real pool's
        # behaviour, and which comes first is a race).
        try:
            exc = pool.submit(_jobs.add, 1, 1).exception(test_pool_cancel.BACKSTOP)
        except PoolBroken as raised:
            exc = raised
        assert isinstance(exc, PoolBroken)
        assert "initializer failing_initializer failed" in str(exc)
        assert "no db" in str(exc.__cause__)
        with pytest.raises(PoolBroken, match="initializer"):
            pool.submit(_jobs.add, 1, 1)
    assert "no db" in caplog.text


def test_the_initializer_runs_once_before_any_job() -> None:
    from . import _jobs

    with CancelPool(workers=1, inline=True, initializer=_jobs.initialize, initargs=(7,)) as pool:
        seen = pool.submit(_jobs.initialized).result(test_pool_cancel.BACKSTOP)
    assert seen[-1][1] == (7,)


@pytest.mark.anyio
async def test_the_callers_context_does_not_reach_the_job(shared_pool: CancelPool) -> None:
    # A job submitted from a trio task still runs on the pool's asyncio loop (sniffio
    # reads a context variable: the caller's must not leak into the job).
    from . import _jobs

    assert await shared_pool.submit(_jobs.nap, 0.001, "slept") == "slept"

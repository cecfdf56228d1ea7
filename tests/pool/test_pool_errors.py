"""Misuse fails at the call site with a sentence that says what to do, and the pool stays
usable; a job whose result cannot travel fails alone, and nothing hangs."""

from __future__ import annotations

import math
import pickle
import threading
from datetime import timedelta
from typing import Any

import pytest

from _handshake import BACKSTOP, Gate
from cancelpool import (
    CancelationReason,
    CancelPool,
    JobCancelled,
    OperationStatus,
    PoolClosed,
    PoolError,
    TimeoutCancelation,
)

from . import _jobs

# Seconds within which something that should happen "at once" must have happened. Far
# below BACKSTOP, so that an outcome that only arrives through a backstop (or never)
# fails the test; still generous against a loaded machine.
PROMPT = 10.0


@pytest.fixture
def still_usable(shared_pool: CancelPool) -> Any:
    """After the test: the pool still runs jobs."""
    yield shared_pool
    assert shared_pool.submit(_jobs.add, 40, 2).result(BACKSTOP) == 42


MODULE_LAMBDA = lambda: 1  # noqa: E731 - the point: even at module level, no name


def test_a_lambda_is_refused(still_usable: CancelPool) -> None:
    # The pickle error's own type, chained to it, as concurrent.futures raises it.
    with pytest.raises(
        pickle.PicklingError,
        match=r"^Cannot submit <lambda>: job functions must be importable module-level "
        r"functions \(pickle failed: ",
    ) as info:
        still_usable.submit(MODULE_LAMBDA)
    assert isinstance(info.value.__cause__, pickle.PicklingError)
    with pytest.raises(
        (pickle.PicklingError, AttributeError),
        match=r"^Cannot submit test_a_lambda_is_refused\.<locals>\.<lambda>: job functions "
        r"must be importable module-level functions",
    ) as info:
        still_usable.submit(lambda: 1)
    assert type(info.value.__cause__) is type(info.value)


def test_a_closure_is_refused(still_usable: CancelPool) -> None:
    offset = 1

    async def inner(x: int) -> int:
        return x + offset

    # Pickle refuses a local object with an AttributeError ("Can't pickle local
    # object"): that type, chained, with the sentence that says what to do.
    with pytest.raises(
        AttributeError,
        match=r"^Cannot submit test_a_closure_is_refused\.<locals>\.inner: job functions must "
        r"be importable module-level functions",
    ) as info:
        still_usable.submit(inner, 1)
    assert isinstance(info.value.__cause__, AttributeError)
    assert "local object" in str(info.value.__cause__)


def test_something_not_callable_is_refused(still_usable: CancelPool) -> None:
    with pytest.raises(TypeError, match="it is not callable"):
        still_usable.submit(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs"), [((threading.Lock(),), {}), ((), {"b": threading.Lock()})]
)
def test_an_unpicklable_argument_is_refused(
    still_usable: CancelPool, args: Any, kwargs: Any
) -> None:
    with pytest.raises(
        TypeError,
        match=r"^Cannot submit add: its arguments cannot be pickled \(.*lock.*\); pass plain "
        r"data or importable objects",
    ):
        still_usable.submit(_jobs.add, *args, **kwargs)
    assert still_usable.jobs(name_pattern="add", status=OperationStatus.PENDING) == []


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (-math.inf, ValueError),
        (True, TypeError),
        ("1", TypeError),
        ([1], TypeError),
    ],
)
def test_a_bad_timeout_is_refused(
    still_usable: CancelPool, timeout: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"^timeout must be a (finite )?number of seconds"):
        still_usable.submit(_jobs.add, 1, 1, timeout=timeout)


@pytest.mark.parametrize("timeout", [0, 0.0, timedelta(0)])
def test_a_timeout_of_zero_has_already_passed(still_usable: CancelPool, timeout: Any) -> None:
    # One rule for seconds everywhere (cancelpool._core._validate): 0 is a deadline
    # that has passed, as with Cancelable(timeout=0) and anyio.fail_after(0).
    exc = still_usable.submit(_jobs.nap, BACKSTOP, timeout=timeout).exception(BACKSTOP)
    assert isinstance(exc, JobCancelled)
    assert exc.reason is CancelationReason.TIMEOUT


def test_a_timeout_may_be_a_timedelta(still_usable: CancelPool) -> None:
    assert still_usable.submit(_jobs.add, 1, 1, timeout=timedelta(minutes=1)).result(BACKSTOP) == 2


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"name": 42}, "name must be a string"),
        ({"metadata": [1]}, "metadata must be a dict"),
        ({"parent": 3}, "parent must be a JobHandle"),
    ],
)
def test_bad_submit_options_are_refused(
    still_usable: CancelPool, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(TypeError, match=match):
        still_usable.submit(_jobs.add, 1, 1, **options)


@pytest.mark.parametrize("call", ["cancel_all", "jobs"])
def test_a_bad_name_pattern_is_refused(still_usable: CancelPool, call: str) -> None:
    method = getattr(still_usable, call)
    with pytest.raises(TypeError, match=r"name_pattern must be a glob string like 'user_42_\*'"):
        method(name_pattern=42)
    with pytest.raises(TypeError, match="name_pattern must be a glob string"):
        method(name_pattern=b"user_*")
    with pytest.raises(ValueError, match=r"name_pattern is empty .* use '\*' for all jobs"):
        method(name_pattern="")


def test_cancel_all_refuses_a_bad_status(still_usable: CancelPool) -> None:
    with pytest.raises(TypeError, match="status must be an OperationStatus"):
        still_usable.cancel_all(status="running")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"workers": 0},
        {"workers": True},
        {"workers": 1.5},
        {"concurrency": 0},
        {"start_method": "teleport"},
        {"cancel_grace": -1},
        {"history": -1},
    ],
)
def test_bad_pool_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError), match="must be"):
        CancelPool(**options)


def test_submit_after_shutdown_raises_pool_closed() -> None:
    with CancelPool(workers=1) as pool:
        assert pool.submit(_jobs.add, 1, 1).result(BACKSTOP) == 2
    for submit in (
        lambda: pool.submit(_jobs.add, 1, 1),
        lambda: pool.map(_jobs.square, [1]),
    ):
        with pytest.raises(PoolClosed, match="shut down; create a new one") as info:
            submit()
        assert isinstance(info.value, PoolError)
        assert isinstance(info.value, RuntimeError)
    pool.shutdown()  # again: harmless


def test_submit_to_a_pool_shut_down_before_it_started() -> None:
    pool = CancelPool(workers=1)
    pool.shutdown()
    with pytest.raises(PoolClosed):
        pool.submit(_jobs.add, 1, 1)


def test_a_result_that_cannot_be_pickled_fails_that_job(still_usable: CancelPool) -> None:
    handle = still_usable.submit(_jobs.unpicklable_result)
    exc = handle.exception(BACKSTOP)
    assert isinstance(exc, TypeError)
    assert f"the result of job {handle.id} (lock) cannot be pickled" in str(exc)
    assert "return picklable data" in str(exc)
    assert handle.status is OperationStatus.FAILED


# -- a child result that cannot be unpickled in the parent's worker ------------------------
def test_a_child_result_that_cannot_be_unpickled_fails_the_await_promptly(
    pool: CancelPool,
) -> None:
    parent = pool.submit(_jobs.await_unreadable_child)
    outcome = parent.result(PROMPT)  # well before any backstop: no hang
    assert outcome.startswith("RuntimeError")
    assert "could not be read in this worker" in outcome
    assert "refuses to be unpickled" in outcome
    [child] = [h for h in pool.jobs() if h.parent is parent]
    assert child.status is OperationStatus.FAILED


# -- an inner timeout the job does not catch ----------------------------------------------
def test_an_escaping_inner_timeout_fails_the_job(shared_pool: CancelPool) -> None:
    handle = shared_pool.submit(_jobs.inner_timeout_escapes, 0.05)
    exc = handle.exception(BACKSTOP)
    assert isinstance(exc, TimeoutCancelation)
    assert isinstance(exc, TimeoutError)
    assert not isinstance(exc, JobCancelled)
    assert handle.status is OperationStatus.FAILED


# -- a parent from another pool ----------------------------------------------------------
def test_a_parent_from_another_pool_is_refused(pool: CancelPool, gate: Gate) -> None:
    parent = pool.submit(_jobs.hold, gate.path, "parent")
    [arrival] = gate.wait(1)
    with CancelPool(workers=1) as other:
        assert other.submit(_jobs.add, 1, 1).result(BACKSTOP) == 2
        before = other.statistics()
        with pytest.raises(ValueError, match="another CancelPool"):
            other.submit(_jobs.add, 2, 2, parent=parent)
        assert other.statistics() == before
        assert [h.id for h in other.jobs() if h.status is not OperationStatus.COMPLETED] == []
    unstarted = CancelPool(workers=1)
    with pytest.raises(ValueError, match="another CancelPool"):
        unstarted.submit(_jobs.add, 2, 2, parent=parent)
    assert all(w.pid is None for w in unstarted.statistics().workers)  # never started
    unstarted.shutdown()
    assert pool.jobs() == [parent]  # no child was registered with the parent's pool
    gate.release(arrival)
    assert parent.result(BACKSTOP) == "released"

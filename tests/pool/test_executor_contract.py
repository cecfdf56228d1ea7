"""The ``concurrent.futures.Executor`` contract, where users switching from
``ProcessPoolExecutor`` rely on it: exceptions as raised, pickle errors keep their
type, a lazy ``map``, ``initializer=``, ``max_workers=`` and ``mp_context=``."""

from __future__ import annotations

import gc
import itertools
import logging
import multiprocessing
import pickle
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

from _handshake import BACKSTOP
from cancelpool import (
    CancelPool,
    OperationStatus,
    PoolBroken,
    PoolError,
    WorkerCrashed,
    WorkerDied,
    WorkerLost,
    WorkerStarted,
)
from cancelpool._pool._supervisor import MAX_INIT_DEATHS

from . import _jobs


@pytest.mark.parametrize("fn", [_jobs.raise_base, _jobs.raise_base_async], ids=["sync", "async"])
@pytest.mark.parametrize("kind", [SystemExit, KeyboardInterrupt], ids=lambda k: k.__name__)
def test_a_base_exception_a_job_raises_is_what_result_raises(
    shared_pool: CancelPool, fn: Any, kind: type[BaseException]
) -> None:
    handle = shared_pool.submit(fn, kind.__name__)
    with pytest.raises(kind) as info:
        handle.result(BACKSTOP)
    assert type(info.value) is kind
    assert handle.status is OperationStatus.FAILED
    assert shared_pool.submit(_jobs.add, 1, 1).result(BACKSTOP) == 2  # the worker went on


def test_a_result_that_fails_to_pickle_keeps_its_error_type_chained(
    shared_pool: CancelPool,
) -> None:
    handle = shared_pool.submit(_jobs.return_refusing_to_pickle)
    exc = handle.exception(BACKSTOP)
    assert type(exc) is pickle.PicklingError
    assert f"the result of job {handle.id} (RefusesToPickle) cannot be pickled" in str(exc)
    assert "this result refuses to be pickled" in str(exc.__cause__)  # the worker's traceback


def test_system_exit_while_unpickling_a_result_fails_that_job_and_the_pool_goes_on(
    shared_pool: CancelPool,
) -> None:
    # Before: the SystemExit killed the supervisor thread and result() hung for ever.
    handle = shared_pool.submit(_jobs.return_exiting_on_unpickle)
    exc = handle.exception(BACKSTOP)
    assert isinstance(exc, PoolError)
    assert "could not be unpickled" in str(exc)
    assert type(exc.__cause__) is SystemExit
    assert shared_pool.submit(_jobs.add, 2, 2).result(BACKSTOP) == 4


def test_a_done_callback_raising_system_exit_does_not_stop_the_pool(
    shared_pool: CancelPool, caplog: pytest.LogCaptureFixture
) -> None:
    def leave(_: Any) -> None:
        raise SystemExit("from a done callback")

    handle = shared_pool.submit(_jobs.add, 1, 2)
    handle.add_done_callback(leave)
    with caplog.at_level(logging.ERROR, logger="cancelpool"):
        assert handle.result(BACKSTOP) == 3
        assert shared_pool.submit(_jobs.add, 3, 3).result(BACKSTOP) == 6


def test_map_is_lazy_over_an_endless_iterable(shared_pool: CancelPool) -> None:
    results = shared_pool.map(_jobs.square, itertools.count(), buffersize=4)
    assert list(itertools.islice(results, 6)) == [0, 1, 4, 9, 16, 25]
    results.close()  # the jobs read ahead are cancelled


def test_map_lets_go_of_each_result_once_consumed() -> None:
    # history=0: the pool keeps no finished handle either.
    with CancelPool(workers=1, history=0) as pool:
        _check_map_lets_go(pool)


def _check_map_lets_go(pool: CancelPool) -> None:
    results = pool.map(_jobs.box, range(4), buffersize=2)
    first = next(results)
    assert first.value == 0
    ref = weakref.ref(first)
    del first
    assert next(results).value == 1
    gc.collect()
    assert ref() is None, "map() still holds a result it has yielded"
    assert [box.value for box in results] == [2, 3]


def test_map_refuses_a_bad_buffersize(shared_pool: CancelPool) -> None:
    with pytest.raises(ValueError, match="buffersize must be an int >= 1"):
        shared_pool.map(_jobs.square, [1], buffersize=0)


def test_the_initializer_runs_once_in_each_worker() -> None:
    with CancelPool(max_workers=2, initializer=_jobs.initialize, initargs=(1, "a")) as pool:
        seen = [pool.submit(_jobs.initialized).result(BACKSTOP) for _ in range(6)]
    for calls in seen:
        [(_pid, args)] = calls
        assert args == (1, "a")


def test_a_failing_initializer_breaks_the_pool_without_respawning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="cancelpool"),
        CancelPool(
            workers=2, initializer=_jobs.failing_initializer, initargs=("no config",)
        ) as pool,
    ):
        handle = pool.submit(_jobs.add, 1, 1)
        exc = handle.exception(BACKSTOP)
        assert isinstance(exc, PoolBroken)
        assert "initializer failing_initializer failed" in str(exc)
        assert "no config" in str(exc.__cause__)
        with pytest.raises(PoolBroken, match="initializer"):
            pool.submit(_jobs.add, 1, 1)
    assert "no config" in caplog.text


def test_an_initializer_that_exits_its_worker_breaks_the_pool_without_respawning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # It raises nothing the worker could report: the pool respawned workers about 20
    # times a second, failing each job with WorkerCrashed. MAX_INIT_DEATHS workers in
    # a row that die before their initializer returns break the pool.
    starts: list[object] = []
    with (
        caplog.at_level(logging.ERROR, logger="cancelpool"),
        CancelPool(workers=1, initializer=_jobs.exiting_initializer, initargs=(3,)) as pool,
    ):
        pool.subscribe(
            lambda event: starts.append(event) if isinstance(event, WorkerStarted) else None
        )
        # The first job is lost with the first worker; the replacements die too, and
        # the pool breaks: submit() raises from then on.
        error = pool.submit(_jobs.add, 1, 1).exception(BACKSTOP)
        assert isinstance(error, (WorkerCrashed, PoolBroken)), error
        deadline = time.monotonic() + BACKSTOP
        while True:
            try:
                handle = pool.submit(_jobs.add, 1, 1)
            except PoolBroken as exc:
                broken = exc
                break
            assert isinstance(handle.exception(BACKSTOP), (WorkerCrashed, PoolBroken))
            assert time.monotonic() < deadline, "the pool kept respawning workers"
        assert "exited while running the pool's initializer exiting_initializer" in str(broken)
        assert "exit code 3" in str(broken)
    assert len(starts) <= MAX_INIT_DEATHS + 1  # the last replacement, killed at once
    assert "exited while running the pool's initializer" in caplog.text


@pytest.mark.parametrize("exit_code", [None, 4], ids=["raises", "exits"])
def test_an_initializer_failing_in_spares_breaks_the_pool_instead_of_respawning_them(
    tmp_path: Path, exit_code: int | None
) -> None:
    # Spares run the initializer too. The first process passes; every later one (the
    # spares, started again as each died) failed unseen, for as long as the pool ran.
    deaths: list[object] = []
    marker = str(tmp_path / "held")
    with CancelPool(
        workers=1,
        spare_workers=1,
        initializer=_jobs.first_process_only,
        initargs=(marker, exit_code),
    ) as pool:
        pool.subscribe(
            lambda event: deaths.append(event) if isinstance(event, WorkerDied) else None
        )
        deadline = time.monotonic() + BACKSTOP
        while True:
            try:
                handle = pool.submit(_jobs.add, 1, 1)
            except PoolBroken as exc:
                broken = exc
                break
            outcome = handle.exception(BACKSTOP)
            assert outcome is None or isinstance(outcome, (WorkerLost, PoolBroken)), outcome
            assert time.monotonic() < deadline, "the pool kept starting spares"
        assert "initializer first_process_only" in str(broken)
    assert len(deaths) <= MAX_INIT_DEATHS + 2


def test_an_initializer_that_does_not_pickle_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Cannot use .*<lambda> as the initializer"):
        CancelPool(workers=1, initializer=lambda: None)


def test_max_workers_and_mp_context_are_accepted() -> None:
    context = multiprocessing.get_context("spawn")
    with CancelPool(max_workers=1, mp_context=context) as pool:
        assert pool.submit(_jobs.add, 2, 3).result(BACKSTOP) == 5
        assert len(pool.statistics().workers) == 1
    with pytest.raises(TypeError, match="not both"):
        CancelPool(workers=1, max_workers=1)
    with pytest.raises(TypeError, match="not both"):
        CancelPool(start_method="spawn", mp_context=context)

"""Bad input, generated: odd names and patterns, huge payloads, arguments and results
that cannot travel, progress metadata that cannot be encoded. Each fails with a clear
error on that call or that job only; the pool stays healthy (one pool per test, shared
by all the examples hypothesis tries, on purpose)."""

from __future__ import annotations

import glob
import pickle
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _handshake import BACKSTOP, Gate
from cancelpool import CancelationReason, CancelPool, JobCancelled, OperationStatus
from cancelpool._pool._protocol import MAX_FRAME

from . import _jobs

EXAMPLES = settings(
    max_examples=30,
    deadline=None,  # each example is a round trip through real processes
    database=None,  # no .hypothesis/ directory in the work tree
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Glob metacharacters and friends, mixed into arbitrary text (lone surrogates are refused
# as names and patterns: see the surrogate tests below).
odd_text = st.text(
    alphabet=st.one_of(
        st.sampled_from("*?[]!^-\\/. \n\t\x00"),
        st.characters(exclude_categories=("Cs",)),
    ),
    max_size=24,
)


def assert_healthy(pool: CancelPool) -> None:
    assert pool._sup.thread is not None
    assert pool._sup.thread.is_alive()
    handles = [pool.submit(_jobs.echo, i) for i in range(4)]
    assert [h.result(BACKSTOP) for h in handles] == [0, 1, 2, 3]


@EXAMPLES
@given(name=odd_text)
def test_odd_names_run_and_match_themselves_escaped(pool: CancelPool, name: str) -> None:
    handle = pool.submit(_jobs.echo, name, name=name)
    assert handle.result(BACKSTOP) == name
    assert handle.name == name
    if name:
        assert handle in pool.jobs(glob.escape(name))
    else:
        with pytest.raises(ValueError, match="name_pattern is empty"):
            pool.jobs(name)


@EXAMPLES
@given(name=odd_text.filter(bool))
def test_cancel_all_by_an_escaped_odd_name_cancels_exactly_that_job(
    pool: CancelPool, name: str
) -> None:
    with Gate() as gate:
        target = pool.submit(_jobs.hold_forever, gate.path, "target", name=name)
        other = pool.submit(_jobs.hold, gate.path, "other", name=f"{name}x")
        held = gate.wait_tags(2)
        assert pool.cancel_all(glob.escape(name)) == 1
        exc = target.exception(BACKSTOP)
        assert isinstance(exc, JobCancelled)
        assert exc.reason is CancelationReason.MANUAL
        assert not other.done()
        gate.release(held["other"])
        assert other.result(BACKSTOP) == held["other"].pid


@EXAMPLES
@given(pattern=odd_text)
def test_any_pattern_is_matched_or_refused_clearly(pool: CancelPool, pattern: str) -> None:
    pool.submit(_jobs.echo, 1, name="keep-me").result(BACKSTOP)
    if not pattern:
        with pytest.raises(ValueError, match="name_pattern is empty"):
            pool.cancel_all(pattern)
        return
    assert pool.cancel_all(pattern) == 0  # nothing is running
    assert isinstance(pool.jobs(pattern), list)
    assert_healthy(pool)


def test_names_and_patterns_of_the_wrong_type_are_refused(pool: CancelPool) -> None:
    with pytest.raises(TypeError, match="name must be a string"):
        pool.submit(_jobs.echo, 1, name=b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="glob string"):
        pool.cancel_all(42)  # type: ignore[arg-type]
    assert pool.statistics().submitted == 0
    assert_healthy(pool)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@EXAMPLES
@given(value=json_like)
def test_arbitrary_data_travels_both_ways(pool: CancelPool, value: Any) -> None:
    result = pool.submit(_jobs.echo, value).result(BACKSTOP)
    assert pickle.dumps(result) == pickle.dumps(value)  # (NaN != NaN, bytes do compare)


@pytest.mark.parametrize("size", [1 << 20, 64 << 20], ids=["1MiB", "64MiB"])
def test_huge_arguments_results_and_progress(pool: CancelPool, size: int) -> None:
    blob = b"a" * size
    assert pool.submit(_jobs.echo, blob).result(BACKSTOP) == blob
    assert pool.submit(_jobs.sized, size).result(BACKSTOP) == b"r" * size
    heard: list[int] = []
    handle = pool.submit(_jobs.report_big, size // 16)
    handle.on_progress(lambda job_id, message, meta: heard.append(len(meta["blob"])))
    assert handle.result(BACKSTOP) == size // 16
    assert heard == [size // 16]  # reported before the job ended, so delivered before
    assert pool.statistics().failed == 0
    assert_healthy(pool)


def test_arguments_beyond_the_frame_limit_are_refused_at_submit(
    make_pool: Callable[..., CancelPool],
) -> None:
    pool = make_pool(workers=1, cancel_grace=0.1)
    blob = b"a" * (MAX_FRAME + 1)
    started = time.monotonic()
    try:
        with pytest.raises((TypeError, ValueError), match=r"too large|exceeds"):
            pool.submit(_jobs.echo, blob)
    finally:
        del blob
        print(f"submit of a {MAX_FRAME + 1}-byte argument: {time.monotonic() - started:.1f}s")
    assert_healthy(pool)


class _Boom(Exception):
    pass


@EXAMPLES
@given(
    error=st.sampled_from([ValueError, RuntimeError, KeyError, _Boom, RecursionError]),
    message=st.text(max_size=40),
)
def test_an_argument_whose_reduce_raises_is_refused_at_submit(
    pool: CancelPool, error: type[BaseException], message: str
) -> None:
    before = pool.statistics().submitted
    # The error __reduce__ raised keeps its type (as concurrent.futures has it), says
    # what to do, and is chained to the original.
    with pytest.raises(error) as info:
        pool.submit(_jobs.echo, _jobs.RefusesToPickle(error, message))
    raised = info.value
    assert type(raised) is error
    # (str() of a KeyError is the repr of its key: its argument is the sentence.)
    assert raised.args[0].startswith("Cannot submit echo: its arguments cannot be pickled")
    assert type(raised.__cause__) is error
    assert pool.statistics().submitted == before
    assert_healthy(pool)


def test_an_argument_whose_reduce_raises_is_refused_inside_a_job(pool: CancelPool) -> None:
    handle = pool.submit(_jobs.submit_child_with_unpicklable_argument, "no")
    kind, message, cause = handle.result(BACKSTOP)
    assert kind == "ValueError"
    assert message.startswith("Cannot submit echo: its arguments cannot be pickled")
    assert cause.startswith("ValueError(")
    assert_healthy(pool)


@EXAMPLES
@given(message=st.text(max_size=40))
def test_an_argument_that_cannot_be_unpickled_fails_that_job_only(
    pool: CancelPool, message: str
) -> None:
    handle = pool.submit(_jobs.echo, _jobs.RefusesToUnpickle(message))
    exc = handle.exception(BACKSTOP)
    # The unpickling error keeps its own type, and the worker's traceback shows it.
    assert type(exc) is ValueError  # what _jobs.RefusesToUnpickle raises
    assert "could not be unpickled in the worker" in str(exc)
    assert "ValueError" in str(exc.__cause__)
    assert handle.status is OperationStatus.FAILED
    assert_healthy(pool)


def test_a_result_that_cannot_be_pickled_fails_that_job_only(pool: CancelPool) -> None:
    handle = pool.submit(_jobs.return_lock)
    exc = handle.exception(BACKSTOP)
    assert isinstance(exc, TypeError)
    assert "cannot be pickled" in str(exc)
    assert "return picklable data" in str(exc)
    assert_healthy(pool)


@EXAMPLES
@given(message=st.text(max_size=40))
def test_a_result_that_cannot_be_unpickled_fails_that_job_only(
    pool: CancelPool, message: str
) -> None:
    handle = pool.submit(_jobs.return_refusing_to_unpickle, message)
    exc = handle.exception(BACKSTOP)
    # The unpickling error keeps its own type, chained to the original.
    assert type(exc) is ValueError  # what _jobs.RefusesToUnpickle raises
    assert "could not be unpickled" in str(exc)
    assert type(exc.__cause__) is ValueError
    assert str(exc.__cause__) == message
    assert_healthy(pool)


unencodable = st.sampled_from([object(), 2**70, -(2**64), complex(1, 2), _jobs.Opaque()])


@EXAMPLES
@given(
    metadata=st.one_of(
        unencodable.map(lambda bad: {"bad": bad}),
        st.tuples(json_like, unencodable).map(lambda pair: {"ok": pair[0], "deep": [pair]}),
    )
)
def test_unencodable_progress_metadata_fails_that_job_only(
    pool: CancelPool, metadata: dict[str, Any]
) -> None:
    handle = pool.submit(_jobs.report, "step", metadata)
    exc = handle.exception(BACKSTOP)
    assert isinstance(exc, TypeError)
    assert "progress metadata" in str(exc)
    assert "cannot be encoded" in str(exc)
    assert_healthy(pool)


# -- text that is not UTF-8 (lone surrogates): the wire (msgpack) cannot carry it ------------
SURROGATE = "bad\ud800name"
ESCAPED = "bad\\ud800name"


def test_a_name_that_is_not_utf8_is_refused_at_submit(pool: CancelPool) -> None:
    with pytest.raises(ValueError, match="is not valid UTF-8 text"):
        pool.submit(_jobs.echo, 1, name=SURROGATE)
    stats = pool.statistics()
    assert (stats.submitted, stats.queued) == (0, 0)
    assert_healthy(pool)


def test_a_name_that_is_not_utf8_is_refused_while_workers_are_busy(
    make_pool: Callable[..., CancelPool], gate: Gate
) -> None:
    # Queued jobs are framed by the supervisor thread: a bad name must never get there.
    pool = make_pool(workers=1, concurrency=1)
    busy = pool.submit(_jobs.hold, gate.path, "busy")
    [held] = gate.wait(1)
    with pytest.raises(ValueError, match="is not valid UTF-8 text"):
        pool.submit(_jobs.echo, 1, name=SURROGATE)
    gate.release(held)
    assert busy.result(BACKSTOP) == held.pid
    assert_healthy(pool)


def test_a_progress_message_that_is_not_utf8_arrives_escaped(pool: CancelPool) -> None:
    heard: list[tuple[int, str, dict[str, Any]]] = []
    handle = pool.submit(_jobs.report, SURROGATE)
    handle.on_progress(lambda *event: heard.append(event))
    assert handle.result(BACKSTOP) == "reported"
    assert heard == [(handle.id, ESCAPED, {})]
    assert_healthy(pool)


def test_an_exception_message_that_is_not_utf8_fails_that_job_only(pool: CancelPool) -> None:
    handle = pool.submit(_jobs.fail_with, SURROGATE)
    exc = handle.exception(BACKSTOP)
    assert isinstance(exc, ValueError)
    assert exc.args == (SURROGATE,)  # the exception itself travels pickled, intact
    assert f"ValueError: {ESCAPED}" in str(exc.__cause__)  # its traceback text, escaped
    assert_healthy(pool)


def test_a_child_name_that_is_not_utf8_is_refused_inside_the_job(pool: CancelPool) -> None:
    kind, error, message = pool.submit(_jobs.child_named, SURROGATE).result(BACKSTOP)
    assert (kind, error) == ("refused", "ValueError")
    assert "is not valid UTF-8 text" in message
    assert_healthy(pool)

"""OpenTelemetry spans of a ``CancelPool``'s jobs, from real worker processes (each
writes its finished spans to a file: ``_spans.install``) and from the inline pool."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from _handshake import Gate
from cancelpool import CancelPool, JobCancelled
from cancelpool import _tracing as tracing
from otel import _spans

tracer = trace.get_tracer("tests.otel")


def ids(span: Any) -> tuple[str, str]:
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def by_name(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [span for span in spans if span["name"] == name]
    assert len(found) == 1, f"{name!r} in {[span['name'] for span in spans]}"
    return found[0]


@pytest.mark.parametrize("job", [_spans.inner_span, _spans.inner_span_sync])
def test_job_span_is_a_child_of_the_submitter_and_parent_of_the_jobs_spans(
    make_pool: Callable[..., CancelPool],
    traced_options: dict[str, Any],
    span_file: Path,
    caller_spans: InMemorySpanExporter,
    job: Callable[..., Any],
) -> None:
    pool = make_pool(**traced_options)
    with tracer.start_as_current_span("submitter") as submitter:
        handle = pool.submit(job, 42, name="answer")
    assert handle.result() == 42
    trace_id, submitter_id = ids(submitter)
    spans = _spans.read(span_file)
    job_span = by_name(spans, "cancelpool.job answer")
    inner = by_name(spans, "inner work")
    assert job_span["trace_id"] == inner["trace_id"] == trace_id
    assert job_span["parent_id"] == submitter_id
    assert inner["parent_id"] == job_span["span_id"]
    assert job_span["status"] == "OK"
    assert job_span["pid"] != os.getpid()  # exported by the worker's own provider
    assert job_span["attributes"] == {
        "cancelpool.job.id": handle.id,
        "cancelpool.job.name": "answer",
        "cancelpool.job.attempt": 1,
        "cancelpool.worker.pid": job_span["pid"],
        "cancelpool.job.outcome": "succeeded",
    }
    # The caller's process exported only the submitter's span.
    assert [span.name for span in caller_spans.get_finished_spans()] == ["submitter"]


def test_a_child_jobs_span_nests_under_its_parent_jobs_span(
    make_pool: Callable[..., CancelPool], traced_options: dict[str, Any], span_file: Path
) -> None:
    pool = make_pool(**traced_options)
    with tracer.start_as_current_span("submitter"):
        assert pool.submit(_spans.parent_of, "x").result() == "x"
    spans = _spans.read(span_file)
    parent = by_name(spans, "cancelpool.job parent_of")
    child = by_name(spans, "cancelpool.job inner_span")
    assert child["parent_id"] == parent["span_id"]
    assert by_name(spans, "inner work")["parent_id"] == child["span_id"]


def test_a_failed_job_has_status_error_and_its_exception_recorded(
    make_pool: Callable[..., CancelPool], traced_options: dict[str, Any], span_file: Path
) -> None:
    pool = make_pool(**traced_options)
    with tracer.start_as_current_span("submitter"):
        handle = pool.submit(_spans.boom, "on purpose")
    with pytest.raises(ValueError, match="on purpose"):
        handle.result()
    span = by_name(_spans.read(span_file), "cancelpool.job boom")
    assert span["status"] == "ERROR"
    assert span["description"] == "ValueError: on purpose"
    assert span["attributes"]["cancelpool.job.outcome"] == "failed"
    [event] = span["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "ValueError"
    assert event["attributes"]["exception.message"] == "on purpose"


def test_a_cancelled_job_records_its_reason_and_message(
    make_pool: Callable[..., CancelPool], traced_options: dict[str, Any], span_file: Path
) -> None:
    pool = make_pool(**traced_options)
    with Gate() as gate:
        with tracer.start_as_current_span("submitter"):
            handle = pool.submit(_spans.hold_at_gate, gate.path)
        gate.wait(1)
        handle.cancel("the user pressed stop")
        with pytest.raises(JobCancelled):
            handle.result()
    span = by_name(_spans.read(span_file), "cancelpool.job hold_at_gate")
    assert span["status"] == "UNSET"  # a cancel is not a failure
    assert span["attributes"]["cancelpool.cancel.reason"] == "manual"
    assert span["attributes"]["cancelpool.job.outcome"] == "cancelled"
    [event] = span["events"]
    assert event["name"] == "cancelpool.cancelled"
    # The worker knows the reason (from the job's shared-memory slot); the caller's
    # message stays with the caller's handle.
    assert event["attributes"]["cancelpool.cancel.reason"] == "manual"
    assert event["attributes"]["cancelpool.cancel.forced"] is False
    assert "manual" in event["attributes"]["cancelpool.cancel.message"]


def test_a_timed_out_job_records_reason_timeout_with_status_error(
    make_pool: Callable[..., CancelPool], traced_options: dict[str, Any], span_file: Path
) -> None:
    pool = make_pool(**traced_options)
    with Gate() as gate:  # never released: the job's timeout ends it
        with tracer.start_as_current_span("submitter"):
            handle = pool.submit(_spans.hold_at_gate, gate.path, timeout=0.2)
        with pytest.raises(JobCancelled):
            handle.result()
    span = by_name(_spans.read(span_file), "cancelpool.job hold_at_gate")
    assert span["status"] == "ERROR"
    assert span["description"].startswith("timed out")
    assert span["attributes"]["cancelpool.cancel.reason"] == "timeout"


def test_progress_reports_are_span_events_up_to_the_cap_then_counted(
    make_pool: Callable[..., CancelPool], traced_options: dict[str, Any], span_file: Path
) -> None:
    cap = tracing.MAX_PROGRESS_EVENTS
    pool = make_pool(**traced_options)
    with tracer.start_as_current_span("submitter"):
        assert pool.submit(_spans.report, cap + 10).result() == cap + 10
    span = by_name(_spans.read(span_file), "cancelpool.job report")
    events = span["events"]
    assert len(events) == cap
    assert events[0] == {
        "name": "cancelpool.progress",
        "attributes": {
            "cancelpool.progress.message": "step 0",
            "cancelpool.progress.meta.step": 0,
            "cancelpool.progress.meta.of": cap + 10,  # "nested" (a list) is not an attribute
        },
    }
    assert events[-1]["attributes"]["cancelpool.progress.meta.step"] == cap - 1
    assert span["attributes"]["cancelpool.progress.count"] == cap + 10
    assert span["attributes"]["cancelpool.progress.dropped"] == 10


def test_a_forced_stop_is_recorded_by_the_supervisor(
    make_pool: Callable[..., CancelPool],
    traced_options: dict[str, Any],
    span_file: Path,
    caller_spans: InMemorySpanExporter,
) -> None:
    pool = make_pool(**traced_options, cancel_grace=0.2)
    with Gate() as gate:
        with tracer.start_as_current_span("submitter") as submitter:
            handle = pool.submit(_spans.ignore_cancel_at_gate, gate.path)
        gate.wait(1)
        handle.cancel("stop now")
        with pytest.raises(JobCancelled) as caught:
            handle.result()
    assert caught.value.forced
    # The worker died with its span open: the supervisor wrote the job's span.
    assert _spans.read(span_file) == []
    span = next(s for s in caller_spans.get_finished_spans() if s.name.startswith("cancelpool.job"))
    assert span.name == "cancelpool.job ignore_cancel_at_gate"
    assert span.parent is not None
    assert span.parent.span_id == submitter.get_span_context().span_id
    assert span.status.status_code.name == "ERROR"
    assert span.attributes is not None
    assert span.attributes["cancelpool.cancel.forced"] is True
    assert span.attributes["cancelpool.cancel.reason"] == "manual"
    assert span.attributes["cancelpool.job.outcome"] == "forced"


def test_a_job_lost_with_its_worker_is_recorded_by_the_supervisor(
    make_pool: Callable[..., CancelPool],
    traced_options: dict[str, Any],
    span_file: Path,
    caller_spans: InMemorySpanExporter,
) -> None:
    from cancelpool import WorkerCrashed
    from pool import _jobs

    pool = make_pool(**traced_options)
    with tracer.start_as_current_span("submitter") as submitter:
        handle = pool.submit(_jobs.kill_own_worker)
    with pytest.raises(WorkerCrashed):
        handle.result()
    assert _spans.read(span_file) == []  # the worker died before its span ended
    [span] = [s for s in caller_spans.get_finished_spans() if s.name != "submitter"]
    assert span.name == "cancelpool.job kill_own_worker"
    assert span.parent is not None
    assert span.parent.span_id == submitter.get_span_context().span_id
    assert span.status.status_code.name == "ERROR"
    assert span.attributes is not None
    assert span.attributes["cancelpool.job.outcome"] == "failed"
    assert [event.name for event in span.events] == ["exception"]


def test_a_retried_job_spans_its_second_attempt(
    make_pool: Callable[..., CancelPool],
    traced_options: dict[str, Any],
    span_file: Path,
    tmp_path: Path,
) -> None:
    from pool import _jobs

    pool = make_pool(**traced_options)
    with tracer.start_as_current_span("submitter") as submitter:
        handle = pool.submit(_jobs.die_once_then_finish, str(tmp_path / "marker"), 0, retries=1)
    assert handle.result() == "second attempt"
    [span] = _spans.read(span_file)  # the first attempt's span died with its worker
    assert span["attributes"]["cancelpool.job.attempt"] == 2
    assert span["parent_id"] == ids(submitter)[1]
    assert span["status"] == "OK"


def test_a_job_submitted_outside_any_span_is_not_traced(
    make_pool: Callable[..., CancelPool], traced_options: dict[str, Any], span_file: Path
) -> None:
    pool = make_pool(**traced_options)
    assert pool.submit(_spans.current_span_ids).result()[2] is False
    assert _spans.read(span_file) == []


def test_the_inline_pool_traces_jobs_the_same_way(caller_spans: InMemorySpanExporter) -> None:
    with CancelPool(inline=True) as pool, Gate() as gate:
        with tracer.start_as_current_span("submitter") as submitter:
            assert pool.submit(_spans.inner_span, 1).result() == 1
            held = pool.submit(_spans.hold_at_gate, gate.path)
        gate.wait(1)
        held.cancel("enough")
        with pytest.raises(JobCancelled):
            held.result()
    spans = {span.name: span for span in caller_spans.get_finished_spans()}
    job = spans["cancelpool.job inner_span"]
    assert job.parent is not None
    assert job.parent.span_id == submitter.get_span_context().span_id
    inner = spans["inner work"]
    assert inner.parent is not None
    assert inner.parent.span_id == job.context.span_id
    assert job.status.status_code.name == "OK"
    cancelled = spans["cancelpool.job hold_at_gate"]
    assert cancelled.attributes is not None
    assert cancelled.attributes["cancelpool.cancel.reason"] == "manual"
    assert [event.name for event in cancelled.events] == ["cancelpool.cancelled"]


def test_the_inline_pool_records_a_forced_stop(caller_spans: InMemorySpanExporter) -> None:
    from pool import _jobs

    with CancelPool(inline=True, cancel_grace=0.2) as pool, Gate() as gate:
        with tracer.start_as_current_span("submitter"):
            handle = pool.submit(_jobs.stubborn, gate.path, "kept")
        gate.wait(1)
        handle.cancel("stop it")
        with pytest.raises(JobCancelled) as caught:
            handle.result()
        assert caught.value.forced
        # Recorded and ended at once, while the job's code still waits at the gate.
        [span] = [s for s in caller_spans.get_finished_spans() if s.name != "submitter"]
    assert span.name == "cancelpool.job stubborn"
    assert span.status.status_code.name == "ERROR"
    assert span.attributes is not None
    assert span.attributes["cancelpool.cancel.forced"] is True
    assert span.attributes["cancelpool.job.outcome"] == "forced"
    # The job's code returned when the gate closed: nothing more was recorded.
    assert [s.name for s in caller_spans.get_finished_spans()].count(span.name) == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "00-00000000000000000000000000000000-0000000000000000-01",  # all-zero ids
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01\n" + "x" * tracing.MAX_CONTEXT,
        "zz-" + "a" * 32 + "-" + "b" * 16 + "-01",
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01-extra\ntracestate",
        "\x00\udcff",
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01\nk=v\nforged log line",
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01\x1b[31m",
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01\nk=\u00e9",
    ],
)
def test_a_malformed_context_is_ignored(text: str) -> None:
    assert tracing.parse(text) is None
    with tracing.activate(text):
        assert not trace.get_current_span().get_span_context().is_valid


def test_a_valid_context_round_trips() -> None:
    with tracer.start_as_current_span("submitter") as span:
        text = tracing.capture()
    assert text is not None
    with tracing.activate(text):
        assert ids(trace.get_current_span()) == ids(span)


def test_import_cancelpool_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, cancelpool, cancelpool.queue\n"
        "from cancelpool import CancelPool\n"
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_a_worker_that_exits_flushes_its_batch_processor(span_file: Path) -> None:
    pool = CancelPool(1, initializer=_spans.install_batched, initargs=(str(span_file),))
    with pool, tracer.start_as_current_span("submitter"):
        assert pool.submit(_spans.inner_span, 7).result() == 7
        assert _spans.read(span_file) == []  # held by the batch processor
    # shutdown() has joined the worker, which flushed its provider on the way out.
    names = sorted(span["name"] for span in _spans.read(span_file))
    assert names == ["cancelpool.job inner_span", "inner work"]


def test_the_public_module_round_trips_a_context() -> None:
    from cancelpool import otel

    assert otel.current_context_text() is None  # no span current
    with tracer.start_as_current_span("mine", context=otel.context_from_text(None)) as span:
        text = otel.current_context_text()
    assert text is not None
    assert text.startswith("00-")
    context = otel.context_from_text(text)
    assert context is not None
    assert ids(trace.get_current_span(context)) == ids(span)
    assert otel.context_from_text(text + "x" * otel.MAX_CONTEXT) is None
    assert otel.context_from_text(42) is None
    assert set(otel.__all__) == {name for name in dir(otel) if name.isupper()} | {
        "context_from_text",
        "current_context_text",
    }


def test_the_tracestate_travels_too_unless_it_is_too_long() -> None:
    def context_with(state: list[tuple[str, str]]) -> Any:
        span_context = trace.SpanContext(
            0x0AF7651916CD43DD8448EB211C80319C,
            0xB7AD6B7169203331,
            is_remote=False,
            trace_flags=trace.TraceFlags(1),
            trace_state=trace.TraceState(state),
        )
        return trace.use_span(trace.NonRecordingSpan(span_context))

    with context_with([("vendor", "value")]):
        text = tracing.capture()
    assert text == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\nvendor=value"
    context = tracing.parse(text)
    assert trace.get_current_span(context).get_span_context().trace_state == {"vendor": "value"}
    huge = [(f"k{i}", "v" * 200) for i in range(8)]  # 1.6k characters of tracestate
    with context_with(huge):
        text = tracing.capture()
    assert text == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_hostile_tracestate_is_dropped_without_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What the W3C propagator rejects it logs through the root logger: text from a
    # queue row would reach serve's stderr. Checked first here, so it never sees it.
    caplog.set_level("DEBUG")
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for state in (
        'x=", "level": "critical", "msg": "FAKE',
        ",".join(f"k{i}=v" for i in range(40)),  # over 32 members
        "UPPER=case",
    ):
        context = tracing.parse(f"{parent}\n{state}")
        assert context is not None  # the parent alone still traces the job
        assert trace.get_current_span(context).get_span_context().trace_state == {}
    assert tracing.parse(f"{'0' * 600}") is None  # not a traceparent at all
    assert caplog.records == []


def test_a_failures_span_is_bounded_and_an_unprintable_error_is_recorded(
    make_pool: Callable[..., CancelPool], traced_options: dict[str, Any], span_file: Path
) -> None:
    pool = make_pool(**traced_options)
    with tracer.start_as_current_span("submitter"):
        unprintable = pool.submit(_spans.raise_unprintable)
        huge = pool.submit(_spans.raise_huge, 1_000_000, name="n" * 10_000)
    with pytest.raises(_spans.Unprintable):
        unprintable.result()
    with pytest.raises(ValueError, match=r"^x+$"):
        huge.result()
    spans = _spans.read(span_file)
    span = by_name(spans, "cancelpool.job raise_unprintable")
    assert span["status"] == "ERROR"
    assert span["description"] == "Unprintable: <unprintable Unprintable>"
    [event] = span["events"]
    assert event["attributes"]["exception.type"] == "Unprintable"
    span = by_name(spans, "cancelpool.job " + "n" * tracing.MAX_NAME)
    [event] = span["events"]
    assert len(event["attributes"]["exception.message"]) == tracing.MAX_EVENT_TEXT
    assert len(event["attributes"]["exception.stacktrace"]) <= tracing.MAX_STACK

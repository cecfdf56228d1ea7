"""What the OpenTelemetry tests run in worker processes: a provider that writes each
finished span as a JSON line to a file the test names, and jobs that trace themselves.

Imported by the workers (through the pool's initializer and the job functions), so it
imports only the API and the SDK, never the test's fixtures.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from _handshake import announce, arrive
from cancelpool import current_operation, current_pool


class JsonLinesExporter(SpanExporter):
    """Appends one JSON object per finished span to ``path`` (one write per span, so
    that several processes may share the file)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(to_dict(span)) + "\n" for span in spans)
        with self._lock:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, lines.encode())
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def to_dict(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as plain data (what the tests compare)."""
    context = span.context
    assert context is not None
    return {
        "name": span.name,
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_id": None if span.parent is None else format(span.parent.span_id, "016x"),
        "status": span.status.status_code.name,
        "description": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": event.name, "attributes": dict(event.attributes or {})}
            for event in span.events
        ],
        "pid": os.getpid(),
    }


def install(path: str) -> None:
    """A pool's ``initializer``: this worker exports its spans to ``path``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
    trace.set_tracer_provider(provider)


def read(path: Path) -> list[dict[str, Any]]:
    """The spans written to ``path`` so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# -- jobs --------------------------------------------------------------------------------
async def inner_span(value: Any) -> Any:
    """A job whose own code makes a span (it must nest under the job's span)."""
    with trace.get_tracer("job-code").start_as_current_span("inner work"):
        return value


def inner_span_sync(value: Any) -> Any:
    """The same, as a plain function (it runs in a thread of the worker)."""
    with trace.get_tracer("job-code").start_as_current_span("inner work"):
        return value


async def hold_at_gate(gate: str) -> None:
    """Arrives at the test's gate and waits there (a cancellation point) for "go"."""
    await arrive(gate)


def ignore_cancel_at_gate(gate: str) -> None:
    """A plain function that says it runs, then ignores its cancellation (never polls
    its token): only its worker's kill ends it, a forced stop."""
    announce(gate)
    threading.Event().wait()


async def report(count: int) -> int:
    """Reports ``count`` progress messages, then returns ``count``."""
    op = current_operation()
    for step in range(count):
        await op.report_progress(f"step {step}", {"step": step, "of": count, "nested": [1]})
    return count


async def boom(message: str) -> None:
    raise ValueError(message)


async def parent_of(value: Any) -> Any:
    """A job that runs a child job and returns its result."""
    return await current_pool().submit(inner_span, value)


async def current_span_ids() -> tuple[str, str, bool]:
    """The trace and span id current in the job (as hex), and whether it records."""
    span = trace.get_current_span()
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x"), span.is_recording()


#: The variable that names the span file of ``install_from_env`` (serve's workers).
SPANS_VARIABLE = "CANCELPOOL_TEST_SPANS"


def install_from_env() -> None:
    """``cancelpool serve --worker-init``: this worker exports its spans to the file
    named by ``$CANCELPOOL_TEST_SPANS``."""
    install(os.environ[SPANS_VARIABLE])


def install_batched(path: str) -> None:
    """A pool's ``initializer`` with a batch processor that exports nothing by itself
    (its delay is longer than any test): only the worker's flush at exit sends spans."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(JsonLinesExporter(path), schedule_delay_millis=3_600_000)
    )
    trace.set_tracer_provider(provider)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ZeroDivisionError("no text for this one")


async def raise_unprintable() -> None:
    raise Unprintable()


async def raise_huge(size: int) -> None:
    raise ValueError("x" * size)

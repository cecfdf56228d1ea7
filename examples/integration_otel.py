"""OpenTelemetry: a job's span in its worker continues the submitter's trace.

Needs ``pip install 'cancelpool[otel]' opentelemetry-sdk``. Each process that exports
configures its own tracer provider: here the caller, and each worker through the pool's
``initializer=``. The exporter below prints one line per finished span.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from cancelpool import CancelPool, JobCancelled, current_operation
from cancelpool.otel import CANCEL_REASON


class PrintExporter(SpanExporter):
    """Prints each finished span: name, status, its events, a short trace id."""

    def __init__(self, where: str) -> None:
        self.where = where

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            assert span.context is not None
            events = [event.name for event in span.events]
            reason = (span.attributes or {}).get(CANCEL_REASON)
            print(
                f"[{self.where}] span {span.name!r} status={span.status.status_code.name} "
                f"trace={span.context.trace_id:032x}"[:-24]
                + (f" events={events}" if events else "")
                + (f" reason={reason}" if reason else ""),
                flush=True,
            )
        return SpanExportResult.SUCCESS


def setup_tracing(where: str) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(PrintExporter(where)))
    trace.set_tracer_provider(provider)


async def resize(name: str) -> str:
    """A job: its own span nests under the job's span, its progress is a span event."""
    with trace.get_tracer("example").start_as_current_span("load"):
        await current_operation().report_progress(f"loaded {name}")
    return format(trace.get_current_span().get_span_context().trace_id, "032x")


async def wait_forever() -> None:
    await asyncio.Event().wait()


def main() -> None:
    setup_tracing("caller")
    tracer = trace.get_tracer("example")
    with CancelPool(2, initializer=setup_tracing, initargs=("worker",)) as pool:
        with tracer.start_as_current_span("batch") as batch:
            job_trace = pool.submit(resize, "cat.png").result()
            stuck = pool.submit(wait_forever)
            deadline = time.monotonic() + 30  # a backstop, not a pace
            while not stuck.running():  # started in its worker: it has a span to end
                if time.monotonic() > deadline:
                    raise RuntimeError("the job never started")
                time.sleep(0.005)
            stuck.cancel("user pressed stop")
            try:
                stuck.result()
            except JobCancelled as exc:
                print(f"stuck job: cancelled, reason {exc.reason.value}")
        batch_trace = format(batch.get_span_context().trace_id, "032x")
        print(f"the job ran in the batch's trace: {job_trace == batch_trace}")
    print("Tracing example complete.")


if __name__ == "__main__":
    main()

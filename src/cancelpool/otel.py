"""OpenTelemetry tracing of cancelpool jobs. Needs the ``otel`` extra
(``pip install 'cancelpool[otel]'``: the API only); ``import cancelpool`` never
imports OpenTelemetry, and nothing here configures a tracer provider: that stays yours.

Tracing needs no call: a job submitted while a span is current is traced.

::

    your code                      cancelpool                       the job's worker
    ---------                      ----------                       ----------------
    with tracer.start_as_current_span("batch"):
        pool.submit(fn, ...)   --> the span's W3C context  ------>  span "cancelpool.job <name>"
        queue.submit(task, ...)    in the submit message, or          (child of "batch"), current
                                   in the job's row, then by          while fn runs: fn's own spans
                                   `cancelpool serve` to its pool     nest under it

- The job's span is started and ended in the worker process and exported by *that
  process's* tracer provider: configure one in the pool's ``initializer=`` (``cancelpool
  serve --worker-init module:function`` for a server's workers). A worker without one
  still makes the submitter's context current, so what the job propagates (HTTP headers)
  carries the trace on. A worker that exits flushes its provider (batch processors lose
  nothing on shutdown); a worker that is killed loses the spans it held.
- Attributes: ``cancelpool.job.id``, ``cancelpool.job.name``, ``cancelpool.job.attempt``,
  ``cancelpool.worker.pid``, ``cancelpool.job.outcome`` (``succeeded``, ``failed``,
  ``cancelled``, ``forced``).
- Status: OK when the job returned; ERROR when it raised (the exception recorded as an
  event), timed out, or was forced; UNSET when it was cancelled otherwise (a cancel is
  not a failure). A cancellation sets ``cancelpool.cancel.reason`` and adds an event
  ``cancelpool.cancelled`` (reason, message, forced).
- Progress reports are events ``cancelpool.progress`` (the message, and the metadata's
  top-level strings, numbers and booleans), the first :data:`MAX_PROGRESS_EVENTS` of
  them; ``cancelpool.progress.count`` and ``cancelpool.progress.dropped`` count them all.
- A forced stop kills the worker and its open span, as does a worker crash: the pool's
  supervisor then writes the job's span itself (same name and parent, status ERROR,
  ``cancelpool.cancel.forced`` true or the crash recorded), through the *submitting*
  process's provider. A job cancelled before it started has no span.
- A job submitted outside any span is not traced (one ``sys.modules`` lookup at submit,
  one ``is None`` test as it starts). Children a traced job submits nest under its span.
- Trace context read back from a queue row is untrusted text: it is parsed by the W3C
  propagator only, at most :data:`MAX_CONTEXT` characters, and anything else is ignored
  (the job runs untraced).
"""

from __future__ import annotations

from typing import Any

try:
    import opentelemetry.trace  # noqa: F401  (the extra's presence, checked at import)
except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
    raise ImportError(
        f"cancelpool.otel needs opentelemetry-api: pip install 'cancelpool[otel]' ({exc})"
    ) from exc

from ._tracing import CANCEL_EVENT as CANCEL_EVENT
from ._tracing import CANCEL_MESSAGE as CANCEL_MESSAGE
from ._tracing import CANCEL_REASON as CANCEL_REASON
from ._tracing import FORCED as FORCED
from ._tracing import JOB_ATTEMPT as JOB_ATTEMPT
from ._tracing import JOB_ID as JOB_ID
from ._tracing import JOB_NAME as JOB_NAME
from ._tracing import JOB_OUTCOME as JOB_OUTCOME
from ._tracing import MAX_CONTEXT as MAX_CONTEXT
from ._tracing import MAX_PROGRESS_EVENTS as MAX_PROGRESS_EVENTS
from ._tracing import PROGRESS_COUNT as PROGRESS_COUNT
from ._tracing import PROGRESS_DROPPED as PROGRESS_DROPPED
from ._tracing import PROGRESS_EVENT as PROGRESS_EVENT
from ._tracing import PROGRESS_MESSAGE as PROGRESS_MESSAGE
from ._tracing import SPAN_PREFIX as SPAN_PREFIX
from ._tracing import TRACER_NAME as TRACER_NAME
from ._tracing import WORKER_PID as WORKER_PID
from ._tracing import capture, parse

__all__ = (
    "CANCEL_EVENT",
    "CANCEL_MESSAGE",
    "CANCEL_REASON",
    "FORCED",
    "JOB_ATTEMPT",
    "JOB_ID",
    "JOB_NAME",
    "JOB_OUTCOME",
    "MAX_CONTEXT",
    "MAX_PROGRESS_EVENTS",
    "PROGRESS_COUNT",
    "PROGRESS_DROPPED",
    "PROGRESS_EVENT",
    "PROGRESS_MESSAGE",
    "SPAN_PREFIX",
    "TRACER_NAME",
    "WORKER_PID",
    "context_from_text",
    "current_context_text",
)


def current_context_text() -> str | None:
    """The current span's context as cancelpool carries it (W3C ``traceparent``, then
    ``"\\n"`` and the ``tracestate`` if any), or None when no valid span is current:
    what ``submit()`` sends with a job, for carrying a trace through your own channels."""
    return capture()


def context_from_text(text: object) -> Any | None:
    """The OpenTelemetry ``Context`` in ``text`` (as :func:`current_context_text` makes
    it), or None if it is not a valid W3C trace context of at most :data:`MAX_CONTEXT`
    characters. Never raises: ``text`` may come from anywhere."""
    return parse(text)

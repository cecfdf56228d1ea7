"""OpenTelemetry trace context across cancelpool's process boundaries (optional).

A leaf module: the pool (caller side, worker side, inline mode) and the queue import
it; it imports nothing of theirs, and nothing of OpenTelemetry until a trace is there.

::

    submitter                       carried as text             worker (or inline thread)
    ---------                       ---------------             -------------------------
    pool.submit / Queue.submit  --> Run.trace / jobs.trace_  --> span "cancelpool.job <name>",
      capture(): the current          context (W3C traceparent    child of that context and
      span's W3C context, if any      [+ "\\n" + tracestate])      current while the job runs
    cancelpool serve                  a row's text is parsed      progress: span events
      activate(row text) around       by the W3C propagator only  (the first N, then counts)
      its pool.submit                 (malformed: untraced)       end: OK / ERROR / cancelled

A job is traced when it is submitted while a valid span is current (the caller has
imported ``opentelemetry``: no span can be current otherwise); the worker needs only
the API installed, and exports through whatever provider its process configured (the
pool's ``initializer=``). Untraced, the cost is one ``sys.modules`` lookup at submit
and one ``is None`` test when the job starts.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ._core._enums import CancelationReason

#: The longest carried context accepted (characters): a traceparent is 55; the rest is
#: room for a tracestate (W3C asks to carry at least 512 characters of it). A longer
#: tracestate is dropped at capture (the traceparent still goes); a longer text read
#: back (a row another program wrote) is ignored: the job runs untraced.
MAX_CONTEXT = 1024
#: Progress reports recorded as span events per job: the first ones; the others are
#: only counted (``cancelpool.progress.count``, ``cancelpool.progress.dropped``). More
#: shows more of a job's history; each event is kept in memory until the span ends.
MAX_PROGRESS_EVENTS = 32
#: Characters of a progress message or a string metadata value kept in an event.
MAX_EVENT_TEXT = 256
#: Metadata entries of one progress report recorded as event attributes.
MAX_EVENT_FIELDS = 16
#: Characters of a job's name kept in its span's name and attribute, and of an
#: exception's stack trace in its event (a pool job's name is not bounded).
MAX_NAME = 200
MAX_STACK = 8192
#: Exporters encode integers as int64: a larger one is recorded as its text.
_INT64 = (-(2**63), 2**63 - 1)
#: W3C trace-context rules, checked here so that the propagator never logs (what it
#: rejects it logs through the root logger, whatever the program configured: text an
#: attacker wrote in a queue row would reach serve's stderr).
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_TRACESTATE_MEMBER = re.compile(
    r"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
_MAX_TRACESTATE_MEMBERS = 32

TRACER_NAME = "cancelpool"
SPAN_PREFIX = "cancelpool.job"

# Attribute names (the ``cancelpool.`` namespace; OpenTelemetry has no convention for
# job runners beyond messaging, which does not fit a process pool).
JOB_ID = "cancelpool.job.id"
JOB_NAME = "cancelpool.job.name"
JOB_ATTEMPT = "cancelpool.job.attempt"
JOB_OUTCOME = "cancelpool.job.outcome"
WORKER_PID = "cancelpool.worker.pid"
CANCEL_REASON = "cancelpool.cancel.reason"
CANCEL_MESSAGE = "cancelpool.cancel.message"
FORCED = "cancelpool.cancel.forced"
PROGRESS_MESSAGE = "cancelpool.progress.message"
PROGRESS_COUNT = "cancelpool.progress.count"
PROGRESS_DROPPED = "cancelpool.progress.dropped"
CANCEL_EVENT = "cancelpool.cancelled"
PROGRESS_EVENT = "cancelpool.progress"

_API = "opentelemetry.trace"
_propagator: Any = None


def _w3c() -> Any:
    global _propagator
    if _propagator is None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        _propagator = TraceContextTextMapPropagator()
    return _propagator


def capture() -> str | None:
    """The current span's context as cancelpool carries it, or None (no
    ``opentelemetry`` loaded in this process, or no valid span current)."""
    if _API not in sys.modules:
        return None
    try:
        return _capture()
    except Exception:  # a broken API install must not make submit() fail
        return None


# opentelemetry.trace's get_current_span and INVALID_SPAN (what it returns when no span
# is current: the common case, told apart by identity), once loaded.
_current_span: Any = None
_no_span: Any = None


def _capture() -> str | None:
    global _current_span, _no_span
    if _current_span is None:
        from opentelemetry.trace import INVALID_SPAN, get_current_span

        _current_span, _no_span = get_current_span, INVALID_SPAN
    span = _current_span()
    if span is _no_span or not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _w3c().inject(carrier)
    parent = carrier.get("traceparent")
    if not parent or len(parent) > MAX_CONTEXT:
        return None
    state = carrier.get("tracestate")
    if state and len(parent) + 1 + len(state) <= MAX_CONTEXT:
        return f"{parent}\n{state}"
    return parent


def parse(text: object) -> Any | None:
    """The OpenTelemetry context in ``text`` (untrusted: a row, a message), or None if
    it is not a valid W3C trace context, is too long, or the API is not installed."""
    if not isinstance(text, str) or not text or len(text) > MAX_CONTEXT:
        return None
    # W3C headers are printable ASCII; one newline separates ours. Anything else never
    # reaches the propagator (which logs what it rejects: no control characters there).
    if not text.isascii() or not text.replace("\n", "", 1).isprintable():
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    parent, _, state = text.partition("\n")
    if not _TRACEPARENT.fullmatch(parent):
        return None
    carrier = {"traceparent": parent}
    if state and _valid_tracestate(state):  # else the parent alone, as W3C asks
        carrier["tracestate"] = state
    try:
        context = _w3c().extract(carrier)
        if not trace.get_current_span(context).get_span_context().is_valid:
            return None
    except Exception:
        return None
    return context


def _valid_tracestate(state: str) -> bool:
    members = [member.strip() for member in state.split(",")]
    members = [member for member in members if member]
    return len(members) <= _MAX_TRACESTATE_MEMBERS and all(
        _TRACESTATE_MEMBER.fullmatch(member) for member in members
    )


def activate(text: str | None) -> AbstractContextManager[object]:
    """A context manager that makes the context in ``text`` current (the serve node
    around its ``pool.submit``, so that the job carries the submitter's trace on);
    nothing happens if ``text`` is None or not a valid context."""
    if text is None:
        return nullcontext()
    context = parse(text)
    if context is None:
        return nullcontext()
    return _attached(context)


@contextmanager
def _attached(context: Any) -> Iterator[None]:
    from opentelemetry import context as otel_context

    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def _text_of(error: BaseException) -> str:
    """``str(error)``, or a stand-in when its ``__str__`` raises."""
    try:
        return str(error)
    except Exception:
        return f"<unprintable {type(error).__name__}>"


class JobSpan:
    """A job's span, from its start in a worker (or the inline thread) to its end.

    Made current in the job's task when it starts (a plain function's thread inherits
    it), so the spans the job's own code creates are its children. The outcome methods
    are called by whoever learns it; :meth:`close` ends the span (OK unless something
    else was recorded) and restores the task's context.
    """

    __slots__ = ("_dropped", "_ended", "_outcome", "_progress", "_span", "_token")

    def __init__(self, span: Any, token: Any) -> None:
        self._span = span
        self._token = token
        self._progress = 0
        self._dropped = 0
        self._ended = False
        self._outcome = False  # failed or cancelled was recorded

    def progress(self, op_id: str, message: str, metadata: dict[str, Any]) -> None:
        """A progress callback (``op.on_progress``): a span event, up to the cap."""
        self._progress += 1
        if self._progress > MAX_PROGRESS_EVENTS or self._ended:
            self._dropped += 1
            return
        attributes: dict[str, Any] = {PROGRESS_MESSAGE: str(message)[:MAX_EVENT_TEXT]}
        if isinstance(metadata, dict):
            for key, value in list(metadata.items())[:MAX_EVENT_FIELDS]:
                if isinstance(value, str):
                    value = value[:MAX_EVENT_TEXT]
                elif isinstance(value, int) and not isinstance(value, bool):
                    if not _INT64[0] <= value <= _INT64[1]:
                        value = str(value)[:MAX_EVENT_TEXT]
                elif not isinstance(value, (bool, float)):
                    continue
                # Under its own prefix: a key named "message" cannot overwrite ours.
                attributes[f"cancelpool.progress.meta.{str(key)[:64]}"] = value
        self._span.add_event(PROGRESS_EVENT, attributes)

    def failed(self, error: BaseException) -> None:
        """The job raised ``error`` (or could not be run): status ERROR."""
        if self._ended or self._outcome:
            return
        self._outcome = True
        from opentelemetry.trace import Status, StatusCode

        span = self._span
        span.set_attribute(JOB_OUTCOME, "failed")
        message = _text_of(error)
        stack = "".join(traceback.format_exception(error))[-MAX_STACK:]
        span.add_event(  # the semantic conventions' exception event, bounded
            "exception",
            {
                "exception.type": type(error).__qualname__,
                "exception.message": message[:MAX_EVENT_TEXT],
                "exception.stacktrace": stack,
            },
        )
        text = f"{type(error).__name__}: {message}"
        span.set_status(Status(StatusCode.ERROR, text[:MAX_EVENT_TEXT]))

    def cancelled(
        self, reason: CancelationReason, message: str | None, *, forced: bool = False
    ) -> None:
        """The job stopped on cancellation: the reason as an attribute and an event.
        The status stays UNSET (a cancel is not a failure), except for a timeout (the
        job missed its deadline) and a forced stop: ERROR."""
        if self._ended or (self._outcome and not forced):
            return
        self._outcome = True
        _record_cancel(self._span, reason, message, forced)

    def forced(self, reason: CancelationReason, message: str | None) -> None:
        """The job ignored its cancellation and was given up on: record it and end the
        span now (its code may run on, unobserved)."""
        if self._ended:
            return
        self.cancelled(reason, message, forced=True)
        self._end()

    def close(self) -> None:
        """End the span (status OK if nothing else was recorded) and make the task's
        previous context current again (call it in the job's own task)."""
        if not self._ended:
            self._end()
        from opentelemetry import context as otel_context

        try:
            otel_context.detach(self._token)
        except Exception:
            pass  # the API logs a detach from another context; the task ends anyway

    def _end(self) -> None:
        self._ended = True
        span = self._span
        if self._progress:
            span.set_attribute(PROGRESS_COUNT, self._progress)
            if self._dropped:
                span.set_attribute(PROGRESS_DROPPED, self._dropped)
        if not self._outcome:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute(JOB_OUTCOME, "succeeded")
            span.set_status(Status(StatusCode.OK))
        span.end()


def _record_cancel(span: Any, reason: CancelationReason, message: str | None, forced: bool) -> None:
    from opentelemetry.trace import Status, StatusCode

    from ._core._enums import CancelationReason

    text = (message or "")[:MAX_EVENT_TEXT]
    span.set_attribute(JOB_OUTCOME, "forced" if forced else "cancelled")
    span.set_attribute(CANCEL_REASON, reason.value)
    if forced:
        span.set_attribute(FORCED, True)
    span.add_event(
        CANCEL_EVENT, {CANCEL_REASON: reason.value, CANCEL_MESSAGE: text, FORCED: forced}
    )
    if forced or reason is CancelationReason.TIMEOUT:
        what = "forced stop" if forced else "timed out"
        span.set_status(Status(StatusCode.ERROR, f"{what}: {text}"[:MAX_EVENT_TEXT]))


def _attributes(job_id: int, name: str | None, attempt: int) -> dict[str, Any]:
    attributes: dict[str, Any] = {JOB_ID: job_id, JOB_ATTEMPT: attempt, WORKER_PID: os.getpid()}
    if name is not None:
        attributes[JOB_NAME] = name[:MAX_NAME]
    return attributes


def start_job(text: str, attempt: int, name: str | None, job_id: int) -> JobSpan | None:
    """Start the span of a job whose submitter was traced (``text``: its carried
    context) and make it current in the calling task; None if the context does not
    parse or the API is missing here (the job then runs untraced)."""
    parent = parse(text)
    if parent is None:
        return None
    try:
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        tracer = trace.get_tracer(TRACER_NAME)
        span = tracer.start_span(
            f"{SPAN_PREFIX} {name[:MAX_NAME]}" if name else SPAN_PREFIX,
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes=_attributes(job_id, name, attempt),
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
    except Exception:  # a provider that fails must not fail the job
        return None
    return JobSpan(span, token)


#: Seconds a worker that exits waits for its provider to export the spans it holds.
#: Longer loses fewer spans to a slow collector; shorter ends a pool's shutdown sooner.
FLUSH_TIMEOUT = 5.0


def flush() -> None:
    """Export what this process's tracer provider still holds (a worker that exits:
    nothing is loaded, nothing is done). Never raises."""
    if _API not in sys.modules:
        return
    try:
        from opentelemetry import trace

        force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if force_flush is not None:
            force_flush(int(FLUSH_TIMEOUT * 1000))
    except Exception:
        pass


def forced_span(
    text: str,
    attempt: int,
    name: str | None,
    job_id: int,
    started_at: float | None,
    reason: CancelationReason,
    message: str | None,
) -> None:
    """A span for a job whose worker was killed to stop it (its own span died with the
    worker), written by the supervisor through the caller's provider: the same name
    and parent, from the job's start to now, status ERROR, ``cancelpool.cancel.forced``."""
    span = _supervisor_span(text, attempt, name, job_id, started_at)
    if span is not None:
        try:
            _record_cancel(span, reason, message, True)
            span.end()
        except Exception:  # never in the supervisor's way
            pass


def lost_span(
    text: str,
    attempt: int,
    name: str | None,
    job_id: int,
    started_at: float | None,
    error: BaseException,
) -> None:
    """A span for a job lost with its worker (the process crashed or was killed under
    it; its own span died with it): written by the supervisor as :func:`forced_span`,
    status ERROR with ``error`` (``WorkerCrashed``, ...) recorded."""
    span = _supervisor_span(text, attempt, name, job_id, started_at)
    if span is not None:
        try:
            JobSpan(span, None).failed(error)
            span.end()
        except Exception:  # never in the supervisor's way
            pass


def _supervisor_span(
    text: str, attempt: int, name: str | None, job_id: int, started_at: float | None
) -> Any | None:
    parent = parse(text)
    if parent is None:
        return None
    try:
        from opentelemetry import trace

        attributes = _attributes(job_id, name, attempt)
        del attributes[WORKER_PID]  # this is the supervisor's process, not the worker's
        return trace.get_tracer(TRACER_NAME).start_span(
            f"{SPAN_PREFIX} {name[:MAX_NAME]}" if name else SPAN_PREFIX,
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
            start_time=None if started_at is None else int(started_at * 1e9),
        )
    except Exception:  # never in the supervisor's way
        return None

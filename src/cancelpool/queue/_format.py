"""The CLI's words for jobs: cells, outcomes, durations, JSON (no rich here: ``--json``
and the server's log stay light; :mod:`._render` lays these out with rich).

Text that jobs or other users control (names, tasks, progress messages, metadata,
results, errors, tracebacks, paths and patterns read from the database) is data: every
human-readable line passes it through :func:`visible` (one-line cells) or
:func:`visible_lines` (tracebacks), so no escape sequence, bidi override or forged line
reaches a terminal or a log. ``--json`` output is exact JSON (the same values), with
those characters written as ``\\uXXXX`` escapes (:func:`visible_json`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from .._visible import done_total, json_visible, one_line
from .._visible import visible as visible
from .._visible import visible_lines as visible_lines
from ._model import JobRecord, JobStatus


def quoted(text: str) -> str:
    """Several lines of a job's text (a traceback) for a terminal: each line made
    visible and marked ``| ``, so that no line the job wrote passes for one of ours."""
    return "\n".join("| " + visible_lines(line) for line in text.splitlines())


def visible_json(value: Any) -> str:
    """Indented JSON that is still valid JSON and safe on a terminal: the characters
    :func:`visible` escapes are written as JSON ``\\uXXXX`` escapes (only inside
    strings, where they can be; the layout's own newlines stay)."""
    return json_visible(pretty_json(value))


def cut(text: str, width: int | None = None) -> str:
    """One table cell: whitespace runs folded, unsafe characters made visible, at most
    ``width`` characters (None: as wide as it is; the table fits it to a terminal)."""
    text = one_line(text)
    if width is None or len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…"


def to_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def pretty_json(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 600:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m"


def elapsed(job: JobRecord, now: float | None = None) -> str:
    """How long a job ran (or runs), or for a queued one how long it has been waiting:
    a job requeued after its server stopped shows its wait, not its old run."""
    now = now or time.time()
    if job.status is JobStatus.QUEUED:
        return f"{duration(max(0.0, now - job.submitted_at))} wait"
    if job.started_at is None:
        return "-"
    end = job.ended_at if job.ended_at is not None else now
    return duration(max(0.0, end - job.started_at))


def fraction(job: JobRecord) -> float | None:
    """How far the job got, from its last progress metadata (``done``/``total`` or
    ``percent``), or None."""
    counts = done_total(job.progress)
    return None if counts is None else counts[0] / counts[1]


def progress_text(job: JobRecord) -> str:
    """The PROGRESS cell: a percentage, else the last message, else ``running`` for a
    running job that reports nothing (so it does not look stuck), else ``-``."""
    part = fraction(job)
    if part is not None:
        return f"{part * 100:.0f}%"
    text = cut(job.progress_message or "", 20)
    if text:
        return text
    return "running" if job.status is JobStatus.RUNNING else "-"


def cancel_text(job: JobRecord) -> str:
    """How a job was cancelled or interrupted, each part said once:
    ``cancelled (manual)``, ``cancelled (manual): user 42 closed the tab``,
    ``cancelled (timeout, forced: its worker was killed): ...``."""
    reason = job.cancel_reason or ("died" if job.status is JobStatus.INTERRUPTED else "?")
    text = f"{job.status.value} ({reason}"
    if job.forced:
        text += ", forced: its worker was killed"
    text += ")"
    message = job.cancel_message
    if message is None and job.status is JobStatus.INTERRUPTED:
        message = job.error
    # The store's stand-in message only repeats the reason.
    if message and message != f"job {job.id} was cancelled ({reason})":
        text += f": {message}"
    return visible(text)


def changes(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """What ``watch --json`` prints for one job: the whole record the first time, then
    its id and the fields that changed, or nothing when none did."""
    if before is None:
        return after
    delta = {key: value for key, value in after.items() if before.get(key) != value}
    return {"id": after["id"], **delta} if delta else {}


def outcome(job: JobRecord, width: int | None = None) -> str:
    status = job.status.value
    if status == "completed":
        return cut(to_json(job.result), width)
    if status == "failed":
        return cut(job.error or "failed", width)
    if status in ("cancelled", "interrupted"):
        why = job.cancel_reason or ("died" if status == "interrupted" else "?")
        if job.forced:
            why += ", forced"
        if job.partial_result is None:
            return cut(f"{why}; no partial result", width)
        return cut(f"{why}; partial={to_json(job.partial_result)}", width)
    if status == "running" and job.cancel_requested:
        return "stopping…"
    return ""


JOB_HEADERS = ("ID", "STATUS", "NAME", "TASK", "TRY", "PROGRESS", "TIME", "OUTCOME")


def job_rows(jobs: Sequence[JobRecord]) -> list[list[str]]:
    now = time.time()
    return [
        [
            str(job.id),
            job.status.value,
            cut(job.name or "-"),
            cut(job.task),
            str(job.attempts),
            progress_text(job),
            elapsed(job, now),
            outcome(job),
        ]
        for job in jobs
    ]

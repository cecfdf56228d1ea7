"""Human output for the CLI: plain tables, progress bars, ANSI colours on terminals only."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from ._model import JobRecord

_COLOURS = {
    "queued": "2",  # dim
    "running": "36",  # cyan
    "completed": "32",  # green
    "failed": "31",  # red
    "cancelled": "33",  # yellow
    "interrupted": "35",  # magenta
    "bold": "1",
}


def paint(text: str, colour: str, enabled: bool) -> str:
    code = _COLOURS.get(colour)
    if not enabled or code is None:
        return text
    return f"\x1b[{code}m{text}\x1b[0m"


def cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def to_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def pretty_json(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    colour_column: int | None = None,
    colour: bool = False,
) -> str:
    """Left-aligned columns separated by two spaces; the colour column is painted by
    its own text (a job status)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [
        "  ".join(
            paint(h.ljust(w), "bold", colour) for h, w in zip(headers, widths, strict=True)
        ).rstrip()
    ]
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            padded = cell.ljust(widths[i])
            if i == colour_column:
                padded = paint(padded, cell, colour)
            cells.append(padded)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 600:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m"


def elapsed(job: JobRecord, now: float | None = None) -> str:
    if job.started_at is None:
        return "-"
    end = job.ended_at if job.ended_at is not None else (now or time.time())
    return duration(end - job.started_at)


def fraction(job: JobRecord) -> float | None:
    """How far the job got, from its last progress metadata (``done``/``total`` or
    ``percent``), or None."""
    meta = job.progress
    if not isinstance(meta, dict):
        return None
    done, total = meta.get("done"), meta.get("total")
    if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0:
        return max(0.0, min(1.0, done / total))
    percent = meta.get("percent")
    if isinstance(percent, (int, float)):
        return max(0.0, min(1.0, percent / 100))
    return None


def progress_text(job: JobRecord) -> str:
    part = fraction(job)
    if part is not None:
        return f"{part * 100:.0f}%"
    return cut(job.progress_message or "", 20) or "-"


def bar(part: float | None, width: int = 20) -> str:
    if part is None:
        return "[" + " " * width + "]"
    filled = round(part * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def outcome(job: JobRecord, width: int = 48) -> str:
    status = job.status.value
    if status == "completed":
        return cut(to_json(job.result), width)
    if status == "failed":
        return cut(job.error or "failed", width)
    if status in ("cancelled", "interrupted"):
        why = job.cancel_reason or ("died" if status == "interrupted" else "?")
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
            cut(job.name or "-", 28),
            cut(job.task, 36),
            str(job.attempts),
            progress_text(job),
            elapsed(job, now),
            outcome(job),
        ]
        for job in jobs
    ]


def jobs_table(jobs: Sequence[JobRecord], colour: bool) -> str:
    return table(JOB_HEADERS, job_rows(jobs), colour_column=1, colour=colour)


def live_lines(jobs: Sequence[JobRecord], colour: bool) -> list[str]:
    """The ``watch`` view: a bar per running or queued job, then the finished ones."""
    now = time.time()
    active = [job for job in jobs if not job.finished]
    done = [job for job in jobs if job.finished]
    lines: list[str] = []
    name_width = max([len(job.name or job.task) for job in jobs] + [4])
    name_width = min(name_width, 30)
    for job in active:
        label = cut(job.name or job.task, name_width).ljust(name_width)
        status = paint(job.status.value.ljust(9), job.status.value, colour)
        lines.append(
            f"{job.id:>5}  {label}  {status}  {bar(fraction(job))}  "
            f"{cut(job.progress_message or '', 24):<24}  {elapsed(job, now)}"
        )
    if done:
        if active:
            lines.append("")
        lines.extend(jobs_table(done, colour).splitlines())
    return lines

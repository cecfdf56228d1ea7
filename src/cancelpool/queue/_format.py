"""Human output for the CLI: plain tables, progress bars, ANSI colours on terminals only.

Text that jobs or other users control (names, tasks, progress messages, metadata,
results, errors, tracebacks, paths and patterns read from the database) is data: every
human-readable line passes it through :func:`visible` (one-line cells) or
:func:`visible_lines` (tracebacks), so no escape sequence, bidi override or forged line
reaches a terminal or a log. ``--json`` output is exact JSON and is not touched.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from ._model import JobRecord, JobStatus

_COLOURS = {
    "queued": "2",  # dim
    "running": "36",  # cyan
    "completed": "32",  # green
    "failed": "31",  # red
    "cancelled": "33",  # yellow
    "interrupted": "35",  # magenta
    "bold": "1",
}


# Characters that move the cursor, change the terminal's state or reorder or hide text:
# C0 and C1 controls and DEL (escape sequences, BEL, CR, backspace), the Unicode format
# characters that matter in a terminal (bidi embeddings, overrides and isolates,
# zero-width characters, the BOM, interlinear annotations, tag characters), line and
# paragraph separators, and lone surrogates (not encodable, so not printable).
_UNSAFE_RANGES = (
    (0x00, 0x1F),
    (0x7F, 0x9F),
    (0x061C, 0x061C),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0xD800, 0xDFFF),
    (0xE0000, 0xE007F),
)


def _char_class(ranges: tuple[tuple[int, int], ...]) -> re.Pattern[str]:
    return re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges) + "]")


_UNSAFE = _char_class(_UNSAFE_RANGES)
# Tracebacks and pretty JSON keep their line structure: only \n and \t pass.
_UNSAFE_BUT_NEWLINE = _char_class(((0x00, 0x08), (0x0B, 0x1F), *_UNSAFE_RANGES[1:]))
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` for one line of a terminal: control and format characters shown as
    ``\\x1b``, ``\\u202e``, newlines as ``\\n`` (so a value can never forge a line or
    drive the terminal). Printable text, including non-ASCII letters, is unchanged."""
    return _UNSAFE.sub(_escape, text)


def visible_lines(text: str) -> str:
    """Like :func:`visible`, but newlines and tabs stay (tracebacks)."""
    return _UNSAFE_BUT_NEWLINE.sub(_escape, text)


def quoted(text: str) -> str:
    """Several lines of a job's text (a traceback) for a terminal: each line made
    visible and marked ``| ``, so that no line the job wrote passes for one of ours."""
    return "\n".join("| " + visible_lines(line) for line in text.splitlines())


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells characters beyond the BMP as a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def visible_json(value: Any) -> str:
    """Indented JSON that is still valid JSON and safe on a terminal: the characters
    :func:`visible` escapes are written as JSON ``\\uXXXX`` escapes (only inside
    strings, where they can be; the layout's own newlines stay)."""
    return _UNSAFE_BUT_NEWLINE.sub(_json_escape, pretty_json(value))


def paint(text: str, colour: str, enabled: bool) -> str:
    code = _COLOURS.get(colour)
    if not enabled or code is None:
        return text
    return f"\x1b[{code}m{text}\x1b[0m"


def cut(text: str, width: int) -> str:
    """One table cell: whitespace runs folded, unsafe characters made visible, at most
    ``width`` characters."""
    text = " ".join(visible(text).split())
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
    rows = [[visible(cell) for cell in row] for row in rows]
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
    """The PROGRESS cell: a percentage, else the last message, else ``running`` for a
    running job that reports nothing (so it does not look stuck), else ``-``."""
    part = fraction(job)
    if part is not None:
        return f"{part * 100:.0f}%"
    text = cut(job.progress_message or "", 20)
    if text:
        return text
    return "running" if job.status is JobStatus.RUNNING else "-"


#: How fast the marker of a running job without a fraction moves, in cells per second:
#: visibly alive at ``watch``'s redraw rate, slow enough to read.
_SPIN_RATE = 8


def bar(part: float | None, width: int = 20, *, running: bool = False) -> str:
    """``[####----]``; for a running job with no fraction, a marker ``<=>`` that moves
    across the bar as time passes."""
    if part is None:
        if not running:
            return "[" + " " * width + "]"
        span = width - 3
        step = int(time.monotonic() * _SPIN_RATE) % (2 * span)
        at = step if step < span else 2 * span - step
        return "[" + " " * at + "<=>" + " " * (span - at) + "]"
    filled = round(part * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


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


def outcome(job: JobRecord, width: int = 48) -> str:
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
            f"{job.id:>5}  {label}  {status}  "
            f"{bar(fraction(job), running=job.status is JobStatus.RUNNING)}  "
            f"{cut(job.progress_message or '', 24):<24}  {elapsed(job, now)}"
        )
    if done:
        if active:
            lines.append("")
        lines.extend(jobs_table(done, colour).splitlines())
    return lines

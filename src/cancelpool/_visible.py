"""Job-provided text made safe for a terminal: one rule, used by the CLI and by
:mod:`cancelpool.progress_display` (a leaf module: nothing here imports rich, the queue
or the pool).

Names, tasks, progress messages, errors and paths that jobs, other users or a database
row control are data: :func:`visible` shows their control and format characters as
escapes, so no escape sequence, bidi override or forged line reaches a terminal or a log.
"""

from __future__ import annotations

import math
import re
from typing import Any

# Characters that move the cursor, change the terminal's state or reorder or hide text:
# C0 and C1 controls and DEL (escape sequences, BEL, CR, backspace), every Unicode format
# character (category Cf: bidi embeddings, overrides and isolates, zero-width characters,
# the soft hyphen, the BOM, interlinear annotations, tag characters, ...), line and
# paragraph separators, and lone surrogates (not encodable, so not printable).
_UNSAFE_RANGES = (
    (0x00, 0x1F),
    (0x7F, 0x9F),
    (0x00AD, 0x00AD),  # soft hyphen: invisible in most terminals ("adm\xadin")
    (0x0600, 0x0605),  # the other format characters (Unicode category Cf), which a
    (0x061C, 0x061C),  # terminal shows as nothing, or as something else than they are
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0xD800, 0xDFFF),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
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


#: Characters of one value that a table cell or a progress line shows at most: more
#: than any terminal is wide, and a bound on the work (escaping, folding and fitting a
#: 10 MB progress message took seconds per frame of ``watch``).
MAX_CELL_CHARS = 4096


def one_line(text: str) -> str:
    """``text`` as one cell: :func:`visible`, whitespace runs folded to one space, and
    only its first :data:`MAX_CELL_CHARS` characters (then an ellipsis)."""
    shown = " ".join(visible(text[:MAX_CELL_CHARS]).split())
    return shown + "…" if len(text) > MAX_CELL_CHARS else shown


def visible_lines(text: str) -> str:
    """Like :func:`visible`, but newlines and tabs stay (tracebacks)."""
    return _UNSAFE_BUT_NEWLINE.sub(_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells characters beyond the BMP as a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_visible(text: str) -> str:
    """JSON text (one line or indented) that stays valid JSON and is safe on a terminal:
    the characters :func:`visible` escapes, which can only be inside strings, become
    JSON ``\\uXXXX`` escapes; the layout's own newlines stay."""
    return _UNSAFE_BUT_NEWLINE.sub(_json_escape, text)


def done_total(metadata: Any) -> tuple[float, float] | None:
    """How far a job got, from the metadata of its last progress report: ``(done,
    total)`` from ``done``/``total`` (total > 0), else ``(percent, 100)`` from
    ``percent``, clamped to ``[0, total]``; None when neither is there. Booleans, NaN and
    infinities are not counts (metadata is whatever the job sent)."""
    if not isinstance(metadata, dict):
        return None

    def number(value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        value = float(value)
        return value if math.isfinite(value) else None

    done, total = number(metadata.get("done")), number(metadata.get("total"))
    if done is not None and total is not None and total > 0:
        return max(0.0, min(total, done)), total
    percent = number(metadata.get("percent"))
    if percent is not None:
        return max(0.0, min(100.0, percent)), 100.0
    return None

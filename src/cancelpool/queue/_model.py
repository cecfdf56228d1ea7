"""What a queued job is: its status, its validated spec, and the JSON it is stored as.

Everything a job carries (arguments, result, progress, partial result) is JSON encoded
with msgspec; nothing is ever unpickled from the database. Tasks are named by import
path (``package.module:function``) and checked against glob patterns such as
``'myapp.tasks:*'``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import msgspec

from .._core import _validate
from ._exceptions import InvalidJob
from ._taskref import check_allow_pattern as check_allow_pattern
from ._taskref import parse_task_ref
from ._taskref import task_allowed as _task_allowed

#: Largest encoded arguments of one job. Bigger payloads belong in files or a blob
#: store, with their path as the argument; a cap keeps one bad submit from bloating the
#: database and every ``ls``.
MAX_ARGS_BYTES = 1 << 20
#: Largest encoded result, partial result or progress kept for one job.
MAX_RESULT_BYTES = 16 << 20
#: Longest job name; names are labels for patterns and tables, not data.
MAX_NAME_LENGTH = 200
#: Longest name pattern and cancel message: labels and one sentence, not data.
MAX_PATTERN_LENGTH = 200
MAX_MESSAGE_LENGTH = 1000
#: Deepest nesting of lists and objects in arguments and results. Real data is a few
#: levels deep; a cap far below Python's recursion limit keeps every encoder and
#: decoder on the way (msgspec, json in other tools) from overflowing its stack.
MAX_JSON_DEPTH = 64
#: Job ids are SQLite INTEGERs (64-bit signed); a larger number can name no job.
MAX_JOB_ID = 2**63 - 1
#: Most jobs one listing returns: more is a dump, for which ``--json`` with a status
#: filter or sqlite3 itself is the better tool; a cap keeps ``ls`` from building
#: gigabytes of rows in memory.
MAX_LIST_LIMIT = 1_000_000
#: Longest timeout, grace or wait accepted (a year): beyond it a number is a mistake,
#: and event loops misbehave with deadlines near the float range's end.
MAX_SECONDS = 365 * 24 * 3600.0

# Letters, digits and a few separators; no spaces, quotes, control characters or glob
# metacharacters, so a name is always safe in a shell and matched literally by patterns.
_NAME_RE = re.compile(r"[A-Za-z0-9_.:@/+=,-]+")


class JobStatus(enum.StrEnum):
    """Where a job is in its life. The last four are final."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        """True for completed, failed, cancelled and interrupted."""
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


FINISHED_STATUSES = tuple(s.value for s in JobStatus if s.finished)

#: How the error column of a cancelled job starts when the job ignored its cancellation
#: past the server's ``--cancel-grace`` and its worker was killed (a forced stop).
FORCED_STOP = "forced stop: "


@dataclass(frozen=True)
class JobRecord:
    """One job as stored, with its JSON fields decoded.

    ``progress`` is the metadata of the last progress report; ``partial_result`` the
    last partial result (from a cancellation, or checkpointed by the task under the
    progress key ``"partial_result"``).
    """

    id: int
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    name: str | None
    priority: int
    timeout: float | None
    parent: int | None
    status: JobStatus
    owner: str | None
    attempts: int
    submitted_at: float
    started_at: float | None
    ended_at: float | None
    progress_message: str | None
    progress: dict[str, Any] | None
    result: Any
    partial_result: Any
    error: str | None
    traceback: str | None
    cancel_requested: bool
    cancel_reason: str | None
    cancel_message: str | None

    @property
    def finished(self) -> bool:
        """True once the job reached a final status."""
        return self.status.finished

    @property
    def forced(self) -> bool:
        """True if the job was cancelled but ignored it, so its worker was killed: its
        partial result is the last one it checkpointed."""
        return self.status is JobStatus.CANCELLED and (self.error or "").startswith(FORCED_STOP)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict of every field (``status`` as its string), and
        ``forced``."""
        data = {field: getattr(self, field) for field in self.__dataclass_fields__}
        data["status"] = self.status.value
        data["forced"] = self.forced
        return data


# -- validation ----------------------------------------------------------------------------
def check_task(task: object) -> str:
    """Return ``task`` if it is a task reference ``package.module:function``."""
    return str(parse_task_ref(task))


def check_name(name: object) -> str | None:
    """Return ``name`` if it is None or a safe label (letters, digits, ``_.:@/+=,-``)."""
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise InvalidJob(f"job name must be a non-empty string, not {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidJob(f"job name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}")
    if not _NAME_RE.fullmatch(name):
        raise InvalidJob(
            f"job name {name!r} has characters other than letters, digits and _.:@/+=,- "
            "(spaces, quotes and glob characters * ? [ ] are refused so patterns stay exact)"
        )
    return name


def check_pattern(pattern: object) -> str:
    """Return a non-empty glob pattern (``'user_42_*'``) of printable characters."""
    if not isinstance(pattern, str) or not pattern:
        raise InvalidJob(f"a pattern must be a non-empty glob like 'user_42_*', not {pattern!r}")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidJob(
            f"the pattern is {len(pattern)} characters long; the limit is {MAX_PATTERN_LENGTH}"
        )
    if not pattern.isprintable():
        raise InvalidJob(f"the pattern {pattern!r} has control characters; job names have none")
    return pattern


def check_message(message: object) -> str | None:
    """Return a cancel message: None, or one line of printable text."""
    if message is None:
        return None
    if not isinstance(message, str):
        raise InvalidJob(f"a cancel message must be a string, not {message!r}")
    if len(message) > MAX_MESSAGE_LENGTH:
        raise InvalidJob(
            f"the message is {len(message)} characters long; the limit is {MAX_MESSAGE_LENGTH}"
        )
    if not message.isprintable():
        raise InvalidJob(
            f"the message {message!r} has control characters or line breaks; give one line"
        )
    return message


def check_seconds(
    value: object,
    what: str,
    *,
    allow_zero: bool = True,
    allow_none: bool = True,
) -> float | None:
    """Return ``value`` (a number or a timedelta) as float seconds, >= 0 (> 0 without
    ``allow_zero``) and at most :data:`MAX_SECONDS`; None passes when ``allow_none``.

    The rule of every layer (``_core._validate.seconds``), with the queue's maximum
    and its error: every timeout, grace and wait of the queue and the CLI."""
    if value is None and allow_none:
        return None
    try:
        # Any value may come in: the rule itself refuses what is no time.
        seconds = cast("float | timedelta", value)
        return _validate.seconds(seconds, what, positive=not allow_zero, maximum=MAX_SECONDS)
    except (TypeError, ValueError) as exc:
        raise InvalidJob(str(exc)) from None


def check_limit(limit: object) -> int | None:
    """Return a listing limit: None, or an int from 1 to :data:`MAX_LIST_LIMIT`."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidJob(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, not {limit!r}")
    return limit


def check_timeout(timeout: object) -> float | None:
    """Return ``timeout`` as a float of seconds > 0, or None."""
    return check_seconds(timeout, "timeout", allow_zero=False)


def check_priority(priority: object) -> int:
    """Return ``priority`` if it is an int in the signed 32-bit range (higher runs first)."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidJob(f"priority must be an integer, not {priority!r}")
    if not -(2**31) <= priority < 2**31:
        raise InvalidJob(f"priority {priority} is out of range (a 32-bit integer)")
    return priority


def check_job_id(job_id: object) -> int:
    """Return ``job_id`` if it is a positive int that fits a database id."""
    if isinstance(job_id, bool) or not isinstance(job_id, int) or not 1 <= job_id <= MAX_JOB_ID:
        raise InvalidJob(f"a job id is an integer from 1 to {MAX_JOB_ID}, not {job_id!r}")
    return job_id


def task_allowed(task: str, patterns: Iterable[str]) -> bool:
    """True if ``task`` is a valid reference one of the ``--allow`` patterns admits
    (``*`` and ``?`` match within one segment: never a dot or the colon)."""
    return _task_allowed(task, patterns)


# -- JSON ------------------------------------------------------------------------------------
_encoder = msgspec.json.Encoder()


def check_json_value(value: Any, where: str) -> None:
    """Raise InvalidJob, naming the place (``args[1]``, ``kwargs['x'][0]``), if ``value``
    is not JSON data that comes back unchanged.

    Accepted: None, bool, int, finite float, str, list, dict with str keys, and tuples
    (which come back as lists). Refused: NaN and infinities (JSON has no such numbers;
    encoders would write ``null``), bytes, sets, non-string keys (they would become
    strings), lone surrogates, any other object, and nesting deeper than
    :data:`MAX_JSON_DEPTH`. Iterative, so no input can exhaust the stack.
    """
    todo: list[tuple[Any, str, int]] = [(value, where, 0)]
    while todo:
        item, place, depth = todo.pop()
        if item is None or isinstance(item, (bool, int)):
            continue
        if isinstance(item, float):
            if math.isnan(item) or math.isinf(item):
                raise InvalidJob(
                    f"{place} is {item!r}, which JSON cannot carry; send a finite number, "
                    "a string or None"
                )
            continue
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidJob(
                    f"{place} is a string with a lone surrogate, which is not text; "
                    "send valid Unicode"
                ) from None
            continue
        if isinstance(item, (list, tuple, dict)):
            if depth >= MAX_JSON_DEPTH:
                shown = place if len(place) <= 80 else place[:60] + "...]"
                raise InvalidJob(
                    f"{shown} is nested deeper than {MAX_JSON_DEPTH} levels; flatten it"
                )
            if isinstance(item, dict):
                for key, sub in item.items():
                    if not isinstance(key, str):
                        raise InvalidJob(
                            f"{place} has the key {key!r} ({type(key).__name__}); JSON object "
                            "keys are strings (it would come back as a string)"
                        )
                    todo.append((sub, f"{place}[{key!r}]", depth + 1))
            else:
                todo.extend((sub, f"{place}[{i}]", depth + 1) for i, sub in enumerate(item))
            continue
        raise InvalidJob(
            f"{place} is of type {type(item).__name__}, but it must be JSON data (dict, "
            "list, str, int, float, bool or None)"
        )


def encode_json(value: Any, what: str, limit: int = MAX_RESULT_BYTES) -> str:
    """Encode ``value`` as JSON text; InvalidJob if it is not JSON data that round-trips
    (see :func:`check_json_value`, ``what`` names it there) or too large."""
    check_json_value(value, what)
    try:
        data = _encoder.encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise InvalidJob(
            f"{what} must be JSON data (dict, list, str, int, float, bool, None): {exc}"
        ) from None
    if len(data) > limit:
        raise InvalidJob(f"{what} is {len(data)} bytes of JSON; the limit is {limit} bytes")
    return data.decode()


def encode_json_lossy(value: Any, limit: int = MAX_RESULT_BYTES) -> str:
    """Encode ``value`` as JSON; if it is not JSON data or too large, its ``repr`` (cut)."""
    try:
        return encode_json(value, "value", limit)
    except InvalidJob:
        try:
            text = repr(value)
        except Exception as exc:  # a job's object whose __repr__ fails is still reported
            text = f"<{type(value).__name__} whose repr failed: {type(exc).__name__}>"
        if len(text) > 1000:
            text = text[:1000] + "..."
        return _encoder.encode(f"<not JSON: {text}>").decode()


def decode_json(text: str | bytes | None) -> Any:
    """Decode stored JSON text (None stays None)."""
    if text is None:
        return None
    return msgspec.json.decode(text)


#: A JSON escape of a UTF-16 surrogate, and the pair of a high and a low one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE_PAIR = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def parse_args_json(text: str) -> tuple[list[Any], dict[str, Any]]:
    """Arguments from the command line: a JSON array is positional, an object keyword
    arguments, anything else one positional argument (``'[{"a": 1}]'`` passes a dict)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_ARGS_BYTES:
        raise InvalidJob(f"the arguments are {size} bytes; the limit is {MAX_ARGS_BYTES} bytes")
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        # msgspec says "truncated" or "malformed" for an unpaired one: say what it is.
        if _SURROGATE_ESCAPE.search(_SURROGATE_PAIR.sub("", text)):
            raise InvalidJob(
                "the arguments hold a \\uD800-\\uDFFF escape outside a valid pair (a lone "
                "surrogate, which is not text); write the character itself or its pair"
            ) from None
        raise InvalidJob(f"the arguments are not valid JSON ({exc}): {text[:80]!r}") from None
    except RecursionError:
        raise InvalidJob(
            f"the arguments are nested deeper than {MAX_JSON_DEPTH} levels; flatten them"
        ) from None
    except UnicodeEncodeError:
        raise InvalidJob("the arguments are not valid UTF-8 text") from None
    if isinstance(value, list):
        args, kwargs = value, {}
    elif isinstance(value, dict):
        args, kwargs = [], value
    else:
        args, kwargs = [value], {}
    check_json_value(args, "args")
    check_json_value(kwargs, "kwargs")
    return args, kwargs

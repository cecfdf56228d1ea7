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
from typing import Any

import msgspec

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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict of every field (``status`` as its string)."""
        data = {field: getattr(self, field) for field in self.__dataclass_fields__}
        data["status"] = self.status.value
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
    """Return a non-empty glob pattern (``'user_42_*'``)."""
    if not isinstance(pattern, str) or not pattern:
        raise InvalidJob(f"a pattern must be a non-empty glob like 'user_42_*', not {pattern!r}")
    return pattern


def check_timeout(timeout: object) -> float | None:
    """Return ``timeout`` as a float of seconds > 0, or None."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise InvalidJob(f"timeout must be a number of seconds, not {timeout!r}")
    if math.isnan(timeout) or math.isinf(timeout) or timeout <= 0:
        raise InvalidJob(f"timeout must be a finite number of seconds > 0, not {timeout!r}")
    return float(timeout)


def check_priority(priority: object) -> int:
    """Return ``priority`` if it is an int in the signed 32-bit range (higher runs first)."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidJob(f"priority must be an integer, not {priority!r}")
    if not -(2**31) <= priority < 2**31:
        raise InvalidJob(f"priority {priority} is out of range (a 32-bit integer)")
    return priority


def check_job_id(job_id: object) -> int:
    """Return ``job_id`` if it is a positive int."""
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
        raise InvalidJob(f"a job id is a positive integer, not {job_id!r}")
    return job_id


def task_allowed(task: str, patterns: Iterable[str]) -> bool:
    """True if ``task`` is a valid reference one of the ``--allow`` patterns admits
    (``*`` and ``?`` match within one segment: never a dot or the colon)."""
    return _task_allowed(task, patterns)


# -- JSON ------------------------------------------------------------------------------------
_encoder = msgspec.json.Encoder()


def encode_json(value: Any, what: str, limit: int = MAX_RESULT_BYTES) -> str:
    """Encode ``value`` as JSON text; InvalidJob if it is not JSON data or too large."""
    try:
        data = _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
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
        text = repr(value)
        if len(text) > 1000:
            text = text[:1000] + "..."
        return _encoder.encode(f"<not JSON: {text}>").decode()


def decode_json(text: str | bytes | None) -> Any:
    """Decode stored JSON text (None stays None)."""
    if text is None:
        return None
    return msgspec.json.decode(text)


def parse_args_json(text: str) -> tuple[list[Any], dict[str, Any]]:
    """Arguments from the command line: a JSON array is positional, an object keyword
    arguments, anything else one positional argument (``'[{"a": 1}]'`` passes a dict)."""
    if len(text.encode()) > MAX_ARGS_BYTES:
        raise InvalidJob(
            f"the arguments are {len(text.encode())} bytes; the limit is {MAX_ARGS_BYTES} bytes"
        )
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise InvalidJob(f"the arguments are not valid JSON ({exc}): {text[:80]!r}") from None
    if isinstance(value, list):
        return value, {}
    if isinstance(value, dict):
        return [], value
    return [value], {}

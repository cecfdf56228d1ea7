"""What a task reference is, and which references an ``--allow`` pattern admits.

A task reference names a function; it is never an expression::

    myapp.tasks:resize          module path : one public identifier
    ^^^^^^^^^^^ ^^^^^^
    segments    function (no dots, no leading underscore)

Module segments are ASCII identifiers that are not dunders (``__main__``, ``__init__``)
and not keywords. An allow pattern has the same shape, and each of its segments is a
glob of ``*`` and ``?`` matched against one segment only: ``*`` never crosses a dot or
the colon, so ``myapp.tasks:*`` admits ``myapp.tasks:resize`` but neither
``myapp.tasks.sub:f`` nor ``myapp.tasks_old:f``. The first segment of a pattern is a
literal package name (``*:*`` or ``*.tasks:*`` would hand every installed module to the
submitters).

These checks run on the string alone, before anything is imported; what the name then
resolves to is checked by :func:`cancelpool.queue._task.load_task`.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from ._exceptions import InvalidJob

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEGMENT_GLOB = re.compile(r"[A-Za-z0-9_*?]+")
#: The longest task reference or pattern accepted: far above any real module path, and
#: a bound on the work one hostile string can cause.
MAX_REF_LENGTH = 300


@dataclass(frozen=True)
class TaskRef:
    """A parsed task reference: ``module`` (dotted) and ``function`` (one identifier)."""

    module: str
    function: str

    def __str__(self) -> str:
        return f"{self.module}:{self.function}"


def _bad_module_segment(segment: str) -> bool:
    return (
        not _IDENT.fullmatch(segment)
        or keyword.iskeyword(segment)
        or (segment.startswith("__") and segment.endswith("__"))
    )


def parse_task_ref(task: object) -> TaskRef:
    """Parse ``package.module:function``; InvalidJob (a sentence) if it is anything else."""
    if not isinstance(task, str):
        raise InvalidJob(f"a task is a string like 'myapp.tasks:resize', not {task!r}")
    shown = task if len(task) <= 80 else task[:80] + "..."
    example = "(a module path, a colon, then one function name)"
    if len(task) > MAX_REF_LENGTH or task.count(":") != 1:
        raise InvalidJob(
            f"task {shown!r} is not an import path like 'myapp.tasks:resize' {example}"
        )
    module, function = task.split(":")
    segments = module.split(".")
    if not module or any(_bad_module_segment(s) for s in segments):
        raise InvalidJob(
            f"task {shown!r} is not an import path like 'myapp.tasks:resize' {example}; "
            "module segments are identifiers, not dunders such as __main__"
        )
    if "." in function:
        raise InvalidJob(
            f"task {shown!r} names an attribute chain; a task is one function of its "
            f"module, like '{module}:resize'"
        )
    if not _IDENT.fullmatch(function) or keyword.iskeyword(function):
        raise InvalidJob(
            f"task {shown!r} is not an import path like 'myapp.tasks:resize' {example}"
        )
    if function.startswith("_"):
        raise InvalidJob(
            f"task {shown!r} names a private name; only public functions (no leading "
            "underscore) can be tasks"
        )
    return TaskRef(module, function)


def check_allow_pattern(pattern: object) -> str:
    """Return ``pattern`` if it is a valid ``--allow`` pattern, else InvalidJob."""
    if not isinstance(pattern, str) or not pattern:
        raise InvalidJob(
            f"an --allow pattern is 'package.module:function' with * or ? inside segments, "
            f"like 'myapp.tasks:*', not {pattern!r}"
        )
    _compile(pattern)
    return pattern


@lru_cache(maxsize=256)
def _compile(pattern: str) -> tuple[re.Pattern[str], int]:
    """The regex of ``pattern`` (anchored, per segment) and its number of module segments."""
    shown = pattern if len(pattern) <= 80 else pattern[:80] + "..."
    hint = (
        f"--allow pattern {shown!r} must look like 'myapp.tasks:*': dotted module segments, "
        "a colon, a function; * and ? match within one segment"
    )
    if len(pattern) > MAX_REF_LENGTH or pattern.count(":") != 1:
        raise InvalidJob(hint)
    module, function = pattern.split(":")
    segments = module.split(".")
    if any(not _SEGMENT_GLOB.fullmatch(s) for s in (*segments, function)):
        raise InvalidJob(hint)
    if not _IDENT.fullmatch(segments[0]):
        raise InvalidJob(
            f"--allow pattern {shown!r} must start with a package name without * or ? "
            f"(like 'myapp.tasks:*'), so that it cannot admit every installed module"
        )
    parts = [_segment_regex(s) for s in segments]
    regex = r"\.".join(parts) + ":" + _segment_regex(function)
    return re.compile(regex), len(segments)


def _segment_regex(glob: str) -> str:
    return "".join(
        "[A-Za-z0-9_]*" if c == "*" else "[A-Za-z0-9_]" if c == "?" else re.escape(c) for c in glob
    )


def ref_allowed(ref: TaskRef, patterns: Iterable[str]) -> bool:
    """True if one of ``patterns`` admits ``ref``; invalid patterns admit nothing."""
    text = str(ref)
    for pattern in patterns:
        try:
            regex, _ = _compile(pattern)
        except InvalidJob:
            continue
        if regex.fullmatch(text):
            return True
    return False


def allow_regex(patterns: Iterable[str]) -> str:
    """One anchored regular expression that matches exactly the task references the
    valid ``patterns`` admit (none valid: it matches nothing), written in the syntax
    Python's ``re`` and PostgreSQL's ``~`` share, so a claim can select only the jobs a
    server may run (an invalid reference can still match: ``load_task`` refuses it)."""
    parts = []
    for pattern in patterns:
        try:
            regex, _ = _compile(pattern)
        except InvalidJob:
            continue
        parts.append(regex.pattern)
    return "^(" + "|".join(parts) + ")$" if parts else "^$"  # no task is empty


def task_allowed(task: str, patterns: Iterable[str]) -> bool:
    """True if ``task`` is a valid reference that one of ``patterns`` admits."""
    try:
        ref = parse_task_ref(task)
    except InvalidJob:
        return False
    return ref_allowed(ref, patterns)

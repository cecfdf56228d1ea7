"""The job state machine, written down once: every store's writers take the statuses
a job may leave from here, so no write can move a job along an edge not in the table.

::

    queued --claim--> running --finish--> completed | failed | cancelled | interrupted
      |                  |
      |                  +--release / recover (attempts left)--> queued
      +--cancel / refused at claim--> cancelled | failed

Final statuses have no way out: a finishing write is fenced on ``status = 'running'``
and on the node that owns the claim, so a node that lost its claim changes nothing.
"""

from __future__ import annotations

import re

from ._model import JobStatus

Q, R = JobStatus.QUEUED, JobStatus.RUNNING

#: status -> the statuses it may move to.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    Q: frozenset({R, JobStatus.CANCELLED, JobStatus.FAILED}),
    R: frozenset(
        {Q, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
    JobStatus.INTERRUPTED: frozenset(),
}


def allowed(old: JobStatus | str, new: JobStatus | str) -> bool:
    """True if a job may move from ``old`` to ``new``."""
    return JobStatus(new) in TRANSITIONS[JobStatus(old)]


def sources(new: JobStatus | str) -> tuple[str, ...]:
    """The statuses a job may be in for a write to move it to ``new`` (as strings, in a
    fixed order, for ``WHERE status IN (...)``)."""
    target = JobStatus(new)
    return tuple(s.value for s in JobStatus if target in TRANSITIONS[s])


def check(old: JobStatus | str, new: JobStatus | str) -> None:
    """Raise ValueError if ``old -> new`` is not an edge of the state machine."""
    if not allowed(old, new):
        raise ValueError(f"a job cannot move from {JobStatus(old).value} to {JobStatus(new).value}")


#: The statuses a job can still leave (not final): what a cancel or a pattern selects.
UNFINISHED: tuple[str, ...] = tuple(s.value for s in JobStatus if TRANSITIONS[s])

_LITERAL_RE = re.compile(r"[a-z]+")


def literal(status: JobStatus | str) -> str:
    """``status`` as an SQL string literal. Only values of the enum pass, which are
    plain lower-case words, so there is nothing to escape. Writers inline statuses
    rather than bind them so that the partial indexes on ``status`` stay usable."""
    value = JobStatus(status).value
    if not _LITERAL_RE.fullmatch(value):  # pragma: no cover - a new status of another shape
        raise ValueError(f"status {value!r} cannot be written as a plain SQL literal")
    return f"'{value}'"


def status_in(*statuses: JobStatus | str) -> str:
    """SQL ``status = 'x'`` or ``status IN ('x', 'y')`` of these statuses."""
    if not statuses:
        raise ValueError("status_in() needs at least one status")
    if len(statuses) == 1:
        return f"status = {literal(statuses[0])}"
    return f"status IN ({', '.join(literal(s) for s in statuses)})"


def edge(old: JobStatus | str, new: JobStatus | str) -> str:
    """The fence of a write that moves a job from ``old`` to ``new``: SQL
    ``status = 'old'``, after checking that the edge is in the table (ValueError if
    not, so a writer cannot even be written along a missing edge)."""
    check(old, new)
    return status_in(old)


def into(new: JobStatus | str) -> str:
    """The fence of a write to ``new`` from any status allowed to reach it."""
    return status_in(*sources(new))

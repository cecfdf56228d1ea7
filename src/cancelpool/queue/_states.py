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


def where_source(new: JobStatus | str, placeholder: str = "?") -> tuple[str, tuple[str, ...]]:
    """SQL ``status IN (...)`` for a write to ``new``, and its parameters."""
    names = sources(new)
    return f"status IN ({', '.join(placeholder for _ in names)})", names

"""Typed records between the server and a store: what a claim hands over, what a
finished job leaves behind, and what a node looks like from the database."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClaimedJob:
    """A job a node claimed (now ``running`` and owned by it). JSON fields stay text:
    they are decoded in the server, never by the store."""

    id: int
    task: str
    args: str
    kwargs: str
    name: str | None
    timeout: float | None
    parent: int | None
    attempts: int = 1
    #: The submitter's trace context (untrusted text: see ``_tracing.parse``).
    trace_context: str | None = None


@dataclass(frozen=True)
class Outcome:
    """How a job ended on its node. ``status`` is a final status; JSON fields are text.

    A store writes it only while the job is still ``running`` and owned by the node
    (fenced), so an outcome of a node that lost its claim is dropped.
    """

    id: int
    status: str
    result: str | None = None
    error: str | None = None
    traceback: str | None = None
    partial_result: str | None = None
    cancel_reason: str | None = None
    cancel_message: str | None = None
    forced: bool = False
    #: Seconds the job ran in its worker (None: not known, e.g. it never started). The
    #: store dates its start that long before its end, on the store's own clock: a
    #: claimed job may wait for a worker, and TIME is the time it ran.
    ran_for: float | None = None


@dataclass(frozen=True)
class CancelOutcome:
    """What a cancel request did."""

    cancelled: tuple[int, ...]  #: queued jobs cancelled on the spot (they never run)
    requested: tuple[int, ...]  #: running jobs whose servers were asked to stop them
    finished: tuple[int, ...]  #: jobs that had already finished (left as they are)
    owners: tuple[str, ...]  #: servers to wake

    @property
    def count(self) -> int:
        return len(self.cancelled) + len(self.requested)


@dataclass(frozen=True)
class NodeInfo:
    """A live node (``cancelpool serve``) as ``cancelpool nodes`` shows it."""

    id: str
    host: str
    pid: int
    label: str | None
    running: int
    heartbeat_age: float
    workers: int
    allow: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "label": self.label,
            "running": self.running,
            "heartbeat_age": round(self.heartbeat_age, 3),
            "workers": self.workers,
            "allow": list(self.allow),
        }

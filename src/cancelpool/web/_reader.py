"""What the dashboard reads from a queue: rows, pages, a job with its children.

Everything goes through the public :class:`~cancelpool.queue.Queue` client and the
keyword-only ``list_jobs`` of its store (the one the CLI's ``ls`` and ``watch`` use), so
the same code reads the SQLite store and any other store behind ``Queue``. The queue has
no cursor and no "children of" query yet; this module builds both from windows of job
ids (ids only grow, and a child is always newer than its parent), with a bound on how
many ids one request may scan so no request can read the whole table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ..queue import JobRecord, JobStatus, Queue

#: The longest text a table row carries for a result, error or partial result: rows
#: are for scanning; the whole value is in the job's detail.
SUMMARY_CHARS = 200
#: Ids one page request scans at most before it returns a cursor to go on from. A rare
#: filter over millions of jobs costs a few queries per page, never a full scan.
MAX_SCAN_IDS = 100_000
#: The first window of ids a page reads, then doubled up to ``MAX_WINDOW``; one query's
#: ``IN`` list stays far below SQLite's 32,766 parameters.
FIRST_WINDOW = 200
MAX_WINDOW = 20_000
#: Descendants of one job shown at most, and ids scanned for them (about 0.6 s per
#: 10,000 here): a tree of thousands is a listing, for which the filters are the tool.
MAX_CHILDREN = 500
MAX_CHILD_SCAN = 20_000

_encode = msgspec.json.Encoder().encode


def _preview(value: Any) -> str:
    text = _encode(value).decode()
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def _number(progress: dict[str, Any] | None, key: str) -> float | None:
    value = (progress or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def job_row(job: JobRecord) -> dict[str, Any]:
    """The table row of a job: small, JSON, every job-provided text exact (the page
    shows it as text)."""
    if job.status is JobStatus.COMPLETED:
        summary = _preview(job.result)
    elif job.status is JobStatus.FAILED:
        summary = (job.error or "")[:SUMMARY_CHARS]
    elif job.partial_result is not None:
        summary = "partial: " + _preview(job.partial_result)
    else:
        summary = ""
    return {
        "id": job.id,
        "task": job.task,
        "name": job.name,
        "status": job.status.value,
        "parent": job.parent,
        "attempts": job.attempts,
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "progress_message": job.progress_message,
        "done": _number(job.progress, "done"),
        "total": _number(job.progress, "total"),
        "cancel_requested": job.cancel_requested,
        "forced": job.forced,
        "summary": summary,
    }


class JobReader:
    """Reads pages, jobs and trees from one queue. Blocking: call it from a thread."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def newest_id(self) -> int:
        """The id of the newest job, 0 when there is none."""
        jobs = self.queue.store.list_jobs(limit=1, newest_first=True)
        return jobs[0].id if jobs else 0

    def by_ids(self, ids: Sequence[int], status: Sequence[str] = ()) -> list[JobRecord]:
        """The jobs among ``ids`` (any order, chunked so no query is too large)."""
        found: list[JobRecord] = []
        ids = sorted(set(ids))
        for start in range(0, len(ids), MAX_WINDOW):
            found.extend(
                self.queue.store.list_jobs(ids=ids[start : start + MAX_WINDOW], status=status)
            )
        return found

    def page(
        self,
        *,
        status: Sequence[str],
        pattern: str | None,
        limit: int,
        before: int | None,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``limit`` rows, newest first, of jobs older than ``before``.

        Returns the rows and the cursor of the next page (None at the oldest job). A
        page that had to scan ``MAX_SCAN_IDS`` ids returns fewer rows and a cursor.
        """
        high = (self.newest_id() + 1) if before is None else before
        rows: list[dict[str, Any]] = []
        window = max(FIRST_WINDOW, 2 * limit)
        scanned = 0
        while high > 1 and len(rows) < limit and scanned < MAX_SCAN_IDS:
            low = max(1, high - window)
            jobs = self.queue.store.list_jobs(
                status=status,
                pattern=pattern,
                ids=range(low, high),
                limit=limit - len(rows),
                newest_first=True,
            )
            rows.extend(job_row(job) for job in jobs)
            scanned += high - low
            high = low
            window = min(window * 2, MAX_WINDOW)
        if len(rows) == limit:
            high = rows[-1]["id"]
        return rows, (high if high > 1 else None)

    def children(self, job_id: int) -> tuple[list[dict[str, Any]], bool]:
        """The descendants of ``job_id`` as a tree of rows (each with ``children``),
        and whether the tree was cut at ``MAX_CHILDREN`` / ``MAX_CHILD_SCAN``."""
        newest = self.newest_id()
        nodes: dict[int, dict[str, Any]] = {}
        roots: list[dict[str, Any]] = []
        low = job_id + 1
        cut = False
        while low <= newest:
            if low - job_id > MAX_CHILD_SCAN or len(nodes) >= MAX_CHILDREN:
                cut = True
                break
            high = min(newest + 1, low + MAX_WINDOW)
            jobs = self.queue.store.list_jobs(ids=range(low, high))
            for job in jobs:
                if job.parent == job_id or job.parent in nodes:
                    node = {**job_row(job), "children": []}
                    nodes[job.id] = node
                    parent_node = nodes.get(job.parent) if job.parent != job_id else None
                    (parent_node["children"] if parent_node else roots).append(node)
                    if len(nodes) >= MAX_CHILDREN:
                        break
            low = high
        return roots, cut

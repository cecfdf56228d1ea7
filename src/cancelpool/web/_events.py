"""The live feed: one poller per dashboard process turns the queue's rows into events.

::

    EventHub.run (a task of the app)            subscribers (one per /api/events client)
    --------------------------------            -----------------------------------------
    every POLL_INTERVAL, in a worker thread:
      counts, running jobs, new ids,      ---->  memory stream: {"jobs": [rows], "stats": ...}
      jobs that left "running", jobs the         a slow client's stream fills up: it is
      API touched, a slice of queued ones        closed, the page reconnects and reloads

The queue has no change feed yet, so the hub reads what can change: the running jobs
(few: bounded by the servers' concurrency), ids newer than any it has seen, the jobs that
stopped running since the last poll, and a rotating slice of the queued ones (which
change only when claimed or cancelled). Its cost does not grow with the finished jobs.

It also keeps what the store does not: each running job's progress history as seen by
the polls, and, for the stats chart, when jobs finished and how long their cancels took.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..queue import JobRecord, JobStatus
from ._reader import JobReader, job_row

_log = logging.getLogger("cancelpool.web")

#: Seconds between polls. Servers commit progress at most every 0.1 s; 0.25 s shows a
#: bar moving smoothly at a fraction of the queries, and a cancel within a quarter second.
POLL_INTERVAL = 0.25
#: New ids read per poll: a burst of submits larger than this shows over a few polls.
NEW_PER_POLL = 1000
#: Queued jobs re-read per poll (round robin), on a poll whose status counts changed (a
#: queued job that was claimed or cancelled moved a count) and on every
#: ``SWEEP_EVERY``-th poll as a safety net. 10,000 queued jobs cost about 15 ms a slice
#: here; a queued job cancelled elsewhere shows within 20 slices (one cancelled through
#: this dashboard shows at the next poll). More per slice shows it sooner, costs more.
QUEUED_PER_POLL = 500
SWEEP_EVERY = 8
#: Progress points kept per job, and jobs whose history is kept: enough for a detail
#: view's table, bounded for 100 jobs at 10 Hz over hours.
HISTORY_POINTS = 200
HISTORY_JOBS = 2000
#: Finished jobs remembered for the stats chart.
SERIES_POINTS = 5000
#: Messages a subscriber may have waiting before it counts as too slow and is dropped.
SUBSCRIBER_BUFFER = 64


class EventHub:
    """Polls the queue and fans changes out to subscribers. Start it with :meth:`run`."""

    def __init__(self, reader: JobReader, interval: float = POLL_INTERVAL) -> None:
        self._reader = reader
        self._interval = interval
        self._lock = threading.Lock()  # the poll runs in a worker thread
        self._subscribers: set[MemoryObjectSendStream[dict[str, Any]]] = set()
        self._rows: dict[int, dict[str, Any]] = {}  # unfinished jobs as last sent
        self._queued: dict[int, None] = {}  # ids believed queued, in order
        self._queued_at = 0
        self._touched: set[int] = set()
        self._newest: int | None = None
        self._counts: dict[str, int] = {}
        self._history: dict[int, deque[dict[str, Any]]] = {}
        self._cancel_asked: dict[int, float] = {}
        self._series: deque[dict[str, Any]] = deque(maxlen=SERIES_POINTS)
        self._charted: set[int] = set()  # the ids in _series, bounded like it
        self._charted_order: deque[int] = deque()
        self._started = time.time()
        self._polls = 0

    # -- what the API asks ------------------------------------------------------------------
    def touch(self, ids: Any, *, cancelled: bool = False) -> None:
        """Re-read these jobs at the next poll (the API just changed them); with
        ``cancelled``, their cancel latency counts from now."""
        now = time.time()
        with self._lock:
            for job_id in ids:
                self._touched.add(job_id)
                if cancelled:
                    self._cancel_asked.setdefault(job_id, now)

    def history(self, job_id: int) -> list[dict[str, Any]]:
        """The progress points this process saw for the job (oldest first)."""
        with self._lock:
            return list(self._history.get(job_id, ()))

    def series(self) -> dict[str, Any]:
        """Finished jobs (time, status, cancel latency) seen since the hub started."""
        with self._lock:
            return {"since": self._started, "finished": list(self._series)}

    @contextmanager
    def subscribe(self) -> Iterator[MemoryObjectReceiveStream[dict[str, Any]]]:
        """A stream of ``{"jobs": [...], "stats": {...}}`` messages, starting with the
        counts as last polled; it ends when the hub stops or the subscriber falls too far
        behind."""
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](SUBSCRIBER_BUFFER)
        with self._lock:
            self._subscribers.add(send)
            if self._counts:  # the counts as of the last poll, at once: a feed that
                # opens after the jobs were seen would otherwise wait for a change
                send.send_nowait({"jobs": [], "stats": dict(self._counts)})
        try:
            with receive:
                yield receive
        finally:
            with self._lock:
                self._subscribers.discard(send)
            send.close()

    def close(self) -> None:
        """End every subscriber's stream (at shutdown: the SSE responses return)."""
        with self._lock:
            subscribers, self._subscribers = self._subscribers, set()
        for send in subscribers:
            send.close()

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Poll until cancelled. A failing poll (a busy database) is retried next time."""
        failing: str | None = None
        while True:
            try:
                message = await anyio.to_thread.run_sync(self.poll)
                failing = None
            except Exception as exc:  # a busy or failing store: keep the feed alive
                message = None
                if str(exc) != failing:  # said once per cause, not four times a second
                    failing = str(exc)
                    _log.warning("cannot read the queue for the live feed: %s", exc)
            if message:
                self._publish(message)
            await anyio.sleep(self._interval)

    def _publish(self, message: dict[str, Any]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for send in subscribers:
            try:
                send.send_nowait(message)
            except anyio.WouldBlock:  # too slow: it reconnects and reloads
                with self._lock:
                    self._subscribers.discard(send)
                send.close()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                with self._lock:
                    self._subscribers.discard(send)

    def poll(self) -> dict[str, Any] | None:
        """Read what may have changed; returns the message to send, or None. Blocking."""
        reader = self._reader
        counts = reader.queue.store.counts()
        first = self._newest is None
        if self._newest is None:
            self._newest = reader.newest_id()
            queued = reader.queue.store.list_jobs(status=(JobStatus.QUEUED.value,))
            self._queued = dict.fromkeys(job.id for job in queued)
        newest = self._newest
        jobs: dict[int, JobRecord] = {}
        running = reader.queue.store.list_jobs(status=(JobStatus.RUNNING.value,))
        jobs.update((job.id, job) for job in running)
        fresh = reader.by_ids(range(newest + 1, newest + 1 + NEW_PER_POLL))
        jobs.update((job.id, job) for job in fresh)
        with self._lock:
            # Jobs that were running and no longer are: finished, or requeued.
            was_running = {i for i, row in self._rows.items() if row["status"] == "running"}
            recheck = (was_running - set(jobs)) | self._touched
            self._touched = set()
        self._polls += 1
        sweep = counts != self._counts or self._polls % SWEEP_EVERY == 0
        if self._queued and sweep:
            start = self._queued_at % len(self._queued)
            recheck.update(list(self._queued)[start : start + QUEUED_PER_POLL])
            self._queued_at = start + QUEUED_PER_POLL
        recheck -= set(jobs)
        jobs.update((job.id, job) for job in reader.by_ids(sorted(recheck)))
        if fresh:
            self._newest = max(newest, max(job.id for job in fresh))
        changed = [
            row
            for job in sorted(jobs.values(), key=lambda j: j.id)
            if (row := self._update(job)) is not None
        ]
        for job in jobs.values():  # the queued set follows what this poll saw
            if job.status is JobStatus.QUEUED:
                self._queued.setdefault(job.id, None)
            else:
                self._queued.pop(job.id, None)
        stats_changed = counts != self._counts
        self._counts = counts
        if not changed and not stats_changed and not first:
            return None
        return {"jobs": changed, "stats": dict(counts)}

    def _update(self, job: JobRecord) -> dict[str, Any] | None:
        """Remember the job's new row; return it if it changed (or None)."""
        row = job_row(job)
        now = time.time()
        with self._lock:
            old = self._rows.get(job.id)
            if job.finished:
                self._rows.pop(job.id, None)
                asked = self._cancel_asked.pop(job.id, None)
                # Every job that finished since the hub started counts once, also one
                # that started and finished between two polls.
                if job.id not in self._charted and (job.ended_at or now) >= self._started:
                    self._charted.add(job.id)
                    self._charted_order.append(job.id)
                    if len(self._charted_order) > SERIES_POINTS:
                        self._charted.discard(self._charted_order.popleft())
                    latency = None
                    if job.status is JobStatus.CANCELLED and asked is not None:
                        latency = max(0.0, (job.ended_at or now) - asked)
                    self._series.append(
                        {
                            "at": job.ended_at or now,
                            "status": job.status.value,
                            "cancel_latency": latency,
                        }
                    )
            else:
                self._rows[job.id] = row
                if job.cancel_requested:
                    self._cancel_asked.setdefault(job.id, now)  # first seen: an upper bound
            if old is not None and old == row:
                return None
            if (
                job.status is JobStatus.RUNNING
                and job.progress is not None
                and (
                    old is None
                    or (old["progress_message"], old["done"])
                    != (row["progress_message"], row["done"])
                )
            ):
                points = self._history.get(job.id)
                if points is None:
                    if len(self._history) >= HISTORY_JOBS:
                        self._history.pop(next(iter(self._history)))  # the oldest job's
                    points = self._history[job.id] = deque(maxlen=HISTORY_POINTS)
                points.append(
                    {
                        "at": now,
                        "message": job.progress_message,
                        "done": row["done"],
                        "total": row["total"],
                    }
                )
        return row

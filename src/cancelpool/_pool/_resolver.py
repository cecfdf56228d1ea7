"""Resolving handles: the one place a job's outcome is written to its handle.

Called by the supervisor outside the pool's lock (a done callback or an unpickled
result runs the job's own code, which may take as long as it likes or raise anything),
and by caller threads for jobs cancelled while still queued. Before a handle resolves,
the end is counted and its ``progress()`` streams are closed (under the lock); a job
that another job submitted tells that parent's worker how it ended.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import _tracing
from .._core._enums import CancelationReason, OperationStatus
from .._core._exceptions import JobCancelled, PoolError
from .._events import Outcome, finished_event
from . import _protocol as proto
from ._payload import dump_error, dump_partial, load_error, load_partial, rewrap

if TYPE_CHECKING:
    from .._events import EventHub
    from ._job_table import JobRecord, JobTable
    from ._worker_set import WorkerSet

logger = logging.getLogger("cancelpool")

# The reasons by their wire value: a dict lookup instead of the Enum's value search.
_REASONS = {reason.value: reason for reason in CancelationReason}


class Resolver:
    """Writes outcomes to handles: completed, failed or cancelled."""

    def __init__(
        self, lock: threading.RLock, jobs: JobTable, workers: WorkerSet, events: EventHub
    ) -> None:
        self._lock = lock
        self._jobs = jobs
        self._workers = workers
        self._events = events

    def finished(self, job: JobRecord, message: Any) -> None:
        """Resolve a job from the worker's last word on it (``Done``, ``Failed`` or
        ``Cancelled``); whatever goes wrong doing it fails that job only.

        Unpickling a result runs the job's code (``__setstate__``, ``__reduce__``) in
        this thread, and a done callback may raise anything: a ``SystemExit`` there
        must not kill the supervisor and leave the handle unresolved for ever.
        """
        try:
            self._finished(job, message)
        except BaseException as exc:
            if job.handle.done():  # resolved; a done callback raised
                logger.exception("cancelpool: a done callback of job %s failed", job.id)
                return
            error = PoolError(f"job {job.id} ended, but its outcome could not be read: {exc!r}")
            error.__cause__ = exc
            try:
                self.failed(job, error)
            except BaseException:
                logger.exception("cancelpool: a done callback of job %s failed", job.id)

    def finished_all(self, batch: list[tuple[JobRecord, Any]]) -> None:
        """:meth:`finished` for a batch of ends, in order, with one lock for the
        bookkeeping of all the jobs that succeeded or were cancelled (a lock per job
        made the caller's threads and this one take turns on it, job after job)."""
        ready: list[tuple[JobRecord, OperationStatus, Any]] = []
        for job, message in batch:
            kind = type(message)
            if kind is proto.Done:
                job.handle._stamp_end(job.placed_at)
                try:
                    result = pickle.loads(message.result)
                except BaseException as exc:  # SystemExit from a __setstate__ included
                    self._settle(ready)
                    ready = []
                    text = f"the result of job {job.id} could not be unpickled: {exc!r}"
                    self._fail_safely(job, rewrap(exc, text))
                    continue
                ready.append((job, OperationStatus.COMPLETED, result))
            elif kind is proto.Cancelled and job.remote is None:
                try:
                    self._read_cancelled(job, message)
                except BaseException as exc:  # unpickling the partial result ran code
                    self._settle(ready)
                    ready = []
                    error = PoolError(
                        f"job {job.id} ended, but its outcome could not be read: {exc!r}"
                    )
                    error.__cause__ = exc
                    self._fail_safely(job, error)
                    continue
                ready.append((job, OperationStatus.CANCELLED, False))
            else:
                self._settle(ready)
                ready = []
                self.finished(job, message)
        self._settle(ready)

    def cancelled_all(self, jobs: list[JobRecord], *, forced: bool = False) -> None:
        """:meth:`cancelled` for many jobs (e.g. a ``cancel_all`` of queued ones)."""
        ready: list[tuple[JobRecord, OperationStatus, Any]] = []
        for job in jobs:
            if job.remote is None:
                ready.append((job, OperationStatus.CANCELLED, forced))
            else:
                self._settle(ready)
                ready = []
                self.cancelled(job, forced=forced)
        self._settle(ready)

    def _settle(self, ready: list[tuple[JobRecord, OperationStatus, Any]]) -> None:
        """Resolve jobs that succeeded (with their result) or were cancelled (with
        ``forced``): their bookkeeping under one lock, then each handle in order."""
        if not ready:
            return
        feeds: list[Any] = []
        with self._lock:
            count_end = self._jobs.count_end
            for job, status, _value in ready:
                count_end(status)
                feeds += job.handle._close(status)
        for feed in feeds:
            feed.push(None)
        listening = bool(self._events.listeners)
        for job, status, value in ready:
            try:
                if status is OperationStatus.COMPLETED:
                    if listening:
                        self._emit(job, "succeeded", None)
                    job.handle.set_result(value)
                else:
                    job.handle.set_exception(self._cancel_error(job, value, listening))
            except BaseException:  # a done callback raised (SystemExit included)
                logger.exception("cancelpool: a done callback of job %s failed", job.id)

    def _fail_safely(self, job: JobRecord, error: BaseException) -> None:
        try:
            self.failed(job, error)
        except BaseException:
            logger.exception("cancelpool: a done callback of job %s failed", job.id)

    def _finished(self, job: JobRecord, message: Any) -> None:
        handle = job.handle
        handle._stamp_end(job.placed_at)
        kind = type(message)
        if kind is proto.Done:
            try:
                result = pickle.loads(message.result)
            except BaseException as exc:  # SystemExit from a __setstate__ included
                error = rewrap(exc, f"the result of job {job.id} could not be unpickled: {exc!r}")
                self.failed(job, error)
                return
            self._close(job, OperationStatus.COMPLETED)
            if self._events.listeners:
                self._emit(job, "succeeded", None)
            handle.set_result(result)
        elif kind is proto.Failed:
            self.failed(job, load_error(message.error, message.traceback, job.id))
        else:
            self._read_cancelled(job, message)
            self.cancelled(job)

    def _read_cancelled(self, job: JobRecord, message: proto.Cancelled) -> None:
        """Mark the handle with what the worker says of its cancellation."""
        handle = job.handle
        handle._stamp_end(job.placed_at)
        handle._set_partial(load_partial(message.partial))
        reason = _REASONS.get(message.reason) or CancelationReason(message.reason)
        if handle.cancel_reason is None or reason is not handle.cancel_reason:
            handle._mark_cancelled(reason, message.message, requested=False)

    def failed(self, job: JobRecord, error: BaseException) -> None:
        """Resolve a job with ``error``."""
        if job.remote is not None and not job.told_parent:
            outcome = proto.Failed(job.id, dump_error(error), "")
            with self._lock:
                self.tell_parent(job, outcome)
                self._workers.send_posts()
        self._close(job, OperationStatus.FAILED)
        if self._events.listeners:
            self._emit(job, "failed", repr(error))
        job.handle.set_exception(error)

    def cancelled(self, job: JobRecord, *, forced: bool = False) -> None:
        """Resolve a job with :class:`JobCancelled` (its reason, message and partial
        result as marked on the handle); ``forced``: its worker was killed to end it."""
        handle = job.handle
        reason = handle.cancel_reason or CancelationReason.MANUAL
        message = handle.cancel_message or f"job {job.id} was cancelled ({reason.value})"
        if job.remote is not None and not job.told_parent:
            partial = dump_partial(handle.partial_result)
            outcome = proto.Cancelled(job.id, reason.value, message, partial, False)
            with self._lock:
                self.tell_parent(job, outcome)
                self._workers.send_posts()
        self._close(job, OperationStatus.CANCELLED)
        handle.set_exception(self._cancel_error(job, forced, bool(self._events.listeners)))

    def _cancel_error(self, job: JobRecord, forced: bool, listening: bool) -> JobCancelled:
        """The :class:`JobCancelled` a cancelled job resolves with (its end emitted, and
        the span of a traced job whose worker was killed written from here)."""
        handle = job.handle
        reason = handle.cancel_reason or CancelationReason.MANUAL
        message = handle.cancel_message or f"job {job.id} was cancelled ({reason.value})"
        if forced and job.trace is not None:
            # The job's span died with its worker: say how it ended from here.
            _tracing.forced_span(
                job.trace, job.attempts, handle.name, job.id, handle.started_at, reason, message
            )
        if listening:
            self._emit(job, "forced" if forced else "cancelled", message)
        return JobCancelled(
            reason,
            message,
            None,
            job_id=str(job.id),
            partial_result=handle.partial_result,
            forced=forced,
        )

    def broken(self, job: JobRecord, error: BaseException) -> None:
        """Resolve a job of a pool that cannot go on; never raises."""
        handle = job.handle
        if handle.done():
            return
        try:
            self._close(job, OperationStatus.FAILED)
            if self._events.listeners:
                self._emit(job, "failed", repr(error))
        except BaseException:
            pass
        if not handle.done():
            try:
                handle.set_exception(error)
            except BaseException:  # a done callback: the handle is resolved anyway
                logger.exception("cancelpool: a done callback of job %s failed", job.id)

    def tell_parent(self, job: JobRecord, outcome: Any) -> None:
        """If a job submitted this one, post it the outcome (lock held), once."""
        remote = job.remote
        if remote is None or not job.claim_parent_notice():
            return
        target = self._workers.procs[remote[0]]
        # Only to the very process that asked: a replacement worker in the same place
        # counts its requests from 1 again.
        if target.alive and target.pid == remote[1]:
            self._workers.post(target, proto.ChildOutcome(remote[2], outcome))

    def _emit(self, job: JobRecord, outcome: Outcome, message: str | None) -> None:
        handle = job.handle
        at = handle.ended_at or time.time()
        self._events.put(finished_event(handle, outcome, at, message, job.seen_started))

    def _close(self, job: JobRecord, status: OperationStatus) -> None:
        """Record how a job ended and end its progress() streams (before it resolves).

        Under the lock: caller threads resolve queued jobs too, counters must add up,
        and a progress() starting now must see that the stream has ended.
        """
        with self._lock:
            self._jobs.count_end(status)
            feeds = job.handle._close(status)
        for feed in feeds:
            feed.push(None)

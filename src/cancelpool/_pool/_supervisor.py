"""The supervisor thread: everything the pool does that is not a caller's call.

::

    caller threads                supervisor thread                 worker processes
    --------------                -----------------                 ----------------
    submit()  --(lock)-->  registry, queue, dispatch  --inbox pipe-->  Run, Child*
    cancel()  --(lock)-->  token table slot := CANCELLED  (shared memory, read at once)
                           doorbell.ring()  ------------------------>  wakes the loop
                           select(): outbox pipes  <---------------  Started/Done/...
                                     process sentinels  <----------  a worker died
                                     wake pipe  <-- callers           (queue, timers)
                                     timers: timeout backstops, forced stops
    handle.result()  <---  Future resolved, progress callbacks run

A job that ignores its cancellation for ``cancel_grace`` seconds gets its worker
killed; the other jobs of that worker end with ``WorkerLost`` (or run again, under
``retries``). A worker that dies on its own fails only its own jobs and is replaced.
If the worker's watchdog reported a job blocking the event loop (``LoopBlocked``),
that job is the one blamed for the kill (see :meth:`Supervisor._worker_died`).
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import pickle
import select
import time
from typing import Any

import msgspec

from .._core._enums import CancelationReason, OperationStatus
from .._core._exceptions import (
    JobCancelled,
    PoolBroken,
    PoolClosed,
    PoolError,
    WorkerCrashed,
    WorkerKilled,
)
from . import _protocol as proto
from ._handle import JobHandle
from ._payload import dump_error, dump_partial, load_error, load_partial, rewrap
from ._workers import BACKSTOP, FORCE, WORKER_EXIT_GRACE, WorkerProc, WorkerSet

logger = logging.getLogger("cancelpool")

#: Seconds a forced stop waits, once, for the worker's watchdog to say who blocks the
#: loop, when the loop has not heard the cancellation (the watchdog reports 0.1 s after
#: a ring goes unheard; this leaves room for a loaded machine). Only a blocked (or
#: starved) worker waits: a loop that heard the cancellation is killed on time.
VERDICT_WAIT = 1.0
#: Minimum seconds between two RSS readings of one worker (``max_memory_per_worker``):
#: a reading costs tens of microseconds, so not after every job.
MEMORY_CHECK_INTERVAL = 0.2
#: Bytes asked for per read of a worker's outbox: a pipe's capacity. os.read allocates
#: the whole size before it shrinks the result, so a larger ask costs every small read.
_READ_SIZE = 1 << 16


class Supervisor(WorkerSet):
    """The supervisor-thread half of :class:`CancelPool` (state lives on the pool)."""

    def _closed_error(self) -> PoolError:
        """The error submit() raises once the pool no longer accepts jobs."""
        if self._broken is not None:
            error = PoolBroken(str(self._broken))
            error.__cause__ = self._broken.__cause__
            return error
        return PoolClosed("this CancelPool is shut down; create a new one to submit jobs")

    def _close_resources(self) -> None:
        if self._table is not None:
            self._table.close()
            self._table = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    # -- the loop ---------------------------------------------------------------------------------
    def _supervise(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            logger.exception("cancelpool: the supervisor thread failed; stopping the pool")
            with self._lock:
                self._state = "broken"
                self._broken = PoolBroken(f"the pool's supervisor thread failed: {exc!r}")
                self._broken.__cause__ = exc
            self._fail_everything(self._broken)
        finally:
            self._kill_all()
            with self._lock:
                self._close_resources()
                if self._state != "broken":
                    self._state = "closed"
                self._idle.notify_all()

    def _loop(self) -> None:
        stop_deadline: float | None = None
        while True:
            with self._lock:
                if self._state in ("closing", "broken") and not self._jobs:
                    for proc in (*self._workers, *self._spares):
                        if proc.alive and not proc.stop_sent:
                            proc.stop_sent = True
                            self._write(proc, proto.frame([proto.Stop()]))
                    if not any(proc.alive for proc in (*self._workers, *self._spares)):
                        return
                    if stop_deadline is None:
                        stop_deadline = time.monotonic() + WORKER_EXIT_GRACE
                # What each polled fd stood for when the poll began, with the process
                # it belonged to. Handling one event may bury a worker and start its
                # replacement, whose new pipes can reuse the numbers of the old ones:
                # an event is acted on only while its fd still means the same thing.
                watched: dict[int, tuple[int, WorkerProc, Any]] = {}
                readers = [self._wake_r]
                writers = []
                for proc in self._workers:
                    if proc.alive:
                        watched[proc.out_fd] = (_OUTBOX, proc, proc.process)
                        watched[proc.sentinel] = (_SENTINEL, proc, proc.process)
                        readers.append(proc.out_fd)
                        readers.append(proc.sentinel)
                        if proc.write_buffer:
                            writers.append(proc.in_fd)
                for proc in self._spares:
                    if proc.alive:
                        watched[proc.sentinel] = (_SPARE, proc, proc.process)
                        readers.append(proc.sentinel)
                        if proc.write_buffer:
                            writers.append(proc.in_fd)
                deadline = self._timers[0][0] if self._timers else None
                if stop_deadline is not None:
                    deadline = stop_deadline if deadline is None else min(deadline, stop_deadline)
            readable, writable = _wait(readers, writers, deadline)
            if stop_deadline is not None and time.monotonic() >= stop_deadline:
                self._kill_all()  # workers that ignored Stop
                return
            # Outboxes first: what a worker said before it died is read before its death
            # is handled.
            for fd in sorted(readable, key=lambda fd: watched[fd][0] if fd in watched else _WAKE):
                if fd == self._wake_r:
                    self._drain_wake()
                    with self._lock:
                        if self._queue:
                            self._dispatch_queue()
                    continue
                entry = watched.get(fd)
                if entry is None:
                    continue
                kind, proc, process = entry
                if not proc.alive or proc.process is not process or process is None:
                    continue  # buried (and perhaps replaced) since the poll began
                if kind == _OUTBOX:
                    self._read(proc)
                elif kind == _SPARE:
                    self._spare_died(proc)
                else:
                    self._read(proc)  # whatever it said before dying
                    self._worker_died(proc)
            if writable:
                with self._lock:
                    for proc in (*self._workers, *self._spares):
                        if proc.alive and proc.in_fd in writable and proc.write_buffer:
                            self._flush(proc)
            if self._timers and self._timers[0][0] <= time.monotonic():
                self._fire_timers()

    # -- reading from workers ---------------------------------------------------------------------
    def _read(self, proc: WorkerProc) -> None:
        chunks = []
        while True:
            try:
                data = os.read(proc.out_fd, _READ_SIZE)
            except OSError:  # BlockingIOError included: nothing more for now
                break
            if not data:
                break
            chunks.append(data)
            if len(data) < _READ_SIZE:
                break
        if not chunks:
            return
        messages: list[Any] = []
        try:
            for payload in proc.reader.feed(b"".join(chunks)):
                messages.extend(proto.from_worker_decoder.decode(payload))
        except (ValueError, msgspec.DecodeError):
            # A worker that talks nonsense cannot be trusted with its jobs: kill it;
            # its death is handled like a crash (its jobs fail, or run again).
            logger.exception("cancelpool: garbled data from worker %s; killing it", proc.pid)
            if proc.process is not None:
                proc.process.kill()
        self._handle_messages(proc, messages)

    def _handle_messages(self, proc: WorkerProc, messages: list[Any]) -> None:
        finished: list[tuple[JobHandle[Any], Any]] = []
        progress: list[tuple[JobHandle[Any], proto.Progress]] = []
        refused: list[tuple[int, BaseException]] = []
        resolved: list[JobHandle[Any]] = []
        broken: list[proto.InitFailed] = []
        loop_reports: list[Any] = []
        with self._lock:
            jobs = self._jobs
            for message in messages:
                kind = type(message)
                if kind is proto.BellHeard:
                    proc.heard_at = time.monotonic()
                    self._verdict_in(proc)
                    continue
                if kind is proto.LoopBlocked or kind is proto.LoopResumed:
                    loop_reports.append(self._loop_report(proc, message))
                    self._verdict_in(proc)
                    continue
                if kind is proto.SubmitChild:
                    error = self._submit_child(proc, message)
                    if error is not None:
                        refused.append((message.request, error))
                    continue
                if kind is proto.InitFailed:
                    broken.append(message)
                    continue
                if kind is proto.CancelChild:
                    child = self._requests.get((proc.index, proc.pid or 0, message.request))
                    if child is not None:
                        reason = CancelationReason.MANUAL
                        resolved += self._cancel_locked([child], reason, message.message)[1]
                    continue
                handle = jobs.get(message.job)
                if handle is None:
                    continue
                if kind is proto.Started:
                    handle._status = OperationStatus.RUNNING
                    handle.started_at = time.time()
                    if handle._state == "PENDING":  # not again for a retried job
                        handle.set_running_or_notify_cancel()
                elif kind is proto.Progress:
                    progress.append((handle, message))
                    ancestor = handle.parent
                    while ancestor is not None:
                        if ancestor._worker is not None and not ancestor.done():
                            # Each ancestor job's own callbacks, in its worker, hear it
                            # too (bubbling, as in one process).
                            self._post(
                                self._workers[ancestor._worker],
                                proto.ChildProgress(
                                    ancestor.id, handle.id, message.message, message.metadata
                                ),
                            )
                        ancestor = ancestor.parent
                elif kind is proto.Checkpoint:
                    handle._checkpoint = message.partial
                else:
                    self._retire(handle)
                    finished.append((handle, message))
            for request, error in refused:
                self._post(proc, proto.ChildRefused(request, dump_error(error)))
            if finished:
                resolved += self._after_finish(proc, finished)
            if self._queue:
                self._dispatch_queue()
            self._send_posts()
        for handle, message in progress:
            try:
                metadata = _decode_metadata(message.metadata)
                handle._report(handle.id, message.message, metadata)
            except BaseException:
                # A progress callback that raised SystemExit, say: the report is lost,
                # the job and the pool go on.
                logger.exception("cancelpool: delivering progress of job %s failed", handle.id)
        for handle, message in finished:
            self._resolve_guarded(handle, message)
        for handle in resolved:
            self._resolve_cancelled(handle)
        if finished and self._state == "closing":
            self._wake()
        if broken:
            self._initializer_failed(proc, broken[0])
        for report in loop_reports:
            _log_loop_report(*report)

    def _loop_report(
        self, proc: WorkerProc, message: proto.LoopBlocked | proto.LoopResumed
    ) -> tuple[int | None, JobHandle[Any] | None, Any]:
        """Record what the worker's watchdog says of its loop (lock held); returns
        what to log once the lock is released."""
        if isinstance(message, proto.LoopResumed):
            proc.blocked = None
            return proc.pid, None, message
        proc.blocked = message
        proc.blocked_since = time.monotonic() - message.seconds
        handle = self._jobs.get(message.job) if message.job is not None else None
        if handle is not None:
            handle.blocked_stack = message.stack
        return proc.pid, handle, message

    def _blocker(self, proc: WorkerProc, forced_for: int | None) -> JobHandle[Any] | None:
        """The job that blocked the loop of ``proc`` when it was killed to force a stop
        (lock held), or None: no forced stop, no block reported, or no job known."""
        blocked = proc.blocked
        if not forced_for or blocked is None or blocked.job not in proc.inflight:
            return None  # forced_for 0: terminate() killed it, nobody is to blame
        return self._jobs.get(blocked.job)

    def _await_verdict(self, proc: WorkerProc, handle: JobHandle[Any], now: float) -> bool:
        """Whether a forced stop of ``handle`` waits for the watchdog (lock held).

        True (and the stop re-armed VERDICT_WAIT from now, once per job) when the
        worker's loop has not heard the cancellation and no block is reported yet: the
        report that names the job to blame may still be on its way.
        """
        if (
            self._settings.loop_block_threshold is None
            or proc.blocked is not None
            or proc.heard_at >= proc.rung_at
            or handle.id in proc.verdicts
        ):
            return False
        proc.verdicts.add(handle.id)
        self._add_timer(now + VERDICT_WAIT, handle, FORCE)
        return True

    def _verdict_in(self, proc: WorkerProc) -> None:
        """The worker said whether its loop is blocked (lock held): the forced stops
        that waited for it happen now."""
        if proc.verdicts:
            now = time.monotonic()
            for job in proc.verdicts:
                handle = self._jobs.get(job)
                if handle is not None and handle._cancel_reason is not None:
                    self._add_timer(now, handle, FORCE)

    def _initializer_failed(self, proc: WorkerProc, message: proto.InitFailed) -> None:
        """The initializer raised in a worker: the pool is broken (no respawn spin).

        Every job it holds fails with :class:`PoolBroken`, the initializer's error as
        ``__cause__``; the workers are killed; ``submit()`` raises from now on.
        """
        cause = load_error(message.error, message.traceback, 0)
        label = self._settings.initializer_label
        logger.error(
            "cancelpool: the initializer %s failed in worker %s:\n%s",
            label,
            proc.pid,
            message.traceback,
        )
        with self._lock:
            if self._broken is not None:
                return
            self._broken = PoolBroken(
                f"the pool's initializer {label} failed in worker process {proc.pid} "
                f"({cause!r}); no job can run: fix the initializer and create a new pool"
            )
            self._broken.__cause__ = cause
            if self._state in ("running", "closing"):
                self._state = "broken"
            for other in (*self._workers, *self._spares):
                if other.alive and other.process is not None and other.process.exitcode is None:
                    other.process.kill()
        self._fail_everything(self._broken)

    def _after_finish(
        self, proc: WorkerProc, finished: list[tuple[JobHandle[Any], Any]]
    ) -> list[JobHandle[Any]]:
        """Bookkeeping after jobs ended (lock held): cascades, recycling, children.

        Children never outlive their parent: the live ones are cancelled now.
        Returns the handles to resolve as cancelled (children that never started).
        """
        resolved: list[JobHandle[Any]] = []
        for handle, message in finished:
            if handle.id in self._children_of:
                resolved += self._cascade(handle, _how_it_ended(message))
            self._tell_parent(handle, message)
        proc.tasks += len(finished)
        if self._max_tasks is not None and proc.tasks >= self._max_tasks:
            proc.retiring = True
        if self._max_memory is not None and proc.pid is not None:
            now = time.monotonic()
            if now - proc.memory_checked >= MEMORY_CHECK_INTERVAL:
                proc.memory_checked = now
                if _rss(proc.pid) > self._max_memory:
                    proc.retiring = True
        if proc.retiring and not proc.inflight and not proc.stop_sent:
            proc.stop_sent = True
            self._post(proc, proto.Stop())
        return resolved

    # -- registering jobs (lock held) -------------------------------------------------------
    def _new_job(
        self,
        fn: bytes,
        args: bytes,
        is_async: bool,
        *,
        name: str | None,
        timeout: float | None,
        metadata: dict[str, Any] | None,
        parent: JobHandle[Any] | None,
        retries: int,
        cancel_grace: float | None,
        remote: tuple[int, int, int] | None = None,
    ) -> JobHandle[Any]:
        """Register a job and queue or dispatch it (lock held)."""
        if self._state != "running":
            raise self._closed_error()
        handle: JobHandle[Any] = JobHandle(
            self,  # type: ignore[arg-type]  # a Supervisor is always a CancelPool
            next(self._ids),
            name,
            timeout,
            metadata,
            parent,
            retries=retries,
            cancel_grace=cancel_grace,
        )
        handle._fn, handle._args, handle._is_async = fn, args, is_async
        handle._remote = remote
        if remote is not None:
            self._requests[remote] = handle
        self._jobs[handle.id] = handle
        self._submitted += 1
        if parent is not None:
            if parent._cancel_reason is not None or parent.id not in self._jobs:
                # A child of a cancelled or finished job never starts.
                handle._cancel_reason = CancelationReason.PARENT
                handle._cancel_message = f"parent job {parent.id} has already ended"
                self._retire(handle)
                self._resolve_cancelled(handle)
                return handle
            self._children_of.setdefault(parent.id, []).append(handle)
        proc = self._pick_worker(not is_async)
        if proc is not None and not proc.inflight and not self._queue:
            # An idle worker: write now, for the lowest latency.
            self._dispatch(proc, [handle])
        else:
            # Busy workers: the supervisor thread sends queued jobs in batches, one
            # frame (one write, one wake-up of the worker) per batch.
            self._queue.append(handle)
            if proc is not None:
                self._wake()
        return handle

    def _tell_parent(self, handle: JobHandle[Any], outcome: Any) -> None:
        """If a job submitted this one, post it the outcome (lock held), once."""
        remote = handle._remote
        if remote is None or handle._told_parent:
            return
        handle._told_parent = True
        target = self._workers[remote[0]]
        # Only to the very process that asked: a replacement worker in the same place
        # counts its requests from 1 again.
        if target.alive and target.pid == remote[1]:
            self._post(target, proto.ChildOutcome(remote[2], outcome))

    def _submit_child(self, proc: WorkerProc, message: proto.SubmitChild) -> BaseException | None:
        parent = self._jobs.get(message.parent)
        if parent is None or parent._cancel_reason is not None:
            return JobCancelled(
                CancelationReason.PARENT,
                f"job {message.parent} cannot start children: it is ending",
                job_id="",
            )
        if self._state != "running":
            return PoolClosed("the pool is shutting down; it starts no new jobs")
        handle = self._new_job(
            message.fn,
            message.args,
            message.is_async,
            name=message.name,
            timeout=message.timeout,
            metadata=None,
            parent=parent,
            retries=0,
            cancel_grace=None,
            remote=(proc.index, proc.pid or 0, message.request),
        )
        self._post(proc, proto.ChildAccepted(message.request, handle.id))
        return None

    def _retire(self, handle: JobHandle[Any]) -> None:
        """Forget a live job (lock held): free its slot and its worker's place."""
        self._jobs.pop(handle.id, None)
        if handle._slot is not None and self._table is not None:
            self._table.release(handle._slot)
        if handle._worker is not None:
            proc = self._workers[handle._worker]
            proc.inflight.discard(handle.id)
            if not proc.inflight:
                proc.exclusive = False
            proc.completed += 1
        parent = handle.parent
        if parent is not None:
            siblings = self._children_of.get(parent.id)
            if siblings is not None:
                try:
                    siblings.remove(handle)
                except ValueError:
                    pass
                if not siblings:
                    del self._children_of[parent.id]
        if handle._remote is not None:
            self._requests.pop(handle._remote, None)
        self._history.append(handle)
        if not self._jobs:
            self._idle.notify_all()

    # -- resolving handles (outside the lock) --------------------------------------------------
    def _resolve_guarded(self, handle: JobHandle[Any], message: Any) -> None:
        """Resolve a finished job; whatever goes wrong doing it fails that job only.

        Unpickling a result runs the job's code (``__setstate__``, ``__reduce__``) in
        this thread, and a done callback may raise anything: a ``SystemExit`` there
        must not kill the supervisor and leave the handle unresolved for ever.
        """
        try:
            self._resolve(handle, message)
        except BaseException as exc:
            if handle.done():  # resolved; a done callback raised
                logger.exception("cancelpool: a done callback of job %s failed", handle.id)
                return
            error = PoolError(f"job {handle.id} ended, but its outcome could not be read: {exc!r}")
            error.__cause__ = exc
            try:
                self._set_failed(handle, error)
            except BaseException:
                logger.exception("cancelpool: a done callback of job %s failed", handle.id)

    def _resolve(self, handle: JobHandle[Any], message: Any) -> None:
        handle.ended_at = time.time()
        kind = type(message)
        if kind is proto.Done:
            try:
                result = pickle.loads(message.result)
            except BaseException as exc:  # SystemExit from a __setstate__ included
                error = rewrap(
                    exc, f"the result of job {handle.id} could not be unpickled: {exc!r}"
                )
                self._set_failed(handle, error)
                return
            self._close(handle, OperationStatus.COMPLETED)
            handle.set_result(result)
        elif kind is proto.Failed:
            self._set_failed(handle, load_error(message.error, message.traceback, handle.id))
        else:
            handle._partial = load_partial(message.partial)
            reason = CancelationReason(message.reason)
            if handle._cancel_reason is None or reason is not handle._cancel_reason:
                handle._cancel_reason = reason
                handle._cancel_message = message.message
            self._resolve_cancelled(handle)

    def _set_failed(self, handle: JobHandle[Any], error: BaseException) -> None:
        if handle._remote is not None and not handle._told_parent:
            outcome = proto.Failed(handle.id, dump_error(error), "")
            with self._lock:
                self._tell_parent(handle, outcome)
                self._send_posts()
        self._close(handle, OperationStatus.FAILED)
        handle.set_exception(error)

    def _resolve_cancelled(self, handle: JobHandle[Any], *, forced: bool = False) -> None:
        reason = handle._cancel_reason or CancelationReason.MANUAL
        message = handle._cancel_message or f"job {handle.id} was cancelled ({reason.value})"
        if handle._remote is not None and not handle._told_parent:
            partial = dump_partial(handle._partial)
            outcome = proto.Cancelled(handle.id, reason.value, message, partial, False)
            with self._lock:
                self._tell_parent(handle, outcome)
                self._send_posts()
        self._close(handle, OperationStatus.CANCELLED)
        error = JobCancelled(
            reason,
            message,
            None,
            job_id=str(handle.id),
            partial_result=handle._partial,
            forced=forced,
        )
        handle.set_exception(error)

    def _close(self, handle: JobHandle[Any], status: OperationStatus) -> None:
        """Record how a job ended and end its progress() streams (before it resolves).

        Under the lock: caller threads resolve queued jobs too, counters must add up,
        and a progress() starting now must see that the stream has ended.
        """
        with self._lock:
            handle._status = status
            handle.ended_at = handle.ended_at or time.time()
            self._counts[status] += 1
            handle._ended = True
            feeds, handle._feeds = handle._feeds, None
        for feed in feeds or ():
            feed.push(None)

    # -- cancelling (lock held) ---------------------------------------------------------------
    def _cancel_locked(
        self, handles: list[JobHandle[Any]], reason: CancelationReason, message: str | None
    ) -> tuple[int, list[JobHandle[Any]]]:
        """Cancel jobs and their descendants; returns (count, handles to resolve now)."""
        resolved: list[JobHandle[Any]] = []
        bells: set[int] = set()
        count = 0
        now = time.monotonic()
        table = self._table
        for handle in handles:
            if handle._cancel_reason is not None or handle.id not in self._jobs:
                continue
            count += 1
            handle._cancel_reason = reason
            handle._cancel_message = message or f"job {handle.id} was cancelled ({reason.value})"
            if handle._slot is None:
                # Still in our queue: it never starts. Resolved right here.
                self._retire(handle)
                resolved.append(handle)
            elif table is not None:
                table.cancel(handle._slot, reason)
                if handle._worker is not None:
                    bells.add(handle._worker)
                grace = handle.cancel_grace
                if grace is None:
                    grace = self._cancel_grace
                self._add_timer(now + grace, handle, FORCE)
            if handle.id in self._children_of:
                resolved.extend(self._cascade(handle, f"was cancelled ({reason.value})"))
        for index in bells:
            bell = self._workers[index].bell
            if bell is not None:
                bell.ring()
                self._workers[index].rung_at = now
        return count, resolved

    def _cascade(self, parent: JobHandle[Any], what: str) -> list[JobHandle[Any]]:
        """Cancel every live descendant of ``parent`` with reason PARENT (lock held)."""
        children = list(self._children_of.get(parent.id, ()))
        if not children:
            return []
        message = f"parent job {parent.id} ({parent.name or '-'}) {what}"
        if parent._cancel_reason is CancelationReason.PARENT and parent._cancel_message:
            message += f": {parent._cancel_message}"  # up to the ancestor that began it
        _, resolved = self._cancel_locked(children, CancelationReason.PARENT, message)
        return resolved

    def _fire_timers(self) -> None:
        now = time.monotonic()
        backstops: list[JobHandle[Any]] = []
        forced: list[JobHandle[Any]] = []
        with self._lock:
            while self._timers and self._timers[0][0] <= now:
                _, job, attempt, kind = heapq.heappop(self._timers)
                handle = self._jobs.get(job)
                if handle is None or handle._attempts != attempt:
                    continue
                if kind == BACKSTOP:
                    backstops.append(handle)
                elif handle._slot is not None and handle._worker is not None:
                    forced.append(handle)
            _, resolved = self._cancel_locked(
                backstops, CancelationReason.TIMEOUT, "the job ran past its timeout"
            )
            for handle in forced:
                proc = self._workers[handle._worker]  # type: ignore[index]
                if proc.alive and proc.process is not None and proc.forced_for is None:
                    if self._await_verdict(proc, handle, now):
                        continue
                    # It ignored its cancellation for the whole grace period.
                    proc.forced_for = handle.id
                    proc.process.kill()
        for handle in resolved:
            self._resolve_cancelled(handle)

    # -- deaths ----------------------------------------------------------------------------------
    def _worker_died(self, proc: WorkerProc) -> None:
        process = proc.process
        assert process is not None
        process.join(0)
        code = process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        forced_for = proc.forced_for
        retry: list[JobHandle[Any]] = []
        cancelled: list[JobHandle[Any]] = []
        lost: list[tuple[JobHandle[Any], BaseException]] = []
        # Jobs whose cancellation went unheard only because another job blocked the
        # loop: they end cancelled as asked, not forced (``forced`` says a job ignored
        # its cancellation, and these did not: they never got the chance).
        spared: set[int] = set()
        with self._lock:
            proc.alive = False
            handles = [self._jobs[job] for job in proc.inflight if job in self._jobs]
            blocker = self._blocker(proc, forced_for)
            blame = ""
            if blocker is not None:
                assert proc.blocked is not None
                blame = (
                    f"job {blocker.id} ({blocker.name or '-'}) blocked its event loop for "
                    f"{time.monotonic() - proc.blocked_since:.1f} s"
                )
            for handle in handles:
                handle._partial = load_partial(handle._checkpoint)
                if handle is blocker and handle._cancel_reason is None:
                    # Not run again: it would block the loop again.
                    self._retire(handle)
                    cancelled += self._cascade(handle, "was stopped: it blocked its worker")
                    killed = WorkerKilled(
                        f"job {handle.id} ({handle.name or '-'}) was stopped: it blocked "
                        f"its worker's event loop for "
                        f"{time.monotonic() - proc.blocked_since:.1f} s (an async function "
                        f"that does not await), so job {forced_for}'s cancellation could "
                        f"not be heard and its worker (pid {proc.pid}) was killed; it was "
                        f"at:\n{handle.blocked_stack or ''}",
                        job_id=str(handle.id),
                        partial_result=handle._partial,
                    )
                    lost.append((handle, killed))
                    continue
                if handle._cancel_reason is not None:
                    self._retire(handle)
                    if blocker is not None and handle is not blocker:
                        spared.add(handle.id)
                        handle._cancel_message = (
                            f"{handle._cancel_message}; its worker (pid {proc.pid}) was "
                            f"killed because {blame}, so its partial result is its last "
                            "checkpoint"
                        )
                    cancelled.append(handle)
                    cancelled += self._cascade(handle, f"was cancelled ({handle._cancel_reason})")
                    continue
                if handle._attempts <= handle.retries and self._state == "running":
                    retry.append(handle)
                    continue
                self._retire(handle)
                cancelled += self._cascade(handle, "was lost with its worker")
                if blocker is not None:
                    error: BaseException = WorkerKilled(
                        f"job {handle.id} was lost: its worker (pid {proc.pid}) was killed "
                        f"because {blame} (an async function that does not await), and "
                        f"job {forced_for}'s cancellation could not be heard",
                        job_id=str(handle.id),
                        partial_result=handle._partial,
                    )
                elif forced_for is not None:
                    error = WorkerKilled(
                        f"job {handle.id} was lost: its worker (pid {proc.pid}) was killed to "
                        f"force-stop job {forced_for}, which ignored its cancellation",
                        job_id=str(handle.id),
                        partial_result=handle._partial,
                    )
                else:
                    error = WorkerCrashed(
                        f"job {handle.id} was lost: its worker process (pid {proc.pid}) "
                        f"died ({how})",
                        job_id=str(handle.id),
                        partial_result=handle._partial,
                    )
                lost.append((handle, error))
            for handle in retry:
                # Run it again from the start, on whichever worker is free first.
                if handle._slot is not None and self._table is not None:
                    self._table.release(handle._slot)
                handle._slot = None
                handle._worker = None
                handle._status = OperationStatus.PENDING
                handle._attempts += 1  # the old attempt's timers no longer apply
                handle._checkpoint = None
                handle._partial = None
                handle.started_at = None
                self._queue.appendleft(handle)
            proc.inflight.clear()
            self._bury(proc)
            # Replaced while the pool runs, and while jobs still wait for a worker
            # (during shutdown too: they must be able to finish): by a spare that is
            # already running if there is one, else by a new process.
            needed = self._state == "running" or bool(self._queue)
            if needed and self._take_spare(proc.index) is None:
                try:
                    self._spawn(proc)
                except Exception:
                    logger.exception("cancelpool: could not start a replacement worker")
            if self._queue:
                if any(p.alive for p in self._workers):
                    self._dispatch_queue()
                else:
                    stranded = [h for h in self._queue if h.id in self._jobs]
                    self._queue.clear()
                    for handle in stranded:
                        self._retire(handle)
                        lost.append(
                            (
                                handle,
                                PoolClosed(
                                    f"job {handle.id} was lost: no worker process could be started"
                                ),
                            )
                        )
        for handle in cancelled:
            # Every job whose cancellation was under way when its worker was killed to
            # force a stop ended by that kill, not by its own hand.
            self._resolve_cancelled(
                handle,
                forced=forced_for is not None
                and handle._slot is not None
                and handle.id not in spared,
            )
        for handle, error in lost:
            self._set_failed(handle, error)
        if self._state == "closing":
            self._wake()
        if self._spare_count:
            # Last: starting a process takes milliseconds, and the jobs come first.
            with self._lock:
                self._add_spares()

    def _spare_died(self, spare: WorkerProc) -> None:
        """A spare exited (asked to at shutdown, or killed): forget it, start another."""
        with self._lock:
            if spare not in self._spares:
                return  # it replaced a worker meanwhile: its death is a worker's death
            self._spares.remove(spare)
            if spare.process is not None:
                spare.process.join(0)
            self._bury(spare)
            self._add_spares()
        if self._state == "closing":
            self._wake()

    def _fail_everything(self, why: PoolBroken) -> None:
        """Fail every job the pool holds with ``why`` (the supervisor cannot go on)."""
        with self._lock:
            handles = list(self._jobs.values())
            for handle in handles:
                try:
                    self._retire(handle)
                except BaseException:
                    logger.exception("cancelpool: could not retire job %s", handle.id)
            self._queue.clear()
        for handle in handles:
            if handle.done():
                continue
            error = PoolBroken(f"job {handle.id} was lost: {why}")
            error.__cause__ = why.__cause__
            try:
                self._close(handle, OperationStatus.FAILED)
            except BaseException:
                pass
            if not handle.done():
                try:
                    handle.set_exception(error)
                except BaseException:  # a done callback: the handle is resolved anyway
                    logger.exception("cancelpool: a done callback of job %s failed", handle.id)


# What a polled fd is, in the order events are handled.
_OUTBOX = 0
_SENTINEL = 1
_SPARE = 2
_WAKE = 3

_READ_EVENTS = select.POLLIN | select.POLLHUP | select.POLLERR


def _wait(
    readers: list[int], writers: list[int], deadline: float | None
) -> tuple[set[int], set[int]]:
    """Wait until a reader or writer fd is ready, or the deadline passes.

    ``poll`` rather than ``select``: a program with a thousand sockets open gives the
    pool fds above 1023, which ``select`` refuses.
    """
    poller = select.poll()
    for fd in readers:
        poller.register(fd, select.POLLIN)
    for fd in writers:
        poller.register(fd, select.POLLIN | select.POLLOUT if fd in readers else select.POLLOUT)
    if deadline is None:
        events = poller.poll()
    else:
        # poll() takes milliseconds: round up, or we would wake just before the deadline.
        events = poller.poll(max(0, math.ceil((deadline - time.monotonic()) * 1000)))
    readable = {fd for fd, mask in events if mask & _READ_EVENTS}
    writable = {fd for fd, mask in events if mask & (select.POLLOUT | select.POLLERR)}
    return readable, writable


def _log_loop_report(pid: int | None, handle: JobHandle[Any] | None, message: Any) -> None:
    if isinstance(message, proto.LoopResumed):
        logger.info(
            "cancelpool: the event loop of worker %s turns again after %.1f s",
            pid,
            message.seconds,
        )
        return
    who = (
        f"job {handle.id} ({handle.name or '-'})"
        if handle is not None
        else "code that is no job's own task (a task a job started, or the worker's)"
    )
    logger.warning(
        "cancelpool: %s has blocked the event loop of worker %s for %.1f s (an async "
        "function that does not await): the worker's other jobs can neither run nor "
        "hear their cancellation. Where it is:\n%s",
        who,
        pid,
        message.seconds,
        message.stack,
    )


def _how_it_ended(message: Any) -> str:
    if type(message) is proto.Cancelled:
        return f"was cancelled ({message.reason})"
    return "failed" if type(message) is proto.Failed else "completed"


def _decode_metadata(raw: Any) -> dict[str, Any]:
    value = msgspec.msgpack.decode(raw)
    return value if isinstance(value, dict) else {"value": value}


def _rss(pid: int) -> int:
    import psutil

    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0

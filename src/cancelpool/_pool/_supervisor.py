"""The supervisor: everything the pool does that is not a caller's call.

::

    CancelPool (facade)  --holds-->  Supervisor  --weakref-->  CancelPool
                                      |  owns: JobTable (jobs), WorkerSet (processes),
                                      |        Wakeup (self-pipe), TokenTable, timers
    caller threads                    supervisor thread                worker processes
    --------------                    -----------------                ----------------
    submit()  --(lock)-->  JobTable.register, dispatch  --inbox pipe-->  Run, Child*
    cancel()  --(lock)-->  token table slot := CANCELLED  (shared memory, read at once)
                           doorbell.ring()  ---------------------------->  wakes the loop
                           poll(): outbox pipes  <-------------------  Started/Done/...
                                   process sentinels  <--------------  a worker died
                                   Wakeup pipe  <-- callers, the pool's weakref callback
                                   timers: timeout backstops, forced stops
    handle.result()  <---  JobHandle resolved (only here), progress callbacks run

The supervisor is the only code that resolves handles; it writes a handle's state only
through the handle's own methods. A job that ignores its cancellation for
``cancel_grace`` seconds gets its worker killed; the other jobs of that worker end with
``WorkerLost`` (or run again, under ``retries``). A worker that dies on its own fails
only its own jobs and is replaced. A pool that becomes garbage is shut down: the
weakref's callback wakes the thread, which stops as ``shutdown(wait=False)`` would.
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
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
from ..shm import TableFull, TokenTable
from . import _exit
from . import _protocol as proto
from ._handle import JobHandle
from ._job_table import JobTable
from ._payload import dump_error, dump_partial, load_error, load_partial, rewrap
from ._statistics import PoolStatistics, WorkerStatistics
from ._wakeup import Wakeup
from ._worker_set import WORKER_EXIT_GRACE, WorkerProc, WorkerSet

if TYPE_CHECKING:
    from ._settings import PoolSettings

logger = logging.getLogger("cancelpool")

#: Seconds a forced stop waits, once, for the worker's watchdog to say who blocks the
#: loop, when the loop has not heard the cancellation (the watchdog reports 0.1 s after
#: a ring goes unheard; this leaves room for a loaded machine). Only a blocked (or
#: starved) worker waits: a loop that heard the cancellation is killed on time.
VERDICT_WAIT = 1.0
#: Minimum seconds between two RSS readings of one worker (``max_memory_per_worker``):
#: a reading costs tens of microseconds, so not after every job.
MEMORY_CHECK_INTERVAL = 0.2
#: Extra time the supervisor gives a job past its timeout before it cancels the job
#: itself (the worker enforces timeouts precisely; this only catches a worker whose
#: loop is blocked). Shorter fires spuriously on a loaded machine; longer stops late.
BACKSTOP_MARGIN = 0.25
#: Seconds a plain (sync) function may wait for an idle worker while async jobs queued
#: after it are placed on busy ones. Longer favours throughput, shorter the function.
SYNC_PATIENCE = 0.5
# The kinds of supervisor timers.
BACKSTOP = 0
FORCE = 1
#: Bytes asked for per read of a worker's outbox: a pipe's capacity. os.read allocates
#: the whole size before it shrinks the result, so a larger ask costs every small read.
_READ_SIZE = 1 << 16


class Supervisor:
    """Runs one pool: its jobs, its workers and the thread that talks to them.

    :class:`CancelPool` is the facade the caller sees; it holds this object, and this
    object holds the pool only through a weak reference: when the pool becomes
    garbage, the reference's callback wakes the supervisor thread, which shuts the
    pool down as ``shutdown(wait=False)`` would (the jobs already submitted finish).
    """

    def __init__(self, settings: PoolSettings, pool: object) -> None:
        self._settings = settings
        self._cancel_grace = settings.cancel_grace
        self._max_tasks = settings.max_tasks_per_child
        self._max_memory = settings.max_memory_per_worker
        self._capacity = settings.capacity
        self._lock = threading.RLock()
        # One condition for every handle's result() to wait on (see JobHandle).
        # Reentrant: concurrent.futures.wait() holds the conditions of all the futures
        # it waits for at once, and here they are one and the same.
        self._results = threading.Condition(threading.RLock())
        self._job_table = JobTable(settings.history)
        self._table: TokenTable | None = None
        self._state = "new"
        self._thread: threading.Thread | None = None
        self._wakeup = Wakeup()
        self._ws = WorkerSet(settings, self._lock, self._wakeup, self._is_running)
        self._timers: list[tuple[float, int, int, int]] = []
        self._broken: PoolBroken | None = None
        self._dropped = False
        self._pool_ref = weakref.ref(pool, self._pool_dropped)

    # -- lifecycle (any thread) ---------------------------------------------------------------
    def _is_running(self) -> bool:
        return self._state == "running"

    def _wake(self) -> None:
        """Make the supervisor thread run its loop once more (lock held)."""
        self._wakeup.wake()

    @property
    def state(self) -> str:
        """``new``, ``running``, ``closing``, ``closed`` or ``broken``."""
        return self._state

    @property
    def thread(self) -> threading.Thread | None:
        """The supervisor thread, once started."""
        return self._thread

    def start(self) -> None:
        """Start the workers and the supervisor thread (once; later calls return).

        Raises:
            PoolClosed: the pool is shut down, or the interpreter is exiting.
            PoolBroken: the pool is broken.
        """
        with self._lock:
            if self._state == "running":
                return
            if self._state != "new":
                raise self._closed_error()
            if _exit.interpreter_exiting():
                raise PoolClosed(
                    "the interpreter is shutting down: this CancelPool starts no workers now"
                )
            self._table = self._ws.table = TokenTable.create(self._capacity)
            self._wakeup.open()
            try:
                for proc in self._ws.procs:
                    self._ws.spawn(proc)
            except BaseException:
                self._ws.kill_all()
                self._close_resources()
                self._state = "closed"
                raise
            self._state = "running"
            self._ws.add_spares()
            self._thread = threading.Thread(
                target=self._supervise, name="cancelpool-supervisor", daemon=True
            )
            self._thread.start()
            _exit.live.add(self)

    def shutdown(self, wait: bool, *, cancel_pending: bool, cancel_running: bool) -> None:
        """Stop accepting jobs; cancel some if asked; with ``wait``, join the thread."""
        with self._lock:
            if self._state == "new":
                self._state = "closed"
                return
            if self._state == "running":
                self._state = "closing"
        if cancel_pending or cancel_running:
            self.cancel_everything(
                CancelationReason.MANUAL, "the pool shut down", queued_only=not cancel_running
            )
        with self._lock:  # not while the supervisor thread closes the wake pipe
            self._wake()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    def terminate(self, message: str) -> None:
        """Cancel every job and kill every worker now; join the supervisor thread."""
        with self._lock:
            if self._state == "new":
                self._state = "closed"
                return
            if self._state == "running":
                self._state = "closing"
        self.cancel_everything(CancelationReason.MANUAL, message)
        with self._lock:
            for proc in (*self._ws.procs, *self._ws.spares):
                if proc.alive and proc.process is not None and proc.process.exitcode is None:
                    proc.forced_for = proc.forced_for or 0
                    proc.process.kill()
            self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _pool_dropped(self, _ref: object) -> None:
        # The weakref callback: it runs in whatever thread let the pool go, possibly
        # inside an allocation while that thread holds one of our locks; so it only
        # sets a flag and wakes the supervisor thread, which does the shutting down.
        self._dropped = True
        self._wakeup.wake_from_anywhere()

    def describe(self) -> str:
        """The state and live job count, for the pool's repr."""
        return f"{self._state} jobs={len(self._job_table.live)}"

    # -- the caller's requests (any thread) -------------------------------------------------
    def owns(self, handle: JobHandle[Any]) -> bool:
        """Whether ``handle`` is a job of this pool."""
        return handle._owner is self

    def submit(
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
    ) -> JobHandle[Any]:
        """Register a job (already pickled and validated) and queue or dispatch it."""
        with self._lock:
            return self._new_job(
                fn,
                args,
                is_async,
                name=name,
                timeout=timeout,
                metadata=metadata,
                parent=parent,
                retries=retries,
                cancel_grace=cancel_grace,
            )

    def warm(self, function: bytes) -> None:
        """A job function seen for the first time: the spares load it now."""
        with self._lock:
            self._ws.warm(function)

    def get(self, job_id: int) -> JobHandle[Any] | None:
        """The handle of a live or recently finished job, or None."""
        with self._lock:
            return self._job_table.find(job_id)

    def every_job(self) -> list[JobHandle[Any]]:
        """The finished jobs still in the history, then the live ones."""
        with self._lock:
            return self._job_table.every()

    def statistics(self) -> PoolStatistics:
        """Counters: submitted, queued, running, completed, cancelled, failed, per worker."""
        now = time.monotonic()
        with self._lock:
            jobs = self._job_table
            submitted, running, completed, cancelled, failed = jobs.counters()
            return PoolStatistics(
                submitted=submitted,
                queued=len(jobs.live) - running,
                running=running,
                completed=completed,
                cancelled=cancelled,
                failed=failed,
                workers=tuple(
                    WorkerStatistics(
                        pid=p.pid,
                        running=len(p.inflight),
                        completed=p.completed,
                        blocked_by=p.blocked.job if p.blocked is not None else None,
                        blocked_for=now - p.blocked_since if p.blocked is not None else 0.0,
                    )
                    for p in self._ws.procs
                ),
                spares=sum(1 for p in self._ws.spares if p.alive),
            )

    def cancel_job(
        self, handle: JobHandle[Any], reason: CancelationReason, message: str | None
    ) -> bool:
        """Cancel one job and its descendants; True while the cancellation is under way."""
        if handle._owner is not self:
            raise ValueError(f"{handle!r} belongs to another pool")
        with self._lock:
            live = handle.id in self._job_table.live
            count, resolved = self._cancel_locked([handle], reason, message)
        for queued in resolved:
            self._resolve_cancelled(queued)
        # True while the cancellation is under way (asked now or before), False once
        # the job had ended anyway.
        return count > 0 or (live and handle._cancel_reason is not None)

    def cancel_matching(
        self,
        match: Callable[[str], Any] | None,
        status: OperationStatus | None,
        reason: CancelationReason,
        message: str | None,
    ) -> int:
        """Cancel the live jobs whose name ``match`` accepts and whose status is
        ``status`` (None: any); returns how many matched."""
        with self._lock:
            targets = self._job_table.select(match, status)
        return self._cancel_many(targets, reason, message)

    def cancel_everything(
        self, reason: CancelationReason, message: str, *, queued_only: bool = False
    ) -> int:
        """Cancel every live job (only the queued ones with ``queued_only``)."""
        with self._lock:
            targets = self._job_table.select(queued_only=queued_only)
        return self._cancel_many(targets, reason, message)

    def _cancel_many(
        self, handles: list[JobHandle[Any]], reason: CancelationReason, message: str | None
    ) -> int:
        with self._lock:
            count, resolved = self._cancel_locked(handles, reason, message)
        for handle in resolved:
            self._resolve_cancelled(handle)
        return count

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
            self._table = self._ws.table = None
        self._wakeup.close()

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
            self._ws.kill_all()
            with self._lock:
                self._close_resources()
                if self._state != "broken":
                    self._state = "closed"
            _exit.live.discard(self)

    def _loop(self) -> None:
        stop_deadline: float | None = None
        while True:
            with self._lock:
                if self._dropped and self._state == "running":
                    self._state = "closing"  # the pool became garbage
                if self._state in ("closing", "broken") and not self._job_table.live:
                    for proc in (*self._ws.procs, *self._ws.spares):
                        if proc.alive and not proc.stop_sent:
                            proc.stop_sent = True
                            self._ws.write(proc, proto.frame([proto.Stop()]))
                    if not any(proc.alive for proc in (*self._ws.procs, *self._ws.spares)):
                        return
                    if stop_deadline is None:
                        stop_deadline = time.monotonic() + WORKER_EXIT_GRACE
                # What each polled fd stood for when the poll began, with the process
                # it belonged to. Handling one event may bury a worker and start its
                # replacement, whose new pipes can reuse the numbers of the old ones:
                # an event is acted on only while its fd still means the same thing.
                watched: dict[int, tuple[int, WorkerProc, Any]] = {}
                wake_fd = self._wakeup.fd
                readers = [wake_fd]
                writers = []
                for proc in self._ws.procs:
                    if proc.alive:
                        watched[proc.out_fd] = (_OUTBOX, proc, proc.process)
                        watched[proc.sentinel] = (_SENTINEL, proc, proc.process)
                        readers.append(proc.out_fd)
                        readers.append(proc.sentinel)
                        if proc.write_buffer:
                            writers.append(proc.in_fd)
                for proc in self._ws.spares:
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
                self._ws.kill_all()  # workers that ignored Stop
                return
            # Outboxes first: what a worker said before it died is read before its death
            # is handled.
            for fd in sorted(readable, key=lambda fd: watched[fd][0] if fd in watched else _WAKE):
                if fd == wake_fd:
                    self._wakeup.drain()
                    with self._lock:
                        if self._job_table.queued:
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
                    for proc in (*self._ws.procs, *self._ws.spares):
                        if proc.alive and proc.in_fd in writable and proc.write_buffer:
                            self._ws.flush(proc)
            if self._timers and self._timers[0][0] <= time.monotonic():
                self._fire_timers()

    # -- dispatching (lock held) ----------------------------------------------------------
    def _add_timer(self, deadline: float, handle: JobHandle[Any], kind: int) -> None:
        """Arm a timer for the job's current attempt (lock held), waking the supervisor
        thread if it is the earliest."""
        earliest = self._timers[0][0] if self._timers else None
        heapq.heappush(self._timers, (deadline, handle.id, handle._attempts, kind))
        if earliest is None or deadline < earliest:
            self._wake()

    def _dispatch(self, proc: WorkerProc, handles: list[JobHandle[Any]]) -> None:
        """Send jobs to a worker (lock held): allocate their slots, write one frame."""
        assert self._table is not None
        messages = []
        for handle in handles:
            parent = handle.parent
            parent_slot = parent._slot if parent is not None and not parent.done() else None
            try:
                slot = self._table.allocate(parent_slot)
            except TableFull:
                self._job_table.queued.appendleft(handle)
                if not proc.inflight:
                    proc.exclusive = False
                continue
            handle._placed(slot, proc.index)
            proc.inflight.add(handle.id)
            proc.dispatched += 1
            if handle.timeout is not None:
                # Armed now, not when the job reports it started: a worker whose
                # loop is blocked reports nothing, and that is the case to catch.
                deadline = time.monotonic() + handle.timeout + BACKSTOP_MARGIN
                self._add_timer(deadline, handle, BACKSTOP)
            if not handle._is_async:
                proc.exclusive = True
            messages.append(
                proto.Run(
                    handle.id,
                    slot.index,
                    slot.generation,
                    handle._fn,
                    handle._args,
                    handle.name,
                    handle.timeout,
                    handle._is_async,
                )
            )
        if messages:
            self._ws.write(proc, proto.frame(messages))

    def _dispatch_queue(self) -> None:
        """Move queued jobs to workers with room (lock held), one frame per worker.

        A plain function waiting for an idle worker does not hold up the async jobs
        behind it, unless it has waited longer than SYNC_PATIENCE: then nothing more is
        placed, so that the workers drain and it gets one.
        """
        batches: dict[int, list[JobHandle[Any]]] = {}
        queue = self._job_table.queued
        waiting: list[JobHandle[Any]] = []
        now = time.time()
        while queue:
            handle = queue.popleft()
            if handle._cancel_reason is not None or handle.id not in self._job_table.live:
                continue
            exclusive = not handle._is_async
            proc = self._ws.pick(exclusive)
            if proc is None:
                waiting.append(handle)
                if not exclusive or now - handle.submitted_at > SYNC_PATIENCE:
                    break
                continue
            batch = batches.setdefault(proc.index, [])
            batch.append(handle)
            # Count it now so that the next pick sees this worker's new load.
            proc.inflight.add(handle.id)
            proc.dispatched += 1
            if exclusive:
                proc.exclusive = True
        queue.extendleft(reversed(waiting))
        for index, batch in batches.items():
            proc = self._ws.procs[index]
            for handle in batch:
                proc.inflight.discard(handle.id)
                proc.dispatched -= 1  # _dispatch counts it for good
            self._dispatch(proc, batch)

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
            jobs = self._job_table.live
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
                    key = (proc.index, proc.pid or 0, message.request)
                    child = self._job_table.by_request(key)
                    if child is not None:
                        reason = CancelationReason.MANUAL
                        resolved += self._cancel_locked([child], reason, message.message)[1]
                    continue
                handle = jobs.get(message.job)
                if handle is None:
                    continue
                if kind is proto.Started:
                    handle._set_running()
                elif kind is proto.Progress:
                    progress.append((handle, message))
                    ancestor = handle.parent
                    while ancestor is not None:
                        if ancestor._worker is not None and not ancestor.done():
                            # Each ancestor job's own callbacks, in its worker, hear it
                            # too (bubbling, as in one process).
                            self._ws.post(
                                self._ws.procs[ancestor._worker],
                                proto.ChildProgress(
                                    ancestor.id, handle.id, message.message, message.metadata
                                ),
                            )
                        ancestor = ancestor.parent
                elif kind is proto.Checkpoint:
                    handle._set_checkpoint(message.partial)
                else:
                    self._retire(handle)
                    finished.append((handle, message))
            for request, error in refused:
                self._ws.post(proc, proto.ChildRefused(request, dump_error(error)))
            if finished:
                resolved += self._after_finish(proc, finished)
            if self._job_table.queued:
                self._dispatch_queue()
            self._ws.send_posts()
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
        handle = self._job_table.live.get(message.job) if message.job is not None else None
        if handle is not None:
            handle._set_blocked_stack(message.stack)
        return proc.pid, handle, message

    def _blocker(self, proc: WorkerProc, forced_for: int | None) -> JobHandle[Any] | None:
        """The job that blocked the loop of ``proc`` when it was killed to force a stop
        (lock held), or None: no forced stop, no block reported, or no job known."""
        blocked = proc.blocked
        if not forced_for or blocked is None or blocked.job not in proc.inflight:
            return None  # forced_for 0: terminate() killed it, nobody is to blame
        return self._job_table.live.get(blocked.job)

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
                handle = self._job_table.live.get(job)
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
            for other in (*self._ws.procs, *self._ws.spares):
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
            if self._job_table.has_children(handle.id):
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
            self._ws.post(proc, proto.Stop())
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
            self,
            self._job_table.next_id(),
            name,
            timeout,
            metadata,
            parent,
            retries=retries,
            cancel_grace=cancel_grace,
            fn=fn,
            args=args,
            is_async=is_async,
            remote=remote,
        )
        self._job_table.register(handle)
        if parent is not None:
            if parent._cancel_reason is not None or parent.id not in self._job_table.live:
                # A child of a cancelled or finished job never starts.
                handle._mark_cancelled(
                    CancelationReason.PARENT, f"parent job {parent.id} has already ended"
                )
                self._retire(handle)
                self._resolve_cancelled(handle)
                return handle
            self._job_table.adopt(parent, handle)
        proc = self._ws.pick(not is_async)
        if proc is not None and not proc.inflight and not self._job_table.queued:
            # An idle worker: write now, for the lowest latency.
            self._dispatch(proc, [handle])
        else:
            # Busy workers: the supervisor thread sends queued jobs in batches, one
            # frame (one write, one wake-up of the worker) per batch.
            self._job_table.queued.append(handle)
            if proc is not None:
                self._wake()
        return handle

    def _tell_parent(self, handle: JobHandle[Any], outcome: Any) -> None:
        """If a job submitted this one, post it the outcome (lock held), once."""
        remote = handle._remote
        if remote is None or not handle._claim_parent_notice():
            return
        target = self._ws.procs[remote[0]]
        # Only to the very process that asked: a replacement worker in the same place
        # counts its requests from 1 again.
        if target.alive and target.pid == remote[1]:
            self._ws.post(target, proto.ChildOutcome(remote[2], outcome))

    def _submit_child(self, proc: WorkerProc, message: proto.SubmitChild) -> BaseException | None:
        parent = self._job_table.live.get(message.parent)
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
        self._ws.post(proc, proto.ChildAccepted(message.request, handle.id))
        return None

    def _retire(self, handle: JobHandle[Any]) -> None:
        """Forget a live job (lock held): free its slot and its worker's place."""
        self._job_table.retire(handle)
        if handle._slot is not None and self._table is not None:
            self._table.release(handle._slot)
        if handle._worker is not None:
            proc = self._ws.procs[handle._worker]
            proc.inflight.discard(handle.id)
            if not proc.inflight:
                proc.exclusive = False
            proc.completed += 1

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
        handle._stamp_end()
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
            handle._set_partial(load_partial(message.partial))
            reason = CancelationReason(message.reason)
            if handle._cancel_reason is None or reason is not handle._cancel_reason:
                handle._mark_cancelled(reason, message.message)
            self._resolve_cancelled(handle)

    def _set_failed(self, handle: JobHandle[Any], error: BaseException) -> None:
        if handle._remote is not None and not handle._told_parent:
            outcome = proto.Failed(handle.id, dump_error(error), "")
            with self._lock:
                self._tell_parent(handle, outcome)
                self._ws.send_posts()
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
                self._ws.send_posts()
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
            self._job_table.count_end(status)
            feeds = handle._close(status)
        for feed in feeds:
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
            if handle._cancel_reason is not None or handle.id not in self._job_table.live:
                continue
            count += 1
            handle._mark_cancelled(
                reason, message or f"job {handle.id} was cancelled ({reason.value})"
            )
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
            if self._job_table.has_children(handle.id):
                resolved.extend(self._cascade(handle, f"was cancelled ({reason.value})"))
        for index in bells:
            bell = self._ws.procs[index].bell
            if bell is not None:
                bell.ring()
                self._ws.procs[index].rung_at = now
        return count, resolved

    def _cascade(self, parent: JobHandle[Any], what: str) -> list[JobHandle[Any]]:
        """Cancel every live descendant of ``parent`` with reason PARENT (lock held)."""
        children = self._job_table.children_of(parent.id)
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
                handle = self._job_table.live.get(job)
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
                proc = self._ws.procs[handle._worker]  # type: ignore[index]
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
            handles = [
                self._job_table.live[job] for job in proc.inflight if job in self._job_table.live
            ]
            blocker = self._blocker(proc, forced_for)
            blame = ""
            if blocker is not None:
                assert proc.blocked is not None
                blame = (
                    f"job {blocker.id} ({blocker.name or '-'}) blocked its event loop for "
                    f"{time.monotonic() - proc.blocked_since:.1f} s"
                )
            for handle in handles:
                handle._set_partial(load_partial(handle._checkpoint))
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
                        handle._mark_cancelled(
                            handle._cancel_reason,
                            f"{handle._cancel_message}; its worker (pid {proc.pid}) was "
                            f"killed because {blame}, so its partial result is its last "
                            "checkpoint",
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
                handle._requeue()
                self._job_table.queued.appendleft(handle)
            proc.inflight.clear()
            self._ws.bury(proc)
            # Replaced while the pool runs, and while jobs still wait for a worker
            # (during shutdown too: they must be able to finish): by a spare that is
            # already running if there is one, else by a new process.
            needed = self._state == "running" or bool(self._job_table.queued)
            if needed and self._ws.take_spare(proc.index) is None:
                try:
                    self._ws.spawn(proc)
                except Exception:
                    logger.exception("cancelpool: could not start a replacement worker")
            if self._job_table.queued:
                if any(p.alive for p in self._ws.procs):
                    self._dispatch_queue()
                else:
                    stranded = [h for h in self._job_table.queued if h.id in self._job_table.live]
                    self._job_table.queued.clear()
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
        if self._settings.spare_workers:
            # Last: starting a process takes milliseconds, and the jobs come first.
            with self._lock:
                self._ws.add_spares()

    def _spare_died(self, spare: WorkerProc) -> None:
        """A spare exited (asked to at shutdown, or killed): forget it, start another."""
        with self._lock:
            if spare not in self._ws.spares:
                return  # it replaced a worker meanwhile: its death is a worker's death
            self._ws.spares.remove(spare)
            if spare.process is not None:
                spare.process.join(0)
            self._ws.bury(spare)
            self._ws.add_spares()
        if self._state == "closing":
            self._wake()

    def _fail_everything(self, why: PoolBroken) -> None:
        """Fail every job the pool holds with ``why`` (the supervisor cannot go on)."""
        with self._lock:
            handles = list(self._job_table.live.values())
            for handle in handles:
                try:
                    self._retire(handle)
                except BaseException:
                    logger.exception("cancelpool: could not retire job %s", handle.id)
            self._job_table.queued.clear()
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

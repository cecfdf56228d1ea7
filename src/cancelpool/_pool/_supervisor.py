"""The supervisor: the thread that talks to the workers, and the only code that
resolves handles.

::

    CancelPool (facade)  --holds-->  Supervisor  --weakref-->  CancelPool
                                      |  owns: JobTable (jobs), WorkerSet (processes),
                                      |        Wakeup (self-pipe), TokenTable, and
                                      |        Timers, Dispatcher (placing, retiring),
                                      |        Canceller (cancels, forced stops),
                                      |        Resolver (writes outcomes to handles)
    caller threads                    supervisor thread                worker processes
    --------------                    -----------------                ----------------
    submit()  --(lock)-->  JobTable.register, Dispatcher  --inbox pipe-->  Run, Child*
      (all busy: no lock, JobTable.incoming; registered by the next lock holder)
    cancel()  --(lock)-->  Canceller: slot := CANCELLED  (shared memory, read at once)
                           doorbell.ring()  ---------------------------->  wakes the loop
                           Watch.wait(): outbox pipes  <-------------  Started/Done/...
                                         process sentinels  <---------  a worker died
                                         Wakeup pipe  <-- callers, the weakref callback
                                         Timers: timeout backstops, forced stops
    handle.result()  <---  Resolver (only here), progress callbacks run

A handle's state is written only through the handle's own methods; what the supervisor
keeps of a job for itself is its ``JobRecord``. A job that ignores
its cancellation for ``cancel_grace`` seconds gets its worker killed; the other jobs of
that worker end with ``WorkerLost`` (or run again, under ``retries``). A worker that
dies on its own fails only its own jobs and is replaced (what a death means for each
job is decided in :mod:`._deaths`). If the worker's watchdog reported a job blocking
the event loop (``LoopBlocked``), that job is the one blamed for the kill. A pool that
becomes garbage is shut down: the weakref's callback wakes the thread, which stops as
``shutdown(wait=False)`` would.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from .. import _tracing
from .._core._enums import CancelationReason, OperationStatus
from .._core._exceptions import JobCancelled, PoolBroken, PoolClosed, PoolError
from .._events import (
    EventHub,
    JobProgress,
    JobRetried,
    JobStarted,
    JobSubmitted,
    LoopStalled,
    WorkerDied,
    job_fields,
)
from ..shm import TokenTable
from . import _exit, _poll
from . import _protocol as proto
from ._cancel import Canceller
from ._deaths import Death, judge
from ._dispatch import Dispatcher
from ._handle import JobHandle
from ._job_table import JobRecord, JobTable
from ._loop_state import log_report
from ._payload import dump_error, load_error, load_partial
from ._resolver import Resolver
from ._statistics import PoolStatistics, snapshot
from ._timers import Timers
from ._wakeup import Wakeup
from ._worker_set import WORKER_EXIT_GRACE, WorkerProc, WorkerSet

if TYPE_CHECKING:
    from ._settings import PoolSettings

logger = logging.getLogger("cancelpool")
#: Workers in a row that may exit before their initializer returns before the pool
#: counts as broken (one such death may be a kill from outside; a pattern is not).
MAX_INIT_DEATHS = 3
#: Seconds the supervisor thread polls at most while jobs are live. A timer armed
#: further ahead (a cancelled job's force timer: cancel_grace, 5 s by default) needs no
#: wake-up of the thread; an idle pool still sleeps until something happens.
NAP = 1.0


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
        #: Lifecycle events: put wherever a fact is decided, delivered by this thread.
        self.events = EventHub()
        self._ws = WorkerSet(settings, self._lock, self._wakeup, self._is_running, self.events)
        self._timers = Timers(self._wakeup)
        self._dispatcher = Dispatcher(self._job_table, self._ws, self._timers)
        self._resolver = Resolver(self._lock, self._job_table, self._ws, self.events)
        self._canceller = Canceller(
            settings, self._job_table, self._ws, self._timers, self._dispatcher
        )
        self._broken: PoolBroken | None = None
        #: Workers in a row that died before their initializer returned (InitDone).
        self._init_deaths = 0
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
            self._ws.kill_now(forced=True)
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
        jobs = self._job_table
        return f"{self._state} jobs={len(jobs.live) + len(jobs.incoming)}"

    # -- the caller's requests (any thread) -------------------------------------------------
    def subscribe(self, callback: Any) -> Callable[[], None]:
        """See :meth:`CancelPool.subscribe`."""
        return self.events.subscribe(callback)

    def owns(self, handle: JobHandle[Any]) -> bool:
        """Whether ``handle`` is a job of this pool."""
        return handle._belongs_to(self)

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
        trace: str | None = None,
    ) -> JobHandle[Any]:
        """Register a job (already pickled and validated) and queue or dispatch it
        (``trace``: the submitter's trace context, see ``_tracing``)."""
        # With subscribers, the locked path: JobSubmitted is told at once (a job left
        # in ``incoming`` is told when registered, which may be when room is made).
        if parent is None and not self.events.listeners and self._all_busy():
            return self._submit_unlocked(
                fn,
                args,
                is_async,
                name=name,
                timeout=timeout,
                metadata=metadata,
                retries=retries,
                cancel_grace=cancel_grace,
                trace=trace,
            )
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
                trace=trace,
            ).handle

    def _all_busy(self) -> bool:
        """Whether a new job would wait anyway (a hint, read without the lock): jobs
        are queued, or no worker is idle."""
        jobs = self._job_table
        if jobs.queued or jobs.incoming:
            return True
        return all(proc.inflight or not proc.alive for proc in self._ws.procs)

    def _submit_unlocked(
        self,
        fn: bytes,
        args: bytes,
        is_async: bool,
        *,
        name: str | None,
        timeout: float | None,
        metadata: dict[str, Any] | None,
        retries: int,
        cancel_grace: float | None,
        trace: str | None,
    ) -> JobHandle[Any]:
        """Submit a job that will wait for a worker anyway, without the pool's lock.

        The job goes to the job table's ``incoming`` deque and the supervisor thread
        is woken (at most one byte per turn of its loop); whoever next holds the lock
        registers it first. A burst of submits then costs the supervisor one turn,
        not a turn on the lock per job.
        """
        if self._state != "running":
            raise self._closed_error()
        handle: JobHandle[Any] = JobHandle(
            self,
            self._job_table.next_id(),
            name,
            timeout,
            metadata,
            None,
            retries=retries,
            cancel_grace=cancel_grace,
        )
        job = JobRecord(handle, None, fn, args, is_async, None, trace)
        incoming = self._job_table.incoming
        incoming.append(job)
        if self._state != "running":
            # Shutting down meanwhile: the supervisor registers every job appended
            # before the state changed (it absorbs under the lock after the change,
            # before it may stop); one it has not taken is withdrawn here.
            with self._lock:
                try:
                    incoming.remove(job)
                except ValueError:
                    pass  # registered: it runs (or is cancelled) like any other
                else:
                    raise self._closed_error()
        if self._ws.pick(not is_async) is not None:
            # A worker has room (a hint, read without the lock): the supervisor places
            # the job now. Otherwise it is placed when room is made, since whatever
            # makes room (a job's end, a replacement worker) registers the incoming
            # jobs after making it, under the lock: the append above comes first.
            self._wakeup.wake_from_anywhere()
        return handle

    def _absorb(self) -> None:
        """Register the jobs submitted without the lock (lock held)."""
        if not self._job_table.incoming:
            return
        moved = self._job_table.absorb()
        if self.events.listeners:
            for job in moved:
                self.events.put(
                    JobSubmitted(
                        **job_fields(job.handle), at=job.handle.submitted_at, parent_id=None
                    )
                )

    def warm(self, function: bytes) -> None:
        """A job function seen for the first time: the spares load it now."""
        with self._lock:
            self._ws.warm(function)

    def get(self, job_id: int) -> JobHandle[Any] | None:
        """The handle of a live or recently finished job, or None."""
        with self._lock:
            self._absorb()
            return self._job_table.find(job_id)

    def every_job(self) -> list[JobHandle[Any]]:
        """The finished jobs still in the history, then the live ones."""
        with self._lock:
            self._absorb()
            return self._job_table.every()

    def statistics(self) -> PoolStatistics:
        """Counters: submitted, queued, running, completed, cancelled, failed, per worker."""
        with self._lock:
            self._absorb()
            return snapshot(self._job_table, self._ws)

    def cancel_job(
        self, handle: JobHandle[Any], reason: CancelationReason, message: str | None
    ) -> bool:
        """Cancel one job and its descendants; True while the cancellation is under way."""
        if not handle._belongs_to(self):
            raise ValueError(f"{handle!r} belongs to another pool")
        with self._lock:
            job = self._job_table.of(handle)
            if job is None:
                # Submitted a moment ago, perhaps, and not registered yet. (The other
                # incoming jobs wait for the supervisor: registering them here would
                # put their cost on this cancellation's path.)
                self._absorb()
                job = self._job_table.of(handle)
            if job is None:
                return False  # it has ended
            count, resolved = self._canceller.cancel([job], reason, message)
        self._resolver.cancelled_all(resolved)
        # True while the cancellation is under way (asked now or before).
        return count > 0 or handle.cancel_reason is not None

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
            self._absorb()
            targets = self._job_table.select(match, status)
        return self._cancel_many(targets, reason, message)

    def cancel_everything(
        self, reason: CancelationReason, message: str, *, queued_only: bool = False
    ) -> int:
        """Cancel every live job (only the queued ones with ``queued_only``)."""
        with self._lock:
            self._absorb()
            targets = self._job_table.select(queued_only=queued_only)
        return self._cancel_many(targets, reason, message)

    def _cancel_many(
        self, jobs: list[JobRecord], reason: CancelationReason, message: str | None
    ) -> int:
        with self._lock:
            count, resolved = self._canceller.cancel(jobs, reason, message)
        self._resolver.cancelled_all(resolved)
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
        self.events.attach(self._wakeup.wake_from_anywhere, threading.get_ident())
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
            self.events.attach(None, threading.get_ident())
            self.events.deliver()  # what the last turn decided

    def _loop(self) -> None:
        stop_deadline: float | None = None
        events = self.events
        watch: _poll.Watch | None = None  # kept while the processes stay the same
        while True:
            events.deliver()  # outside the lock: subscribers may call the pool
            with self._lock:
                self._absorb()
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
                ws = self._ws
                key = _poll.processes(self._wakeup.fd, ws.procs, ws.spares)
                if watch is None or watch.key != key:
                    watch = _poll.Watch(key, ws.procs, ws.spares)
                watch.watch_writes()
                deadline = self._timers.next_deadline()
                if stop_deadline is not None:
                    deadline = stop_deadline if deadline is None else min(deadline, stop_deadline)
                if self._job_table.live:
                    # While jobs run, look up at least every NAP seconds: a timer armed
                    # further ahead than that then needs no wake-up (see Timers).
                    nap = time.monotonic() + NAP
                    deadline = nap if deadline is None else min(deadline, nap)
                self._timers.sleeping_until = deadline
            readable, writable = watch.wait(deadline)
            if stop_deadline is not None and time.monotonic() >= stop_deadline:
                self._ws.kill_all()  # workers that ignored Stop
                return
            for event in watch.events(readable):
                if event is None:  # the wake-up pipe
                    self._wakeup.drain()
                    with self._lock:
                        self._absorb()
                        if self._job_table.queued:
                            self._dispatcher.drain_queue()
                elif event.kind == _poll.OUTBOX:
                    self._read(event.proc)
                elif event.kind == _poll.SPARE:
                    self._spare_died(event.proc)
                else:
                    self._read(event.proc)  # whatever it said before dying
                    self._worker_died(event.proc)
            if writable:
                with self._lock:
                    for proc in (*self._ws.procs, *self._ws.spares):
                        if proc.alive and proc.in_fd in writable and proc.write_buffer:
                            self._ws.flush(proc)
            due = self._timers.next_deadline()
            if due is not None and due <= time.monotonic():
                self._fire_timers()

    # -- reading from workers ---------------------------------------------------------------------
    def _read(self, proc: WorkerProc) -> None:
        messages = self._ws.read(proc)
        if messages:
            self._handle_messages(proc, messages)

    def _handle_messages(self, proc: WorkerProc, messages: list[Any]) -> None:
        finished: list[tuple[JobRecord, Any]] = []
        progress: list[tuple[JobHandle[Any], proto.Progress]] = []
        refused: list[tuple[int, BaseException]] = []
        resolved: list[JobRecord] = []
        broken: list[proto.InitFailed] = []
        loop_reports: list[Any] = []
        listening = bool(self.events.listeners)  # once per batch: the hot path
        with self._lock:
            jobs = self._job_table.live
            for message in messages:
                kind = type(message)
                if kind is proto.BellHeard:
                    self._canceller.heard(proc, message.count)
                    continue
                if kind is proto.LoopBlocked or kind is proto.LoopResumed:
                    blocker = self._canceller.loop_report(proc, message)
                    who = f"job {blocker.id} ({blocker.handle.name or '-'})" if blocker else None
                    loop_reports.append((proc.pid, who, message))
                    if listening and kind is proto.LoopBlocked:
                        self.events.put(
                            LoopStalled(
                                pid=proc.pid,
                                at=time.time(),
                                job_id=None if blocker is None else blocker.id,
                                blocked_for=message.seconds,
                                stack=message.stack,
                            )
                        )
                    continue
                if kind is proto.SubmitChild:
                    error = self._submit_child(proc, message)
                    if error is not None:
                        refused.append((message.request, error))
                    continue
                if kind is proto.InitFailed:
                    broken.append(message)
                    continue
                if kind is proto.InitDone:
                    proc.initialized = True
                    self._init_deaths = 0
                    continue
                if kind is proto.CancelChild:
                    key = (proc.index, proc.pid or 0, message.request)
                    child = self._job_table.by_request(key)
                    if child is not None:
                        reason = CancelationReason.MANUAL
                        resolved += self._canceller.cancel([child], reason, message.message)[1]
                    continue
                job = jobs.get(message.job)
                if job is None:
                    continue
                if listening and job.seen_started is None:
                    # The first word of this attempt. A job that ends within one turn
                    # of its worker's loop sends no Started: subscribers hear it all
                    # the same.
                    job.seen_started = time.time()
                    self.events.put(
                        JobStarted(
                            **job_fields(job.handle),
                            at=job.seen_started,
                            worker_pid=proc.pid,
                            attempt=job.attempts,
                        )
                    )
                if kind is proto.Started:
                    job.handle._set_running()
                elif kind is proto.Progress:
                    progress.append((job.handle, message))
                    ancestor = job.parent
                    while ancestor is not None:
                        if ancestor.worker is not None and not ancestor.handle.done():
                            # Each ancestor job's own callbacks, in its worker, hear it
                            # too (bubbling, as in one process).
                            self._ws.post(
                                self._ws.procs[ancestor.worker],
                                proto.ChildProgress(
                                    ancestor.id, job.id, message.message, message.metadata
                                ),
                            )
                        ancestor = ancestor.parent
                elif kind is proto.Checkpoint:
                    job.checkpoint = message.partial
                else:
                    self._dispatcher.retire(job)
                    finished.append((job, message))
            for request, error in refused:
                self._ws.post(proc, proto.ChildRefused(request, dump_error(error)))
            if finished:
                resolved += self._after_finish(proc, finished)
            self._place_queued()
        for handle, message in progress:
            try:
                metadata = _decode_metadata(message.metadata)
                if self.events.listeners:
                    self.events.put(
                        JobProgress(
                            **job_fields(handle),
                            at=time.time(),
                            message=message.message,
                            progress=dict(metadata),
                        )
                    )
                handle._report(handle.id, message.message, metadata)
            except BaseException:
                # A progress callback that raised SystemExit, say: the report is lost,
                # the job and the pool go on.
                logger.exception("cancelpool: delivering progress of job %s failed", handle.id)
        if finished:
            self._resolver.finished_all(finished)
        self._resolver.cancelled_all(resolved)
        if finished and self._state == "closing":
            self._wake()
        if broken:
            self._initializer_failed(proc, broken[0])
        for report in loop_reports:
            log_report(*report)

    def _place_queued(self) -> None:
        """Send the queued jobs to workers with room, and the posts (lock held)."""
        self._absorb()
        if self._job_table.queued:
            self._dispatcher.drain_queue()
        self._ws.send_posts()

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
        self._break(
            f"the pool's initializer {label} failed in worker process {proc.pid} "
            f"({cause!r}); no job can run: fix the initializer and create a new pool",
            cause,
        )

    def _died_initializing(self, proc: WorkerProc, how: str) -> None:
        """Break the pool at the ``MAX_INIT_DEATHS``-th worker in a row that exited
        before its initializer returned (one that calls ``os._exit``, say: nothing to
        report), so that it does not respawn workers for ever."""
        if (
            self._settings.initializer is None
            or proc.initialized
            or proc.stop_sent
            or proc.forced_for is not None
        ):
            return
        self._init_deaths += 1
        if self._init_deaths < MAX_INIT_DEATHS:
            return
        label = self._settings.initializer_label
        why = (
            f"{self._init_deaths} worker processes in a row exited while running the "
            f"pool's initializer {label} (the last: pid {proc.pid}, {how}); no job can "
            "run: fix the initializer and create a new pool"
        )
        logger.error("cancelpool: %s", why)
        self._break(why, None)

    def _break(self, why: str, cause: BaseException | None) -> None:
        """The pool cannot run jobs: every job fails with :class:`PoolBroken` (``why``,
        ``cause`` as its ``__cause__``), the workers are killed, ``submit()`` raises."""
        with self._lock:
            if self._broken is not None:
                return
            self._broken = PoolBroken(why)
            self._broken.__cause__ = cause
            if self._state in ("running", "closing"):
                self._state = "broken"
            self._ws.kill_now()
        self._fail_everything(self._broken)

    def _after_finish(
        self, proc: WorkerProc, finished: list[tuple[JobRecord, Any]]
    ) -> list[JobRecord]:
        """Bookkeeping after jobs ended (lock held): cascades, recycling, children.

        Children never outlive their parent: the live ones are cancelled now.
        Returns the handles to resolve as cancelled (children that never started).
        """
        resolved: list[JobRecord] = []
        for job, message in finished:
            if self._job_table.has_children(job.id):
                resolved += self._canceller.cascade(job, _how_it_ended(message))
            self._resolver.tell_parent(job, message)
        self._ws.jobs_ended(proc, len(finished))
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
        trace: str | None = None,
    ) -> JobRecord:
        """Register a job and queue or dispatch it (lock held)."""
        if self._state != "running":
            raise self._closed_error()
        self._absorb()  # first in, first placed
        handle: JobHandle[Any] = JobHandle(
            self,
            self._job_table.next_id(),
            name,
            timeout,
            metadata,
            parent,
            retries=retries,
            cancel_grace=cancel_grace,
        )
        parent_job = None if parent is None else self._job_table.of(parent)
        job = JobRecord(handle, parent_job, fn, args, is_async, remote, trace)
        self._job_table.register(job)
        if self.events.listeners:
            self.events.put(
                JobSubmitted(
                    **job_fields(handle),
                    at=handle.submitted_at,
                    parent_id=None if parent is None else parent.id,
                )
            )
        if parent is not None:
            if parent_job is None or parent.cancel_reason is not None:
                # A child of a cancelled or finished job never starts.
                handle._mark_cancelled(
                    CancelationReason.PARENT, f"parent job {parent.id} has already ended"
                )
                self._dispatcher.retire(job)
                self._resolver.cancelled(job)
                return job
            self._job_table.adopt(parent_job, job)
        proc = self._ws.pick(not is_async)
        if proc is not None and not proc.inflight and not self._job_table.queued:
            # An idle worker: write now, for the lowest latency.
            self._dispatcher.place(proc, [job])
        else:
            # Busy workers: the supervisor thread sends queued jobs in batches, one
            # frame (one write, one wake-up of the worker) per batch.
            self._job_table.queued.append(job)
            if proc is not None:
                self._wake()
        return job

    def _submit_child(self, proc: WorkerProc, message: proto.SubmitChild) -> BaseException | None:
        parent = self._job_table.live.get(message.parent)
        if parent is None or parent.handle.cancel_reason is not None:
            return JobCancelled(
                CancelationReason.PARENT,
                f"job {message.parent} cannot start children: it is ending",
                job_id="",
            )
        if self._state != "running":
            return PoolClosed("the pool is shutting down; it starts no new jobs")
        job = self._new_job(
            message.fn,
            message.args,
            message.is_async,
            name=message.name,
            timeout=message.timeout,
            metadata=None,
            parent=parent.handle,
            retries=0,
            cancel_grace=None,
            remote=(proc.index, proc.pid or 0, message.request),
            trace=message.trace,
        )
        self._ws.post(proc, proto.ChildAccepted(message.request, job.id))
        return None

    def _fire_timers(self) -> None:
        with self._lock:
            resolved = self._canceller.fire(time.monotonic())
        self._resolver.cancelled_all(resolved)

    # -- deaths ----------------------------------------------------------------------------------
    def _worker_died(self, proc: WorkerProc) -> None:
        """A worker's sentinel says it exited: settle its jobs (see :mod:`._deaths`),
        replace it, and place the queued jobs."""
        assert proc.process is not None
        code = proc.exit_code()
        how = _exit_how(code)
        cancelled: list[tuple[JobRecord, bool]] = []  # with: forced by the kill
        lost: list[tuple[JobRecord, BaseException]] = []
        if self.events.listeners:
            self.events.put(
                WorkerDied(
                    pid=proc.pid, at=time.time(), index=proc.index, how=how, expected=proc.stop_sent
                )
            )
        with self._lock:
            self._absorb()
            proc.alive = False
            live = self._job_table.live
            jobs = [live[job_id] for job_id in proc.inflight if job_id in live]
            for job in jobs:
                job.handle._set_partial(load_partial(job.checkpoint))
            death = Death(
                pid=proc.pid,
                how=how,
                forced_for=proc.forced_for,
                blocker=self._canceller.blocker(proc),
                blocked_for=proc.loop.blocked_for(time.monotonic()),
                may_retry=self._state == "running",
            )
            for fate in judge(jobs, death):
                job = fate.job
                if fate.retry:
                    # Run it again from the start, on whichever worker is free first.
                    if job.slot is not None and self._table is not None:
                        self._table.release(job.slot)
                    job.requeue()
                    self._job_table.queued.appendleft(job)
                    if self.events.listeners:
                        self.events.put(
                            JobRetried(
                                **job_fields(job.handle),
                                at=time.time(),
                                attempt=job.attempts,
                                worker_pid=proc.pid,
                                why=f"its worker process (pid {proc.pid}) died ({how})",
                            )
                        )
                    continue
                self._dispatcher.retire(job)
                reason = job.handle.cancel_reason
                if fate.cancel_message is not None and reason is not None:
                    job.handle._mark_cancelled(reason, fate.cancel_message)
                if fate.error is not None:
                    lost.append((job, fate.error))
                else:
                    cancelled.append((job, fate.forced))
                # Children still queued are resolved here; the placed ones end in
                # their own workers.
                cancelled += [
                    (child, False) for child in self._canceller.cascade(job, fate.cascade)
                ]
            proc.inflight.clear()
            self._ws.bury(proc)
            lost += self._replace(proc)
        for job, forced in cancelled:
            self._resolver.cancelled(job, forced=forced)
        for job, error in lost:
            if job.trace is not None:  # its span (if it had started) died with the worker
                handle = job.handle
                _tracing.lost_span(
                    job.trace, job.attempts, handle.name, job.id, handle.started_at, error
                )
            self._resolver.failed(job, error)
        self._died_initializing(proc, how)
        if self._state == "closing":
            self._wake()
        if self._settings.spare_workers:
            # Last: starting a process takes milliseconds, and the jobs come first.
            with self._lock:
                self._ws.add_spares()

    def _replace(self, proc: WorkerProc) -> list[tuple[JobRecord, BaseException]]:
        """Put a worker in the dead one's place and place the queued jobs (lock held).

        Replaced while the pool runs, and while jobs still wait for a worker (during
        shutdown too: they must be able to finish): by a spare that is already
        running if there is one, else by a new process. Returns the queued jobs lost
        because no worker at all is left.
        """
        needed = self._state == "running" or bool(self._job_table.queued)
        if needed and self._ws.take_spare(proc.index) is None:
            try:
                self._ws.spawn(proc)
            except Exception:
                logger.exception("cancelpool: could not start a replacement worker")
        self._absorb()  # after making room: see _submit_unlocked
        if not self._job_table.queued:
            return []
        if any(p.alive for p in self._ws.procs):
            self._dispatcher.drain_queue()
            return []
        stranded = [job for job in self._job_table.queued if job.id in self._job_table.live]
        self._job_table.queued.clear()
        lost: list[tuple[JobRecord, BaseException]] = []
        for job in stranded:
            self._dispatcher.retire(job)
            error = PoolClosed(f"job {job.id} was lost: no worker process could be started")
            lost.append((job, error))
        return lost

    def _spare_died(self, spare: WorkerProc) -> None:
        """A spare exited (asked to at shutdown, or killed, or its initializer failed):
        forget it, start another unless the initializer is to blame.

        A spare runs the initializer as it starts, like any worker, and says how that
        went before its first job: read here, so that an initializer that fails (or
        exits) in spares only breaks the pool as it does in workers, instead of spares
        being started again for ever.
        """
        with self._lock:
            if spare not in self._ws.spares:
                return  # it replaced a worker meanwhile: its death is a worker's death
            self._ws.spares.remove(spare)
            said = self._ws.read(spare) if spare.alive else []
            code = spare.exit_code() if spare.process is not None else None
            if spare.process is not None and self.events.listeners:
                self.events.put(
                    WorkerDied(
                        pid=spare.pid,
                        at=time.time(),
                        index=-1,
                        how=_exit_how(code),
                        expected=spare.stop_sent,
                    )
                )
            self._ws.bury(spare)
        failed = None
        for message in said:
            if type(message) is proto.InitDone:
                spare.initialized = True
                self._init_deaths = 0
            elif type(message) is proto.InitFailed and failed is None:
                failed = message
        if failed is not None:
            self._initializer_failed(spare, failed)
            return
        self._died_initializing(spare, _exit_how(code))
        with self._lock:
            self._ws.add_spares()  # nothing once the pool is broken or closing
        if self._state == "closing":
            self._wake()

    def _fail_everything(self, why: PoolBroken) -> None:
        """Fail every job the pool holds with ``why`` (the supervisor cannot go on)."""
        with self._lock:
            self._absorb()
            jobs = list(self._job_table.live.values())
            for job in jobs:
                try:
                    self._dispatcher.retire(job)
                except BaseException:
                    logger.exception("cancelpool: could not retire job %s", job.id)
            self._job_table.queued.clear()
        for job in jobs:
            error = PoolBroken(f"job {job.id} was lost: {why}")
            error.__cause__ = why.__cause__
            self._resolver.broken(job, error)


def _exit_how(code: int | None) -> str:
    return f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"


def _how_it_ended(message: Any) -> str:
    if type(message) is proto.Cancelled:
        return f"was cancelled ({message.reason})"
    return "failed" if type(message) is proto.Failed else "completed"


def _decode_metadata(raw: Any) -> dict[str, Any]:
    value = msgspec.msgpack.decode(raw)
    return value if isinstance(value, dict) else {"value": value}

"""The worker processes as the supervisor sees them: start, feed, bury.

Each worker has an inbox pipe (supervisor -> worker), an outbox pipe (worker ->
supervisor), a doorbell (eventfd) and a process sentinel. Jobs are sent in batches, one
frame per write; what a full pipe cannot take is kept and flushed by the supervisor
thread when the pipe is writable again. A plain (sync) function gets a worker of its
own, so that killing that worker to force-stop the function hurts no other job.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from .._core._enums import OperationStatus
from .._core._exceptions import PoolBroken
from ..shm import Doorbell, TableFull, TokenTable
from . import _protocol as proto
from . import _worker_process
from ._handle import JobHandle

if TYPE_CHECKING:
    import multiprocessing.process

    from ._settings import PoolSettings

logger = logging.getLogger("cancelpool")

#: How long shutdown waits for a worker to exit after asking it to, before killing it.
WORKER_EXIT_GRACE = 5.0
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


class WorkerProc:
    """The supervisor's end of one worker process (one slot of the pool)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: multiprocessing.process.BaseProcess | None = None
        self.pid: int | None = None
        self.bell: Doorbell | None = None
        self.in_fd = -1
        self.out_fd = -1
        self.sentinel = -1
        self.conns: list[Connection] = []
        self.reader = proto.FrameReader()
        self.write_buffer = bytearray()
        self.outbox: list[Any] = []
        self.inflight: set[int] = set()
        self.completed = 0
        self.tasks = 0
        self.dispatched = 0  # jobs sent to this process (max_tasks_per_child counts them)
        self.memory_checked = 0.0
        self.alive = False
        self.stop_sent = False
        self.retiring = False
        self.exclusive = False
        self.forced_for: int | None = None
        # The watchdog's report while this worker's loop is blocked (None otherwise),
        # and when (monotonic) the block began.
        self.blocked: proto.LoopBlocked | None = None
        self.blocked_since = 0.0
        # When (monotonic) the supervisor last rang this worker's doorbell, and last
        # heard that its loop drained it; jobs whose forced stop waited for a verdict.
        self.rung_at = 0.0
        self.heard_at = 0.0
        self.verdicts: set[int] = set()

    def accepts(self, concurrency: int, max_tasks: int | None) -> bool:
        """Whether new jobs may be sent to this worker now."""
        return (
            self.alive
            and not self.stop_sent
            and not self.retiring
            and not self.exclusive
            and len(self.inflight) < concurrency
            and (max_tasks is None or self.dispatched < max_tasks)
        )


class WorkerSet:
    """The worker processes of a pool: starting, feeding and burying them.

    A mixin of :class:`CancelPool` (the state lives on the pool); every method that
    says "lock held" expects the pool's lock to be held by the caller.
    """

    _lock: threading.RLock
    _idle: threading.Condition
    _workers: list[WorkerProc]
    _spares: list[WorkerProc]
    _spare_count: int
    _spares_starting: int
    _warm_functions: deque[bytes]
    _jobs: dict[int, JobHandle[Any]]
    _queue: deque[JobHandle[Any]]
    _history: deque[JobHandle[Any]]
    _timers: list[tuple[float, int, int, int]]
    _counts: dict[OperationStatus, int]
    _table: TokenTable | None
    _state: str
    _wake_r: int
    _wake_w: int
    _wake_pending: bool
    _broken: PoolBroken | None
    _settings: PoolSettings
    _concurrency: int
    _use_uvloop: bool
    _mp: Any
    _cancel_grace: float
    _max_tasks: int | None
    _max_memory: int | None
    _children_of: dict[int, list[JobHandle[Any]]]
    _requests: dict[tuple[int, int, int], JobHandle[Any]]
    _ids: Iterator[int]
    _submitted: int

    # -- workers ------------------------------------------------------------------------------
    def _spawn(self, proc: WorkerProc) -> None:
        assert self._table is not None
        in_r, in_w = self._mp.Pipe(duplex=False)
        out_r, out_w = self._mp.Pipe(duplex=False)
        bell = Doorbell()
        settings = self._settings
        initializer = None
        if settings.initializer is not None:
            initializer = (settings.initializer, settings.initializer_is_async)
        process = self._mp.Process(
            target=_worker_process.main,
            args=(
                self._table,
                bell,
                in_r,
                out_w,
                os.getpid(),
                self._use_uvloop,
                initializer,
                settings.loop_block_threshold,
            ),
            name=f"cancelpool-worker-{proc.index}",
            daemon=True,
        )
        try:
            process.start()
        except BaseException:
            for conn in (in_r, in_w, out_r, out_w):
                conn.close()
            bell.close()
            raise
        in_r.close()
        out_w.close()
        proc.process = process
        proc.pid = process.pid
        proc.bell = bell
        proc.conns = [in_w, out_r]
        proc.in_fd = in_w.fileno()
        proc.out_fd = out_r.fileno()
        os.set_blocking(proc.in_fd, False)
        os.set_blocking(proc.out_fd, False)
        proc.sentinel = process.sentinel
        proc.reader = proto.FrameReader()
        proc.write_buffer = bytearray()
        proc.outbox = []
        proc.inflight = set()
        proc.tasks = 0
        proc.dispatched = 0
        proc.memory_checked = time.monotonic()
        proc.alive = True
        proc.stop_sent = False
        proc.retiring = False
        proc.exclusive = False
        proc.forced_for = None
        proc.blocked = None
        proc.rung_at = proc.heard_at = 0.0
        proc.verdicts = set()

    def _bury(self, proc: WorkerProc) -> None:
        """Release everything of a worker process that has exited."""
        proc.alive = False
        for conn in proc.conns:
            conn.close()
        proc.conns = []
        if proc.bell is not None:
            proc.bell.close()
            proc.bell = None
        if proc.process is not None:
            try:
                proc.process.close()
            except ValueError:  # still running: only after a failed kill
                pass
            proc.process = None

    # -- spare workers ----------------------------------------------------------------------
    def _add_spares(self) -> None:
        """Start spare workers up to ``spare_workers`` (lock held: the processes are
        started by a short-lived thread, never by the supervisor thread, whose jobs come
        first). A failure is logged: a missing spare only costs speed."""
        missing = self._spare_count - len(self._spares) - self._spares_starting
        if missing <= 0 or self._state != "running":
            return
        self._spares_starting += missing
        threading.Thread(
            target=self._start_spares, args=(missing,), name="cancelpool-spares", daemon=True
        ).start()

    def _start_spares(self, count: int) -> None:
        for _ in range(count):
            spare = WorkerProc(-1)
            try:
                self._spawn(spare)
            except Exception:
                logger.exception("cancelpool: could not start a spare worker")
                spare = None  # type: ignore[assignment]
            with self._lock:
                self._spares_starting -= 1
                if spare is None:
                    continue
                if self._state != "running":  # the pool stopped meanwhile
                    assert spare.process is not None
                    spare.process.kill()
                    spare.process.join()
                    self._bury(spare)
                    continue
                if self._warm_functions:
                    self._post(spare, proto.Warm(list(self._warm_functions)))
                self._spares.append(spare)
                self._send_posts()
                self._wake()  # the supervisor watches the new spare's sentinel

    def _take_spare(self, index: int) -> WorkerProc | None:
        """Put a spare worker in place ``index`` (lock held), if one is ready."""
        while self._spares:
            spare = self._spares.pop(0)
            if spare.alive and spare.process is not None and spare.process.exitcode is None:
                spare.index = index
                self._workers[index] = spare
                return spare
            self._bury(spare)
        return None

    def _warm_spares(self, function: bytes) -> None:
        """A job function seen for the first time (lock held): spares load it now."""
        self._warm_functions.append(function)
        for spare in self._spares:
            self._post(spare, proto.Warm([function]))
        self._send_posts()

    def _kill_all(self) -> None:
        for proc in self._spares:
            if proc.process is not None and proc.process.exitcode is None:
                proc.process.kill()
        for proc in self._spares:
            if proc.process is not None:
                proc.process.join(WORKER_EXIT_GRACE)
            self._bury(proc)
        self._spares.clear()
        for proc in self._workers:
            process = proc.process
            if process is None:
                continue
            if process.exitcode is None:
                process.kill()
            process.join(WORKER_EXIT_GRACE)
            self._bury(proc)

    # -- writing to workers ------------------------------------------------------------------
    def _write(self, proc: WorkerProc, data: bytes) -> None:
        """Send a frame (lock held); what the pipe cannot take now is kept for later."""
        if proc.write_buffer:
            proc.write_buffer += data
            return
        try:
            written = os.write(proc.in_fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return  # the worker is dead; its sentinel tells the supervisor thread
        if written < len(data):
            proc.write_buffer += data[written:]
            self._wake()

    def _post(self, proc: WorkerProc, message: Any) -> None:
        """Queue a message for a worker (lock held); sent by :meth:`_send_posts`."""
        proc.outbox.append(message)

    def _send_posts(self) -> None:
        for proc in (*self._workers, *self._spares):
            if proc.outbox:
                messages, proc.outbox = proc.outbox, []
                if proc.alive:
                    self._write(proc, proto.frame(messages))

    def _flush(self, proc: WorkerProc) -> None:
        try:
            written = os.write(proc.in_fd, proc.write_buffer)
        except BlockingIOError:
            return
        except OSError:
            proc.write_buffer.clear()
            return
        del proc.write_buffer[:written]

    # -- waking the supervisor thread ------------------------------------------------------
    def _wake(self) -> None:
        """Make the supervisor thread run its loop once more (from any thread)."""
        if self._wake_pending or self._wake_w < 0:
            return
        self._wake_pending = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        # Cleared only after the pipe is empty: a _wake() racing with us then either
        # left its byte in the pipe or will write a new one. Cleared before reading,
        # its byte could be read here while the flag stays set: no wake-up ever again.
        self._wake_pending = False

    def _add_timer(self, deadline: float, handle: JobHandle[Any], kind: int) -> None:
        """Arm a timer for the job's current attempt (lock held), waking the supervisor
        thread if it is the earliest."""
        earliest = self._timers[0][0] if self._timers else None
        heapq.heappush(self._timers, (deadline, handle.id, handle._attempts, kind))
        if earliest is None or deadline < earliest:
            self._wake()

    # -- dispatching ---------------------------------------------------------------------------
    def _pick_worker(self, exclusive: bool) -> WorkerProc | None:
        """The least loaded worker that can take a job (lock held).

        A plain function runs alone in its worker, so that killing the worker to stop
        it (forced stop) hits no other job: it needs an idle worker.
        """
        best: WorkerProc | None = None
        for proc in self._workers:
            if not proc.accepts(self._concurrency, self._max_tasks) or (
                exclusive and proc.inflight
            ):
                continue
            if best is None or len(proc.inflight) < len(best.inflight):
                best = proc
        return best

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
                self._queue.appendleft(handle)
                if not proc.inflight:
                    proc.exclusive = False
                continue
            handle._slot = slot
            handle._worker = proc.index
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
            self._write(proc, proto.frame(messages))

    def _dispatch_queue(self) -> None:
        """Move queued jobs to workers with room (lock held), one frame per worker.

        A plain function waiting for an idle worker does not hold up the async jobs
        behind it, unless it has waited longer than SYNC_PATIENCE: then nothing more is
        placed, so that the workers drain and it gets one.
        """
        batches: dict[int, list[JobHandle[Any]]] = {}
        queue = self._queue
        waiting: list[JobHandle[Any]] = []
        now = time.time()
        while queue:
            handle = queue.popleft()
            if handle._cancel_reason is not None or handle.id not in self._jobs:
                continue
            exclusive = not handle._is_async
            proc = self._pick_worker(exclusive)
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
            proc = self._workers[index]
            for handle in batch:
                proc.inflight.discard(handle.id)
                proc.dispatched -= 1  # _dispatch counts it for good
            self._dispatch(proc, batch)

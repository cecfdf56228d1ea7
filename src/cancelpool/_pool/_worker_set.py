"""The worker processes as the supervisor sees them: start, feed, bury.

Each worker has an inbox pipe (supervisor -> worker), an outbox pipe (worker ->
supervisor), a doorbell (eventfd) and a process sentinel. Jobs are sent in batches, one
frame per write; what a full pipe cannot take is kept and flushed by the supervisor
thread when the pipe is writable again. A plain (sync) function gets a worker of its
own, so that killing that worker to force-stop the function hurts no other job.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import msgspec

from .._events import WorkerRecycled, WorkerStarted
from ..shm import Doorbell, TokenTable
from . import _protocol as proto
from . import _worker_process
from ._loop_state import LoopState
from ._wakeup import Wakeup

if TYPE_CHECKING:
    import multiprocessing.process

    from .._events import EventHub
    from ._settings import PoolSettings

logger = logging.getLogger("cancelpool")

#: How long shutdown waits for a worker to exit after asking it to, before killing it.
WORKER_EXIT_GRACE = 5.0
#: Held around ``start()`` and ``close()`` of every worker process, and around the polls
#: of a dead one's exit status. ``start()`` polls every child process of the interpreter
#: (multiprocessing's ``_cleanup``); a poll racing a ``close()`` in another thread read
#: the closed sentinel's fd number after a new worker's pipe had reused it, and took
#: the pid the fork server sent for that worker, whose start then waited for ever
#: (the stress test, once in a few runs: the spares thread started a worker while the
#: supervisor thread buried one). Innermost: never held while taking the pool's lock.
PROCESS_LOCK = threading.RLock()
#: Seconds a death waits for the worker's exit status once its pidfd said it exited:
#: under forkserver the status comes from the fork server, a moment after the exit (or,
#: if the fork server itself is dead, never: the status is then unknown).
EXIT_STATUS_WAIT = 2.0
#: Minimum seconds between two RSS readings of one worker (``max_memory_per_worker``):
#: a reading costs tens of microseconds, so not after every job.
MEMORY_CHECK_INTERVAL = 0.2
#: Bytes asked for per read of a worker's outbox: a pipe's capacity. os.read allocates
#: the whole size before it shrinks the result, so a larger ask costs every small read.
_READ_SIZE = 1 << 16


class WorkerProc:
    """The supervisor's end of one worker process (one slot of the pool)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: multiprocessing.process.BaseProcess | None = None
        self.pid: int | None = None
        self.bell: Doorbell | None = None
        self.in_fd = -1
        self.out_fd = -1
        # What the supervisor polls for this process's exit: a pidfd of the process
        # itself where the system has them, else multiprocessing's sentinel. Under
        # forkserver the sentinel is a pipe from the fork server, which also becomes
        # readable when the fork server dies (a SIGTERM to the process group): every
        # live worker would have looked dead.
        self.sentinel = -1
        self.pidfd = -1
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
        #: It said its initializer returned (``InitDone``; only with an initializer).
        self.initialized = False
        self.stop_sent = False
        self.retiring = False
        self.exclusive = False
        self.forced_for: int | None = None
        # What the supervisor knows of this process's event loop (a new one per process).
        self.loop = LoopState()

    def exited(self) -> bool:
        """Whether the process has exited (its own pidfd says so; without one,
        multiprocessing's view)."""
        if self.pidfd >= 0:
            poller = select.poll()  # not select(): fds above 1024 are fine
            poller.register(self.pidfd, select.POLLIN)
            return bool(poller.poll(0))
        return self.process is None or self.process.exitcode is not None

    def kill(self) -> None:
        """SIGKILL the process, through its pidfd where it has one: multiprocessing's
        ``kill()`` sends nothing once it believes the process exited, which a dead fork
        server makes it believe of every live worker."""
        if self.pidfd >= 0:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it has exited already
            return
        if self.process is not None:
            self.process.kill()

    def wait_exited(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the process to exit, then let
        multiprocessing collect it."""
        if self.pidfd >= 0:
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            if not poller.poll(int(timeout * 1000)):
                return  # still running after the timeout: nothing to collect yet
        if self.process is not None:
            self.process.join(timeout if self.pidfd < 0 else EXIT_STATUS_WAIT)

    def exit_code(self) -> int | None:
        """The exit status of a process that has exited (None: not known)."""
        process = self.process
        if process is None:
            return None
        with PROCESS_LOCK:  # see PROCESS_LOCK: one poll at a time reads the status
            process.join(EXIT_STATUS_WAIT if self.pidfd >= 0 else 0)
            return process.exitcode

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

    Owned by the pool's :class:`Supervisor`, which passes in the pool's lock and
    wake-up pipe; every method that says "lock held" expects that lock to be held by
    the caller. ``procs`` are the workers in their places, ``spares`` the started
    processes waiting to replace one.
    """

    def __init__(
        self,
        settings: PoolSettings,
        lock: threading.RLock,
        wakeup: Wakeup,
        running: Callable[[], bool],
        events: EventHub,
    ) -> None:
        self._events = events
        self._settings = settings
        self._mp: Any = settings.context  # a multiprocessing context
        self._use_uvloop = settings.use_uvloop
        self._concurrency = settings.concurrency
        self._max_tasks = settings.max_tasks_per_child
        self._max_memory = settings.max_memory_per_worker
        self._lock = lock
        self._wakeup = wakeup
        self._running = running  # whether the pool still runs: spares start only then
        self.procs = [WorkerProc(index) for index in range(settings.workers)]
        self.spares: list[WorkerProc] = []
        self._spare_count = settings.spare_workers
        self._spares_starting = 0
        # Pickles of job functions seen so far, for spares to load in advance.
        self._warm_functions: deque[bytes] = deque(maxlen=64)
        self.table: TokenTable | None = None

    # -- workers ------------------------------------------------------------------------------
    def spawn(self, proc: WorkerProc) -> None:
        assert self.table is not None
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
                self.table,
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
            with PROCESS_LOCK:
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
        proc.pidfd = _open_pidfd(process.pid)
        proc.sentinel = proc.pidfd if proc.pidfd >= 0 else process.sentinel
        proc.reader = proto.FrameReader()
        proc.write_buffer = bytearray()
        proc.outbox = []
        proc.inflight = set()
        proc.tasks = 0
        proc.dispatched = 0
        proc.memory_checked = time.monotonic()
        proc.alive = True
        proc.initialized = False
        proc.stop_sent = False
        proc.retiring = False
        proc.exclusive = False
        proc.forced_for = None
        proc.loop = LoopState()
        if self._events.listeners:
            self._events.put(WorkerStarted(pid=proc.pid, at=time.time(), index=proc.index))

    def bury(self, proc: WorkerProc) -> None:
        """Release everything of a worker process that has exited."""
        proc.alive = False
        for conn in proc.conns:
            conn.close()
        proc.conns = []
        if proc.bell is not None:
            proc.bell.close()
            proc.bell = None
        if proc.pidfd >= 0:
            os.close(proc.pidfd)
            proc.pidfd = -1
        if proc.process is not None:
            try:
                with PROCESS_LOCK:
                    proc.process.close()
            except ValueError:  # still running: only after a failed kill
                pass
            proc.process = None

    # -- spare workers ----------------------------------------------------------------------
    def add_spares(self) -> None:
        """Start spare workers up to ``spare_workers`` (lock held: the processes are
        started by a short-lived thread, never by the supervisor thread, whose jobs come
        first). A failure is logged: a missing spare only costs speed."""
        missing = self._spare_count - len(self.spares) - self._spares_starting
        if missing <= 0 or not self._running():
            return
        self._spares_starting += missing
        threading.Thread(
            target=self._start_spares, args=(missing,), name="cancelpool-spares", daemon=True
        ).start()

    def _start_spares(self, count: int) -> None:
        for _ in range(count):
            spare = WorkerProc(-1)
            try:
                self.spawn(spare)
            except Exception:
                logger.exception("cancelpool: could not start a spare worker")
                spare = None  # type: ignore[assignment]
            with self._lock:
                self._spares_starting -= 1
                if spare is None:
                    continue
                if not self._running():  # the pool stopped meanwhile
                    assert spare.process is not None
                    spare.kill()
                    spare.wait_exited(WORKER_EXIT_GRACE)
                    self.bury(spare)
                    continue
                if self._warm_functions:
                    self.post(spare, proto.Warm(list(self._warm_functions)))
                self.spares.append(spare)
                self.send_posts()
                self._wake()  # the supervisor watches the new spare's sentinel

    def take_spare(self, index: int) -> WorkerProc | None:
        """Put a spare worker in place ``index`` (lock held), if one is ready."""
        while self.spares:
            spare = self.spares.pop(0)
            if spare.alive and spare.process is not None and not spare.exited():
                spare.index = index
                self.procs[index] = spare
                return spare
            self.bury(spare)
        return None

    def warm(self, function: bytes) -> None:
        """A job function seen for the first time (lock held): spares load it now."""
        self._warm_functions.append(function)
        for spare in self.spares:
            self.post(spare, proto.Warm([function]))
        self.send_posts()

    def kill_now(self, *, forced: bool = False) -> None:
        """Kill every live worker and spare (lock held), without waiting; their deaths
        are handled as they come. ``forced``: as a forced stop that blames no job
        (``terminate()``)."""
        for proc in (*self.procs, *self.spares):
            if proc.alive and proc.process is not None and not proc.exited():
                if forced:
                    proc.forced_for = proc.forced_for or 0
                proc.kill()

    def kill_all(self) -> None:
        for proc in self.spares:
            if proc.process is not None and not proc.exited():
                proc.kill()
        for proc in self.spares:
            if proc.process is not None:
                proc.wait_exited(WORKER_EXIT_GRACE)
            self.bury(proc)
        self.spares.clear()
        for proc in self.procs:
            if proc.process is None:
                continue
            if not proc.exited():
                proc.kill()
            proc.wait_exited(WORKER_EXIT_GRACE)
            self.bury(proc)

    # -- reading from workers ----------------------------------------------------------------
    def read(self, proc: WorkerProc) -> list[Any]:
        """The messages a worker has written since the last read (without blocking).

        A worker that writes nonsense cannot be trusted with its jobs: it is killed,
        and its death is handled like a crash (its jobs fail, or run again).
        """
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
        messages: list[Any] = []
        if not chunks:
            return messages
        try:
            for payload in proc.reader.feed(b"".join(chunks)):
                messages.extend(proto.from_worker_decoder.decode(payload))
        except (ValueError, msgspec.DecodeError):
            logger.exception("cancelpool: garbled data from worker %s; killing it", proc.pid)
            proc.kill()
        return messages

    def jobs_ended(self, proc: WorkerProc, count: int) -> None:
        """``count`` jobs of ``proc`` ended (lock held): a worker past
        ``max_tasks_per_child`` or ``max_memory_per_worker`` is retired, asked to stop
        once its last job ends (its death then starts a replacement)."""
        proc.tasks += count
        if proc.retiring:
            pass
        elif self._max_tasks is not None and proc.tasks >= self._max_tasks:
            proc.retiring = True
            self._recycled(proc, "max_tasks_per_child")
        elif self._max_memory is not None and proc.pid is not None:
            now = time.monotonic()
            if now - proc.memory_checked >= MEMORY_CHECK_INTERVAL:
                proc.memory_checked = now
                if _rss(proc.pid) > self._max_memory:
                    proc.retiring = True
                    self._recycled(proc, "max_memory_per_worker")
        if proc.retiring and not proc.inflight and not proc.stop_sent:
            proc.stop_sent = True
            self.post(proc, proto.Stop())

    def _recycled(self, proc: WorkerProc, why: Any) -> None:
        if self._events.listeners:
            self._events.put(
                WorkerRecycled(pid=proc.pid, at=time.time(), index=proc.index, why=why)
            )

    # -- writing to workers ------------------------------------------------------------------
    def write(self, proc: WorkerProc, data: bytes) -> None:
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

    def post(self, proc: WorkerProc, message: Any) -> None:
        """Queue a message for a worker (lock held); sent by :meth:`_send_posts`."""
        proc.outbox.append(message)

    def send_posts(self) -> None:
        for proc in (*self.procs, *self.spares):
            if proc.outbox:
                messages, proc.outbox = proc.outbox, []
                if proc.alive:
                    self.write(proc, proto.frame(messages))

    def flush(self, proc: WorkerProc) -> None:
        try:
            written = os.write(proc.in_fd, proc.write_buffer)
        except BlockingIOError:
            return
        except OSError:
            proc.write_buffer.clear()
            return
        del proc.write_buffer[:written]

    def _wake(self) -> None:
        """Make the supervisor thread run its loop once more (lock held)."""
        self._wakeup.wake()

    # -- dispatching ---------------------------------------------------------------------------
    def pick(self, exclusive: bool) -> WorkerProc | None:
        """The least loaded worker that can take a job (lock held).

        A plain function runs alone in its worker, so that killing the worker to stop
        it (forced stop) hits no other job: it needs an idle worker.
        """
        best: WorkerProc | None = None
        for proc in self.procs:
            if not proc.accepts(self._concurrency, self._max_tasks) or (
                exclusive and proc.inflight
            ):
                continue
            if best is None or len(proc.inflight) < len(best.inflight):
                best = proc
        return best


def _rss(pid: int) -> int:
    import psutil

    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def _open_pidfd(pid: int | None) -> int:
    """A pidfd of a worker just started, or -1 (no pidfd on this system, or it is gone:
    the sentinel reports that)."""
    if pid is None:
        return -1
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1

"""``cancelpool serve``: drain the queue into a ``CancelPool``.

::

    cancelpool submit/cancel, Queue      this server (main thread)              CancelPool
    ------------------------------      --------------------------------       ----------
    commit to SQLite, then write a  ->  wake-up FIFO (0600, private dir)
    byte to each live server's FIFO     select(): FIFO, poll timer
                                        claim queued jobs (BEGIN IMMEDIATE) ->  submit()
                                        cancel requests in the db           ->  handle.cancel()
                                                                                (shm token)
                                        progress, outcomes  <- deque + FIFO <-  callbacks in
                                        committed in batches                    supervisor
    SIGTERM / SIGINT  -> signal wake-up fd: stop claiming, cancel running jobs, keep their
                         partial results, requeue (or cancel) them, shut the pool down
                         (stubborn jobs force-stopped after --cancel-grace), exit 0 once
                         every worker process is gone.

Only the main thread touches the database; the pool's supervisor thread hands
progress and outcomes over through a deque and a byte in the FIFO.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import stat
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from .. import _tracing
from .._core._exceptions import JobCancelled, PoolBroken
from .._events import EventCallback, QueueDepth
from .._pool._handle import JobHandle
from .._pool._pool import CancelPool
from .._pool._settings import DEFAULT_CANCEL_GRACE
from ._exceptions import QueueFileError, QueueUnavailable
from ._files import check_control_dir
from ._liveness import process_start_time, wake_path
from ._model import (
    FORCED_STOP,
    MAX_RESULT_BYTES,
    check_allow_pattern,
    decode_json,
    encode_json_lossy,
)
from ._plain import is_plain_task, run_plain_task
from ._protocol import Store, open_store
from ._records import Outcome
from ._sd_notify import Notifier
from ._store import ServerInfo
from ._task import REFUSAL, run_task

#: How often the server looks at the database when nobody wakes it: the safety net for
#: a lost wake-up (a client killed between its commit and its poke) and the pace at
#: which it notices jobs submitted by hand with sqlite3. Shorter costs idle CPU.
POLL_INTERVAL = 0.5
#: PostgreSQL: after a claim, the next one waits at least this long (seconds), so the
#: jobs submitted meanwhile are claimed together and their outcomes written together:
#: one claim per batch instead of one per job (and per node: every submit's NOTIFY
#: wakes every node). Only a node that claimed this recently waits; a job submitted to
#: quiet nodes is claimed at once. Longer makes bigger batches under load and adds up
#: to this much to a job's start; cancels, outcomes and progress never wait for it.
CLAIM_COALESCE = 0.002
#: Progress reports are committed at most this often (the latest one per job wins):
#: ``watch`` redraws at about this rate; shorter means more write transactions.
PROGRESS_INTERVAL = 0.1
#: How often dead servers are looked for (their running jobs requeued) and this
#: server's heartbeat is written.
HOUSEKEEPING_INTERVAL = 2.0
#: Default jobs one server runs at once per worker process: claimed jobs are
#: ``running`` in the database, so more means other servers find less to do.
DEFAULT_JOBS_PER_WORKER = 16
#: While the database is unreachable, the pause between tries.
DB_RETRY_INTERVAL = 0.5
#: Seconds without the database after which a node's lease must have expired
#: (PostgreSQL: LEASE_SECONDS), so it stops its own copies of its jobs.
LEASE_GIVE_UP = 10.0


@dataclass(frozen=True)
class ServerOptions:
    """Settings of one ``cancelpool serve``."""

    allow: tuple[str, ...]
    workers: int = 2
    concurrency: int | None = None
    max_attempts: int = 3
    on_shutdown: str = "requeue"  # or "cancel"
    grace: float = 10.0
    #: Seconds a cancelled job may ignore it before its worker is killed (forced stop).
    cancel_grace: float = DEFAULT_CANCEL_GRACE
    #: Run once in each worker before its first job (``--worker-init``).
    worker_init: Callable[[], object] | None = None


class Server:
    """One queue server. :meth:`run` blocks until SIGTERM/SIGINT (or :meth:`stop`)."""

    def __init__(
        self,
        db: str | os.PathLike[str],
        options: ServerOptions,
        logger: logging.Logger | None = None,
        *,
        pg_schema: str | None = None,
        node_name: str | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        if not options.allow:
            raise ValueError("a server needs at least one --allow pattern, e.g. 'myapp.tasks:*'")
        for pattern in options.allow:
            check_allow_pattern(pattern)
        if options.on_shutdown not in ("requeue", "cancel"):
            raise ValueError("on_shutdown must be 'requeue' or 'cancel'")
        self.options = options
        self.logger = logger if logger is not None else logging.getLogger("cancelpool.serve")
        self.id = uuid.uuid4().hex[:12]
        self.node_name = node_name
        #: systemd's notify socket (``Type=notify``): READY=1 once serving.
        self.notifier = notifier
        self.store: Store = open_store(
            db, pg_schema=pg_schema, application_name=f"cancelpool-serve-{self.id}", node=True
        )
        self.concurrency = options.concurrency or options.workers * DEFAULT_JOBS_PER_WORKER
        self._running: dict[int, JobHandle[Any]] = {}
        self._names: dict[int, str | None] = {}  # the queue's name of each running job
        #: Why the pool cannot run jobs (a failing --worker-init), once it broke, and
        #: the claimed jobs it refused since: both go back to the queue.
        self._pool_broken: str | None = None
        self._unplaced: list[int] = []
        self._cancel_sent: set[int] = set()
        self._done: deque[tuple[int, JobHandle[Any]]] = deque()
        self._progress: dict[int, tuple[str, dict[str, Any]]] = {}
        self._progress_lock = threading.Lock()
        self._plain: dict[str, bool] = {}  # task -> is a plain function (looked at once)
        self._stop_signal: str | None = None
        self._signals = 0
        self.wake_path: Path | None = None
        if self.store.kind == "sqlite":
            local: Any = self.store
            check_control_dir(local.path, create=True)
            self.wake_path = wake_path(local.path, self.id)
        self._stop_listener: Callable[[], None] | None = None
        self._db_down_since: float | None = None
        # When claims follow hints (PostgreSQL): a NOTIFY said jobs were submitted (or
        # requeued); the last claim filled the free slots (more may wait); when it ran.
        self._hinted_claims = self.store.kind == "postgresql"
        self._work_hint = True
        self._claim_more = True
        self._last_claim = -math.inf
        self._rfd = self._wfd = -1
        self.stats = {"completed": 0, "failed": 0, "cancelled": 0, "released": 0}
        # Event subscribers, and the functions that end their pool subscriptions.
        self._subscribers: dict[object, EventCallback] = {}
        self._pool_subscriptions: dict[object, Callable[[], None]] = {}

    def _log(
        self,
        message: str,
        level: int = logging.INFO,
        *,
        job: int | None = None,
        name: str | None = None,
    ) -> None:
        """One record of ``cancelpool.serve``, with this node and the job as fields."""
        self.logger.log(
            level,
            "%s",
            message,
            extra={"node": self.id, "node_label": self.node_name, "job": job, "job_name": name},
        )

    def _notify(self, state: str, status: str) -> None:
        """Tell systemd (if it is watching) that the node is ready or stopping: after
        the node is registered and its pool started, so a unit ordered after this one
        finds a queue that is served."""
        if self.notifier is None:
            return
        send = self.notifier.ready if state == "ready" else self.notifier.stopping
        failed = send(status)
        if failed is not None:
            self._log(failed, logging.WARNING)

    # -- wake-ups ---------------------------------------------------------------------------
    def _open_fifo(self) -> None:
        if self.wake_path is None:
            # PostgreSQL: a private pipe carries wake-ups from the NOTIFY listener
            # thread, signal handlers and the pool's thread.
            self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            listen = getattr(self.store, "listen")  # noqa: B009 - PostgreSQL store only
            self._stop_listener = listen(self.id, self._poke, self._on_work)
            return
        # mkfifo fails if anything exists at the path; the mode is then checked on the
        # descriptor we read from, so what clients see as our FIFO is the one we made.
        os.mkfifo(self.wake_path, 0o600)
        flags = os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
        self._rfd = os.open(self.wake_path, os.O_RDONLY | flags)
        info = os.fstat(self._rfd)
        if not stat.S_ISFIFO(info.st_mode) or info.st_uid != os.getuid():
            raise QueueFileError(f"{self.wake_path} was replaced while the server started")
        os.fchmod(self._rfd, 0o600)  # mkfifo's mode passed through the umask
        # Our own writer keeps the FIFO from reporting EOF when clients close theirs,
        # and carries wake-ups from signal handlers and the pool's thread.
        self._wfd = os.open(self.wake_path, os.O_WRONLY | flags)

    def _close_fifo(self) -> None:
        if self._stop_listener is not None:
            self._stop_listener()
            self._stop_listener = None
        for fd in (self._rfd, self._wfd):
            if fd >= 0:
                os.close(fd)
        self._rfd = self._wfd = -1
        if self.wake_path is None:
            return
        try:
            os.unlink(self.wake_path)
        except FileNotFoundError:
            pass

    def _on_work(self) -> None:
        """A NOTIFY said jobs may be waiting (listener thread): claim when due. Only the
        first hint since the last claim wakes the loop; it then waits for the claim's
        time by itself, so a burst of submits costs one turn, not one per NOTIFY."""
        if not self._work_hint:
            self._work_hint = True
            self._poke()

    def _poke(self) -> None:
        try:
            os.write(self._wfd, b"w")
        except OSError:
            pass  # full: a wake-up is pending anyway

    def _drain(self) -> None:
        try:
            while os.read(self._rfd, 65536):
                pass
        except BlockingIOError:
            pass

    def _wait(self, timeout: float) -> None:
        import select

        select.select([self._rfd], [], [], max(0.0, timeout))
        self._drain()

    def stop(self, reason: str = "stop") -> None:
        """Ask :meth:`run` to shut down (thread-safe)."""
        self._stop_signal = reason
        self._poke()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:  # main thread
        self._signals += 1
        self._stop_signal = signal.Signals(signum).name

    # -- pool callbacks (supervisor thread) --------------------------------------------------
    def _on_done_for(self, job_id: int) -> Callable[[Any], None]:
        def on_done(handle: Any) -> None:
            self._done.append((job_id, handle))
            self._poke()

        return on_done

    def _on_progress_for(
        self, job_id: int, pool_id: int
    ) -> Callable[[int, str, dict[str, Any]], None]:
        def on_progress(reporter: int, message: str, metadata: dict[str, Any]) -> None:
            if reporter != pool_id:
                return  # a child job's report, bubbling up: the child's row shows it
            with self._progress_lock:
                first = not self._progress
                self._progress[job_id] = (message, metadata)
            if first:
                self._poke()

        return on_progress

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Hear this server's lifecycle events: its pool's (see
        :meth:`CancelPool.subscribe`; on the pool's supervisor thread, their
        ``metadata`` holds the job's queue id as ``queue_id``) and, every housekeeping
        round, :class:`cancelpool.QueueDepth` (on the server's main thread). Call it
        before :meth:`run`. Returns the function that ends the subscription."""
        if not callable(callback):
            raise TypeError(f"subscribe() wants a callable, not {callback!r}")
        key = object()
        self._subscribers[key] = callback

        def unsubscribe() -> None:
            self._subscribers.pop(key, None)
            stop = self._pool_subscriptions.pop(key, None)
            if stop is not None:
                stop()

        return unsubscribe

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until a signal or :meth:`stop`; returns the exit status (0; 1 when the
        pool broke, e.g. a --worker-init that fails: its jobs were requeued)."""
        options = self.options
        recovered = self.store.recover(None, options.max_attempts)
        if any(recovered.values()):
            self._log(
                "recovered jobs of dead servers: "
                + ", ".join(f"{n} {status}" for status, n in recovered.items() if n)
            )
        self._open_fifo()
        old_handlers: dict[int, Any] = {}
        old_wakeup = -1
        in_main = threading.current_thread() is threading.main_thread()
        try:
            if in_main:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    old_handlers[sig] = signal.signal(sig, self._on_signal)
                old_wakeup = signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
            pool = CancelPool(
                options.workers,
                cancel_grace=options.cancel_grace,
                initializer=options.worker_init,
            )
            for key, callback in self._subscribers.items():
                self._pool_subscriptions[key] = pool.subscribe(callback)
            with pool:
                now = time.time()
                self.store.register_server(
                    ServerInfo(
                        id=self.id,
                        pid=os.getpid(),
                        proc_start=process_start_time(os.getpid()),
                        wake_path=str(self.wake_path or ""),
                        allow=options.allow,
                        workers=options.workers,
                        started_at=now,
                        heartbeat=now,
                        stopped_at=None,
                        stop_reason=None,
                        host=socket.gethostname(),
                        label=self.node_name,
                    )
                )
                self._log(
                    f"serving {self.store.display} (server {self.id}, pid {os.getpid()}, "
                    + (f"node {self.node_name}, " if self.node_name else "")
                    + f"{options.workers} worker{'' if options.workers == 1 else 's'}, "
                    + f"allow {' '.join(options.allow)})"
                )
                self._notify("ready", f"serving {self.store.display} as node {self.id}")
                try:
                    self._serve(pool)
                finally:
                    self._shutdown(pool)
        finally:
            if in_main:
                signal.set_wakeup_fd(old_wakeup)
                for signum, handler in old_handlers.items():
                    signal.signal(signum, handler)
            self._close_fifo()
            self.store.close()
        return 1 if self._pool_broken is not None else 0

    def _serve(self, pool: CancelPool) -> None:
        last_progress = 0.0
        next_housekeeping = time.monotonic() + HOUSEKEEPING_INTERVAL
        while self._stop_signal is None:
            try:
                self._record_done()
                self._apply_cancels()
                self._claim(pool)
                if self._db_down_since is not None:
                    self._log("the queue database is back; claiming again")
                    self._db_down_since = None
                    self._work_hint = True
                    next_housekeeping = time.monotonic()
                now = time.monotonic()
                if self._progress and now - last_progress >= PROGRESS_INTERVAL:
                    self._flush_progress()
                    last_progress = now
                if now >= next_housekeeping:
                    self._housekeeping()
                    next_housekeeping = now + HOUSEKEEPING_INTERVAL
            except QueueUnavailable as exc:  # heartbeat and progress too: never crash
                self._database_down(exc)
                self._wait(DB_RETRY_INTERVAL)
                continue
            timeout = min(POLL_INTERVAL, next_housekeeping - now)
            if self._progress:
                timeout = min(timeout, last_progress + PROGRESS_INTERVAL - now)
            if self._hinted_claims and len(self._running) < self.concurrency:
                # The poll fallback, or a claim held back to coalesce (CLAIM_COALESCE).
                due = self._last_claim + POLL_INTERVAL
                if self._work_hint or self._claim_more:
                    due = min(due, self._last_claim + CLAIM_COALESCE)
                timeout = min(timeout, due - now)
            if self._done or self._stop_signal is not None:
                continue
            self._wait(timeout)

    def _database_down(self, exc: QueueUnavailable) -> None:
        # No claims while the database is away (the loop retries); once our lease
        # must have expired, other nodes own our jobs: stop our copies of them.
        now = time.monotonic()
        if self._db_down_since is None:
            self._db_down_since = now
            self._log(f"{exc}; not claiming until it is back", logging.WARNING)
        elif now - self._db_down_since >= LEASE_GIVE_UP and self._running:
            self._give_up_jobs("the node lost the queue database, so its lease expired")

    def _give_up_jobs(self, why: str) -> None:
        for job_id, handle in list(self._running.items()):
            if job_id not in self._cancel_sent:
                self._cancel_sent.add(job_id)
                handle.cancel(why)
        self._log(
            f"{why}: cancelled {len(self._running)} local job(s); their rows are not ours",
            logging.WARNING,
        )

    def _housekeeping(self) -> None:
        if not self.store.heartbeat(self.id):
            if self._running:
                self._give_up_jobs("the node's lease was lost (another node recovered its jobs)")
            # heartbeat() revived the row: the node keeps serving, with none of its
            # old claims (they were requeued or settled by the node that recovered them).
            self._log("lease lost; this node stopped its jobs and keeps serving", logging.WARNING)
        elif self._running:
            # A claim that another node took over (our lease expired in a stall): stop
            # our copy, whose finishing write the fence would drop anyway.
            lost = set(self._running) - self.store.owned(self.id) - self._cancel_sent
            for job_id in lost:
                self._cancel_sent.add(job_id)
                self._running[job_id].cancel("this node lost its claim on the job")
        if self._subscribers:
            depth = QueueDepth(at=time.time(), counts=dict(self.store.counts()))
            for callback in list(self._subscribers.values()):
                try:
                    callback(depth)
                except Exception:
                    self.logger.exception("an event subscriber failed on QueueDepth")
        recovered = self.store.recover(self.id, self.options.max_attempts)
        if any(recovered.values()):
            self._log(
                "recovered jobs of a dead server: "
                + ", ".join(f"{n} {status}" for status, n in recovered.items() if n)
            )
            self._work_hint = True
            self._poke()

    def _claim_due(self, now: float) -> bool:
        """SQLite: every turn (a claim is a local transaction, and a FIFO byte does not
        say why it came). PostgreSQL: when a NOTIFY announced jobs or the last claim
        filled every free slot, at most once per CLAIM_COALESCE; and after
        POLL_INTERVAL without a claim in any case (a lost NOTIFY, a job inserted by
        hand)."""
        if not self._hinted_claims:
            return True
        if now - self._last_claim >= POLL_INTERVAL:
            return True
        return (self._work_hint or self._claim_more) and (now - self._last_claim >= CLAIM_COALESCE)

    def _claim(self, pool: CancelPool) -> None:
        room = self.concurrency - len(self._running)
        if room <= 0:
            return
        now = time.monotonic()
        if not self._claim_due(now):
            return
        self._last_claim = now
        self._work_hint = False  # before the query: a NOTIFY during it stays
        try:
            claimed, refused = self.store.claim(self.id, room, self.options.allow)
        except BaseException:
            self._work_hint = True  # not answered: claim again once the database is back
            raise
        self._claim_more = len(claimed) + refused >= room
        if refused:
            self.stats["failed"] += refused
        for job in claimed:
            parent = self._running.get(job.parent) if job.parent is not None else None
            plain = self._plain.get(job.task)
            if plain is None:
                plain = self._plain[job.task] = is_plain_task(job.task, self.options.allow)
            try:
                # The submitter's context current around submit(): the pool carries it
                # to the worker. Text from the row: a malformed one is ignored.
                with _tracing.activate(job.trace_context):
                    handle = pool.submit(
                        run_plain_task if plain else run_task,
                        job.task,
                        decode_json(job.args),
                        decode_json(job.kwargs),
                        self.options.allow,
                        name=job.name or job.task,
                        timeout=job.timeout,
                        parent=parent,
                        metadata={"queue_id": job.id},
                    )
            except PoolBroken as exc:  # no job of this server can run: back to the queue
                if self._pool_broken is None:
                    self._pool_broken = str(exc)
                self._unplaced.append(job.id)
                continue
            except Exception as exc:
                self.store.record_outcomes(
                    self.id,
                    [Outcome(job.id, "failed", error=f"{type(exc).__name__}: {exc}")],
                )
                continue
            self._running[job.id] = handle
            self._names[job.id] = job.name
            self._log(
                f"job {job.id} ({job.name or '-'}) started: {job.task}",
                logging.DEBUG,
                job=job.id,
                name=job.name,
            )
            handle.on_progress(self._on_progress_for(job.id, handle.id))
            handle.add_done_callback(self._on_done_for(job.id))

    def _apply_cancels(self) -> None:
        if not self._running:
            return
        for job_id, message in self.store.cancel_requests(self.id):
            handle = self._running.get(job_id)
            if handle is not None and job_id not in self._cancel_sent:
                self._cancel_sent.add(job_id)
                handle.cancel(message)

    def _flush_progress(self) -> None:
        with self._progress_lock:
            updates, self._progress = self._progress, {}
        rows: dict[int, tuple[str, str, str | None]] = {}
        for job_id, (message, metadata) in updates.items():
            partial = None
            if isinstance(metadata, dict) and "partial_result" in metadata:
                partial = encode_json_lossy(metadata["partial_result"], MAX_RESULT_BYTES)
            rows[job_id] = (message, encode_json_lossy(metadata, MAX_RESULT_BYTES), partial)
        if rows:
            self.store.save_progress(rows)

    def _record_done(self, *, releasing: bool = False) -> None:
        if not self._done and not self._unplaced:
            return
        if self._progress:
            self._flush_progress()  # a job's last report lands before its outcome
        outcomes: list[Outcome] = []
        released: list[tuple[int, str | None]] = []
        broken: list[tuple[int, str | None]] = [(job_id, None) for job_id in self._unplaced]
        self._unplaced.clear()
        while self._done:
            job_id, handle = self._done.popleft()
            self._running.pop(job_id, None)
            self._cancel_sent.discard(job_id)
            error = handle.exception(timeout=0)
            if isinstance(error, PoolBroken):
                # Not the job's failure (its initializer, say, fails in every worker):
                # the job goes back to the queue for a server that can run it.
                self._names.pop(job_id, None)
                broken.append((job_id, None))
                if self._pool_broken is None:
                    self._pool_broken = str(error)
                continue
            outcome = _outcome(job_id, handle, self.options.cancel_grace)
            name = self._names.pop(job_id, None)  # the queue's name (the pool's: or task)
            if outcome.forced:
                self._log(
                    f"job {job_id} ({name or '-'}) {outcome.error}",
                    logging.WARNING,
                    job=job_id,
                    name=name,
                )
            else:
                self._log(
                    f"job {job_id} ({name or '-'}) {outcome.status}",
                    logging.DEBUG,
                    job=job_id,
                    name=name,
                )
            if releasing and outcome.status == "cancelled":
                released.append((job_id, outcome.partial_result))
                continue
            self.stats[outcome.status] += 1
            outcomes.append(outcome)
        if outcomes:
            cascade = self.store.record_outcomes(self.id, outcomes)
            if cascade:
                result = self.store.cascade_cancel(cascade)
                if result.owners:
                    poke_servers(self.store, result.owners, skip=self.id)
                if self.id in result.owners:
                    self._apply_cancels()
        if released:
            self._release(released)
        if broken:
            why = f"its server's pool broke ({self._pool_broken})"
            self.store.release(self.id, broken, requeue=True, message=why)
            self.stats["released"] += len(broken)
            if self._stop_signal is None:
                self._log(
                    f"the pool cannot run jobs: {self._pool_broken}; stopping, its jobs stay "
                    "queued",
                    logging.ERROR,
                )
                self.stop("the pool broke")

    def _release(self, jobs: Sequence[tuple[int, str | None]]) -> None:
        requeue = self.options.on_shutdown == "requeue"
        self.store.release(
            self.id,
            jobs,
            requeue=requeue,
            message=f"the server stopped ({self._stop_signal})",
        )
        self.stats["released"] += len(jobs)

    def _shutdown(self, pool: CancelPool) -> None:
        why = self._stop_signal or "error"
        self._notify("stopping", f"stopping ({why}): {self.options.on_shutdown} running jobs")
        running = list(self._running.items())
        if running:
            self._log(
                f"{why}: stopping; cancelling {len(running)} running job(s), then "
                + (
                    "requeueing them"
                    if self.options.on_shutdown == "requeue"
                    else "marking them cancelled"
                )
            )
        for _job_id, handle in running:
            handle.cancel(f"the server is shutting down ({why})")
        deadline = time.monotonic() + self.options.grace
        signals_seen = self._signals
        while self._running and time.monotonic() < deadline and self._signals == signals_seen:
            self._record_done(releasing=True)
            if self._running:
                self._wait(min(0.05, deadline - time.monotonic()))
        self._record_done(releasing=True)
        if self._running:
            self._log(
                f"{len(self._running)} job(s) still running after --grace; they are "
                f"force-stopped once they ignored their cancel for --cancel-grace "
                f"({self.options.cancel_grace:g} s)",
                logging.WARNING,
            )
        # Every handle resolves here (stubborn jobs as forced stops, their workers
        # killed by the pool), and every worker process has exited when it returns.
        pool.shutdown(wait=True, cancel_pending=True, cancel_running=True)
        self._record_done(releasing=True)
        if self._progress:
            self._flush_progress()
        stuck = list(self._running)
        if stuck:  # no handle left unresolved by the pool: a safety net only
            self._release([(job_id, None) for job_id in stuck])
            self._running.clear()
        try:
            self.store.unregister_server(self.id, why)
        except QueueUnavailable as exc:
            self._log(f"{exc}; its lease expires by itself")
        s = self.stats
        self._log(
            f"stopped: {s['completed']} completed, {s['failed']} failed, "
            f"{s['cancelled']} cancelled, {s['released']} "
            + ("requeued" if self.options.on_shutdown == "requeue" else "cancelled at shutdown")
        )


def _outcome(job_id: int, handle: JobHandle[Any], cancel_grace: float) -> Outcome:
    exc = handle.exception(timeout=0)
    ran_for = _ran_for(handle)
    if exc is None:
        return Outcome(job_id, "completed", result=handle.result(timeout=0), ran_for=ran_for)
    if isinstance(exc, JobCancelled):
        partial = exc.partial_result
        return Outcome(
            job_id,
            "cancelled",
            partial_result=None if partial is None else encode_json_lossy(partial),
            cancel_reason=exc.reason.value,
            cancel_message=exc.message,
            forced=exc.forced,
            error=(
                f"{FORCED_STOP}it ignored its cancellation for {cancel_grace:g} s, so its "
                "worker process was killed; the partial result is its last checkpoint"
            )
            if exc.forced
            else None,
            ran_for=ran_for,
        )
    # The worker's traceback, but not of the queue's own refusal (only its frames).
    remote = None if getattr(exc, REFUSAL, False) else getattr(exc.__cause__, "tb", None)
    partial = getattr(exc, "partial_result", None)  # WorkerCrashed keeps the last one
    return Outcome(
        job_id,
        "failed",
        error=f"{type(exc).__name__}: {exc}",
        traceback=remote if isinstance(remote, str) else None,
        partial_result=None if partial is None else encode_json_lossy(partial),
        ran_for=ran_for,
    )


def _ran_for(handle: JobHandle[Any]) -> float | None:
    """Seconds the job ran in its worker, as its handle saw it (None: it never started)."""
    started, ended = handle.started_at, handle.ended_at
    if started is None or ended is None:
        return None
    return max(0.0, ended - started)


def stop_helper_processes() -> None:
    """Stop multiprocessing's fork server and resource tracker of this process.

    Both outlive every pool until the interpreter exits, and then stop a moment after
    it. ``cancelpool serve`` calls this as it exits, so that when its exit is seen, no
    process it started is left. Only for a process that runs no pool any more (the next
    pool would start them again).
    """
    from multiprocessing import forkserver, resource_tracker

    for helper in (
        getattr(forkserver, "_forkserver", None),
        getattr(resource_tracker, "_resource_tracker", None),
    ):
        stop = getattr(helper, "_stop", None)  # private, stable since 3.8; absent: skip
        if stop is None:
            continue
        try:
            stop()
        except (OSError, ChildProcessError):
            pass  # already gone


def poke_servers(store: Store, owners: Sequence[str] | None = None, *, skip: str = "") -> None:
    """Wake the live servers (all, or ``owners``) of ``store`` but ``skip``."""
    if owners is None:
        store.wake(None)
        return
    wanted = [owner for owner in owners if owner != skip]
    if wanted:
        store.wake(wanted)

"""``CancelPool``: the supervisor, in the caller's process.

::

    caller threads                supervisor thread                 worker processes
    --------------                -----------------                 ----------------
    submit()  --(lock)-->  registry, queue, dispatch  --inbox pipe-->  Run
    cancel()  --(lock)-->  token table slot := CANCELLED  (shared memory, read at once)
                           doorbell.ring()  ------------------------>  wakes the loop
                           select(): outbox pipes  <---------------  Started/Done/...
                                     process sentinels  <----------  a worker died
                                     timers (timeout backstop)
    handle.result()  <---  Future resolved, progress callbacks run

Submitting writes straight to a worker's pipe when it has room (one thread hop fewer
for latency); otherwise the job waits in the supervisor's queue and is dispatched in
batches as workers report results. The shared-memory flag is the truth about
cancellation; the doorbell only makes an awaiting worker look at once.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import fnmatch
import inspect
import itertools
import logging
import math
import multiprocessing
import os
import pickle
import re
import select
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, TypeVar

from .._core._enums import CancelationReason, OperationStatus
from .._core._exceptions import JobCancelled, PoolClosed, WorkerCrashed
from ..shm import Doorbell, TableFull, TokenTable
from . import _protocol as proto
from . import _worker
from ._handle import JobHandle

logger = logging.getLogger("cancelpool")

T = TypeVar("T")

#: Jobs one worker runs at once by default. Async jobs are cheap (a task each); higher
#: means fewer jobs wait in the supervisor's queue, lower means fairer spreading of
#: long jobs over workers.
DEFAULT_CONCURRENCY = 256
#: Extra time the supervisor gives a job past its timeout before it cancels the job
#: itself (the worker enforces timeouts precisely; this only catches a worker that
#: missed it). Shorter fires spuriously on a loaded machine; longer stops late.
BACKSTOP_MARGIN = 0.25
#: How long shutdown waits for a worker to exit after asking it to, before killing it.
WORKER_EXIT_GRACE = 5.0
#: Finished jobs remembered for ``get()`` / ``jobs()``.
DEFAULT_HISTORY = 1000


@dataclass(frozen=True)
class WorkerStatistics:
    """One worker's load."""

    pid: int | None
    running: int
    completed: int


@dataclass(frozen=True)
class PoolStatistics:
    """Counters of a pool at one moment."""

    submitted: int
    queued: int
    running: int
    completed: int
    cancelled: int
    failed: int
    workers: tuple[WorkerStatistics, ...]


class _RemoteTraceback(Exception):
    """Carries a worker's traceback text; set as ``__cause__`` of a job's exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.tb = text

    def __str__(self) -> str:
        return f"\n\n--- traceback in the worker process ---\n{self.tb}"


class _WorkerProc:
    """The supervisor's end of one worker process."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: multiprocessing.process.BaseProcess | None = None
        self.bell: Doorbell | None = None
        self.in_fd = -1
        self.out_fd = -1
        self.sentinel = -1
        self.conns: list[Connection] = []
        self.reader = proto.FrameReader()
        self.write_buffer = bytearray()
        self.inflight: set[int] = set()
        self.completed = 0
        self.alive = False
        self.stop_sent = False


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if math.isnan(timeout) or timeout <= 0 or math.isinf(timeout):
        raise ValueError(f"timeout must be a finite number of seconds > 0, not {timeout!r}")
    return float(timeout)


def _compile_pattern(pattern: str | None) -> Callable[[str], Any] | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise TypeError(f"name_pattern must be a glob string like 'user_42_*', not {pattern!r}")
    if not pattern:
        raise ValueError("name_pattern is empty and would match nothing; use '*' for all jobs")
    return re.compile(fnmatch.translate(pattern)).match


def _fn_label(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


class CancelPool(concurrent.futures.Executor):
    """A pool of worker processes running async (and sync) jobs that can be cancelled.

    Args:
        workers: number of worker processes (default: the number of CPUs).
        concurrency: jobs one worker runs at once; more wait in the supervisor.
        start_method: ``"forkserver"`` (default on Linux), ``"spawn"`` or ``"fork"``.
        capacity: size of the shared-memory token table (default: enough slots for
            every worker's ``concurrency``).
        history: finished jobs kept for :meth:`get` and :meth:`jobs`.
        use_uvloop: run workers on uvloop when it is installed (default True).

    Use it as a context manager (``with`` or ``async with``) or call
    :meth:`shutdown`. Leaving the block because of an exception (Ctrl-C included)
    cancels every job before the workers stop.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        start_method: str | None = None,
        capacity: int | None = None,
        history: int = DEFAULT_HISTORY,
        use_uvloop: bool = True,
    ) -> None:
        if workers is None:
            workers = os.cpu_count() or 1
        for label, value in (("workers", workers), ("concurrency", concurrency)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be an int >= 1, not {value!r}")
        if start_method is None:
            methods = multiprocessing.get_all_start_methods()
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        self._mp: Any = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            self._mp.set_forkserver_preload([_worker.__name__])
        self._concurrency = concurrency
        self._use_uvloop = use_uvloop
        if capacity is None:
            capacity = workers * concurrency + 64
        self._capacity = capacity
        self._history_size = history
        self._lock = threading.RLock()
        # One condition for every handle's result() to wait on (see JobHandle).
        self._results = threading.Condition(threading.Lock())
        self._idle = threading.Condition(self._lock)
        self._workers = [_WorkerProc(index) for index in range(workers)]
        self._jobs: dict[int, JobHandle[Any]] = {}
        self._queue: deque[tuple[JobHandle[Any], proto.Run]] = deque()
        self._history: deque[JobHandle[Any]] = deque(maxlen=history)
        self._ids = itertools.count(1)
        self._fn_cache: dict[Any, tuple[bytes, bool]] = {}
        self._timers: list[tuple[float, int]] = []
        self._submitted = 0
        self._counts = {
            OperationStatus.COMPLETED: 0,
            OperationStatus.CANCELLED: 0,
            OperationStatus.FAILED: 0,
        }
        self._table: TokenTable | None = None
        self._state = "new"
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._wake_pending = False

    # -- lifecycle --------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        with self._lock:
            if self._state == "running":
                return
            if self._state != "new":
                raise PoolClosed("this CancelPool is shut down; create a new one to submit jobs")
            self._table = TokenTable.create(self._capacity)
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            try:
                for proc in self._workers:
                    self._spawn(proc)
            except BaseException:
                self._kill_all()
                self._close_resources()
                self._state = "closed"
                raise
            self._state = "running"
            self._thread = threading.Thread(
                target=self._supervise, name="cancelpool-supervisor", daemon=True
            )
            self._thread.start()
            _live_pools.add(self)

    def _spawn(self, proc: _WorkerProc) -> None:
        assert self._table is not None
        in_r, in_w = self._mp.Pipe(duplex=False)
        out_r, out_w = self._mp.Pipe(duplex=False)
        bell = Doorbell()
        process = self._mp.Process(
            target=_worker.main,
            args=(self._table, bell, in_r, out_w, os.getpid(), self._use_uvloop),
            name=f"cancelpool-worker-{proc.index}",
            daemon=True,
        )
        process.start()
        in_r.close()
        out_w.close()
        proc.process = process
        proc.bell = bell
        proc.conns = [in_w, out_r]
        proc.in_fd = in_w.fileno()
        proc.out_fd = out_r.fileno()
        os.set_blocking(proc.in_fd, False)
        os.set_blocking(proc.out_fd, False)
        proc.sentinel = process.sentinel
        proc.reader = proto.FrameReader()
        proc.write_buffer = bytearray()
        proc.inflight = set()
        proc.alive = True
        proc.stop_sent = False

    def __enter__(self) -> CancelPool:
        self._ensure_started()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.shutdown(wait=True)
        else:
            reason = (
                CancelationReason.SIGNAL
                if isinstance(exc, KeyboardInterrupt)
                else CancelationReason.MANUAL
            )
            self._cancel_everything(reason, f"the pool's block exited with {type(exc).__name__}")
            self.shutdown(wait=True)

    async def __aenter__(self) -> CancelPool:
        import anyio.to_thread

        await anyio.to_thread.run_sync(self._ensure_started)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import anyio
        import anyio.to_thread

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.__exit__, exc_type, exc, tb)

    def shutdown(
        self,
        wait: bool = True,
        *,
        cancel_futures: bool = False,
        cancel_pending: bool | None = None,
        cancel_running: bool = False,
    ) -> None:
        """Stop accepting jobs, let (or make) the others finish, stop the workers.

        Args:
            wait: block until every job has resolved and every worker has exited.
            cancel_futures: ``concurrent.futures`` name of ``cancel_pending``.
            cancel_pending: cancel jobs that have not started (they never run).
            cancel_running: cancel running jobs too (their handles resolve as
                :class:`JobCancelled` with their partial results).
        """
        if cancel_pending is None:
            cancel_pending = cancel_futures
        with self._lock:
            if self._state == "new":
                self._state = "closed"
                return
            if self._state == "running":
                self._state = "closing"
        if cancel_pending:
            self._cancel_everything(
                CancelationReason.MANUAL, "the pool shut down", queued_only=not cancel_running
            )
        elif cancel_running:
            self._cancel_everything(CancelationReason.MANUAL, "the pool shut down")
        self._wake()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def close(self) -> None:
        """Same as ``shutdown(wait=True)``."""
        self.shutdown(wait=True)

    # -- submitting -----------------------------------------------------------------------
    def _pickle_fn(self, fn: Callable[..., Any]) -> tuple[bytes, bool]:
        try:
            cached = self._fn_cache.get(fn)
        except TypeError:  # unhashable callable
            cached = None
        if cached is not None:
            return cached
        if not callable(fn):
            raise TypeError(f"Cannot submit {fn!r}: it is not callable")
        try:
            data = pickle.dumps(fn, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(
                f"Cannot submit {_fn_label(fn)}: job functions must be importable "
                f"module-level functions (pickle failed: {exc})"
            ) from None
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - async __call__ objects
        )
        result = (data, is_async)
        try:
            self._fn_cache[fn] = result
        except TypeError:
            pass
        return result

    def submit(  # type: ignore[override]
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        name: str | None = None,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
        parent: JobHandle[Any] | None = None,
        **kwargs: Any,
    ) -> JobHandle[Any]:
        """Run ``fn(*args, **kwargs)`` in a worker; returns its :class:`JobHandle`.

        ``fn`` may be an async function (runs in the worker's event loop, among other
        jobs) or a plain function (runs in a worker thread; it can poll
        ``current_operation().token.check()``). Inside, ``current_operation()`` is
        the job's ``Cancelable``.

        Args:
            name: a label for ``cancel_all(name_pattern=...)`` (default: fn's name).
            timeout: seconds the job may run; it is then cancelled (reason TIMEOUT).
            metadata: free-form data kept on the handle.
            parent: a parent job: cancelling it cancels this one too.

        Raises:
            TypeError: ``fn`` or the arguments cannot be sent to a worker.
            PoolClosed: the pool is shut down.
        """
        timeout = _check_timeout(timeout)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, not {name!r}")
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
        if parent is not None and not isinstance(parent, JobHandle):
            raise TypeError(f"parent must be a JobHandle, not {type(parent).__name__}")
        fn_data, is_async = self._pickle_fn(fn)
        try:
            args_data = pickle.dumps((args, kwargs), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(
                f"Cannot submit {_fn_label(fn)}: its arguments cannot be pickled ({exc}); "
                "pass plain data or importable objects"
            ) from None
        if self._state != "running":
            self._ensure_started()
        if name is None:
            name = getattr(fn, "__name__", None)
        job_id = next(self._ids)
        handle: JobHandle[Any] = JobHandle(self, job_id, name, timeout, metadata, parent)
        run = proto.Run(job_id, 0, 0, fn_data, args_data, name, timeout, is_async)
        with self._lock:
            if self._state != "running":
                raise PoolClosed("this CancelPool is shut down; create a new one to submit jobs")
            self._jobs[job_id] = handle
            self._submitted += 1
            if parent is not None and parent.done():
                pass  # an ended parent does not cancel new children; it only cascades
            proc = self._pick_worker()
            if proc is not None and not proc.inflight and not self._queue:
                # An idle worker: write now, for the lowest latency.
                self._dispatch(proc, [(handle, run)])
            else:
                # Busy workers: let the supervisor thread send queued jobs in batches,
                # one frame (one write, one wake-up of the worker) per batch.
                self._queue.append((handle, run))
                if proc is not None:
                    self._wake()
        return handle

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        job_timeout: float | None = None,
        name: str | None = None,
    ) -> Iterator[T]:
        """Like ``Executor.map``: results in order, one job per item.

        ``timeout`` bounds the whole iteration (as in ``concurrent.futures``);
        ``job_timeout`` bounds each job. Leaving the iteration early cancels the
        jobs not yet collected.
        """
        handles = [
            self.submit(fn, *items, timeout=job_timeout, name=name)
            for items in zip(*iterables, strict=False)
        ]
        deadline = None if timeout is None else time.monotonic() + timeout

        def results() -> Iterator[T]:
            try:
                for handle in handles:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    yield handle.result(remaining)
            finally:
                for handle in handles:
                    if not handle.done():
                        handle.cancel("map() was abandoned")

        return results()

    def _pick_worker(self) -> _WorkerProc | None:
        best: _WorkerProc | None = None
        for proc in self._workers:
            load = len(proc.inflight)
            if (
                proc.alive
                and not proc.stop_sent
                and load < self._concurrency
                and (best is None or load < len(best.inflight))
            ):
                best = proc
        return best

    def _dispatch(self, proc: _WorkerProc, batch: list[tuple[JobHandle[Any], proto.Run]]) -> None:
        """Send jobs to a worker (lock held): allocate their slots, write one frame."""
        assert self._table is not None
        messages = []
        for handle, run in batch:
            parent = handle.parent
            parent_slot = parent._slot if parent is not None and not parent.done() else None
            try:
                slot = self._table.allocate(parent_slot)
            except TableFull:
                self._queue.appendleft((handle, run))
                continue
            handle._slot = slot
            handle._worker = proc.index
            proc.inflight.add(handle.id)
            if handle._cancel_reason is not None:
                self._table.cancel(slot, handle._cancel_reason)
            messages.append(
                proto.Run(
                    run.job,
                    slot.index,
                    slot.generation,
                    run.fn,
                    run.args,
                    run.name,
                    run.timeout,
                    run.is_async,
                )
            )
        if messages:
            self._write(proc, proto.frame(messages))

    def _write(self, proc: _WorkerProc, data: bytes) -> None:
        if proc.write_buffer:
            proc.write_buffer += data
            return
        try:
            written = os.write(proc.in_fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return  # the worker is dead; the supervisor thread will notice
        if written < len(data):
            proc.write_buffer += data[written:]
            self._wake()

    def _wake(self) -> None:
        if self._wake_pending or self._wake_w < 0:
            return
        self._wake_pending = True
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    # -- cancelling -------------------------------------------------------------------------
    def cancel(self, job: JobHandle[Any] | int, message: str | None = None) -> bool:
        """Cancel one job by handle or id; False if it is unknown or already finished."""
        handle = self._jobs.get(job) if isinstance(job, int) else job
        if handle is None:
            return False
        if not isinstance(handle, JobHandle):
            raise TypeError(f"cancel() takes a JobHandle or a job id, not {job!r}")
        return self._cancel_job(handle, CancelationReason.MANUAL, message)

    def cancel_all(
        self,
        name_pattern: str | None = None,
        status: OperationStatus | None = None,
        message: str | None = None,
    ) -> int:
        """Cancel every live job whose name matches the glob ``name_pattern`` (all if
        None) and whose status is ``status`` (PENDING or RUNNING; any if None).

        Returns how many jobs were cancelled. Queued ones never start; running ones
        see their shared-memory flag at once and their workers are woken.
        """
        match = _compile_pattern(name_pattern)
        if status is not None and not isinstance(status, OperationStatus):
            raise TypeError(f"status must be an OperationStatus, not {status!r}")
        with self._lock:
            targets = [
                handle
                for handle in self._jobs.values()
                if (match is None or (handle.name is not None and match(handle.name)))
                and (status is None or handle._status is status)
                and handle._cancel_reason is None
            ]
        return self._cancel_many(targets, CancelationReason.MANUAL, message)

    def _cancel_everything(
        self, reason: CancelationReason, message: str, *, queued_only: bool = False
    ) -> int:
        with self._lock:
            targets = [
                handle
                for handle in self._jobs.values()
                if handle._cancel_reason is None
                and (not queued_only or handle._status is OperationStatus.PENDING)
            ]
        return self._cancel_many(targets, reason, message)

    def _cancel_job(
        self, handle: JobHandle[Any], reason: CancelationReason, message: str | None
    ) -> bool:
        return self._cancel_many([handle], reason, message) > 0 or (
            not handle.done() and handle._cancel_reason is not None
        )

    def _cancel_many(
        self, handles: list[JobHandle[Any]], reason: CancelationReason, message: str | None
    ) -> int:
        resolved: list[JobHandle[Any]] = []
        bells: set[int] = set()
        count = 0
        with self._lock:
            table = self._table
            for handle in handles:
                if (
                    handle.done()
                    or handle._cancel_reason is not None
                    or handle.id not in self._jobs
                ):
                    continue
                count += 1
                handle._cancel_reason = reason
                handle._cancel_message = (
                    message or f"job {handle.id} was cancelled ({reason.value})"
                )
                if handle._slot is None:
                    # Still in our queue: it never starts. Resolve it right here.
                    resolved.append(handle)
                    self._retire(handle)
                elif table is not None:
                    table.cancel(handle._slot, reason)
                    if handle._worker is not None:
                        bells.add(handle._worker)
            for index in bells:
                bell = self._workers[index].bell
                if bell is not None:
                    bell.ring()
        for handle in resolved:
            self._resolve_cancelled(handle, started=False)
        return count

    # -- the supervisor thread ------------------------------------------------------------------
    def _supervise(self) -> None:
        try:
            self._loop()
        except BaseException:
            logger.exception("cancelpool: the supervisor thread failed; stopping the pool")
            self._fail_everything("the pool's supervisor thread failed")
        finally:
            self._kill_all()
            with self._lock:
                self._close_resources()
                self._state = "closed"
                _live_pools.discard(self)
                self._idle.notify_all()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._state == "closing" and not self._jobs:
                    for proc in self._workers:
                        if proc.alive and not proc.stop_sent:
                            proc.stop_sent = True
                            self._write(proc, proto.frame([proto.Stop()]))
                    if not any(proc.alive for proc in self._workers):
                        return
                readers = [self._wake_r]
                writers = []
                for proc in self._workers:
                    if proc.alive:
                        readers.append(proc.out_fd)
                        readers.append(proc.sentinel)
                        if proc.write_buffer:
                            writers.append(proc.in_fd)
                timeout = None
                if self._timers:
                    timeout = max(0.0, min(self._timers)[0] - time.monotonic())
                if self._state == "closing" and all(p.stop_sent for p in self._workers if p.alive):
                    timeout = (
                        WORKER_EXIT_GRACE if timeout is None else min(timeout, WORKER_EXIT_GRACE)
                    )
            readable, writable, _ = select.select(readers, writers, [], timeout)
            if not readable and not writable and self._state == "closing" and not self._jobs:
                self._kill_all()
            for fd in readable:
                if fd == self._wake_r:
                    self._drain_wake()
                    if self._queue:
                        with self._lock:
                            self._dispatch_queue()
                    continue
                for proc in self._workers:
                    if proc.alive and fd == proc.out_fd:
                        self._read(proc)
                        break
                    if proc.alive and fd == proc.sentinel:
                        self._read(proc)  # whatever it said before dying
                        self._worker_died(proc)
                        break
            if writable:
                with self._lock:
                    for proc in self._workers:
                        if proc.alive and proc.in_fd in writable and proc.write_buffer:
                            self._flush(proc)
            if self._timers:
                self._fire_timers()

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

    def _flush(self, proc: _WorkerProc) -> None:
        try:
            written = os.write(proc.in_fd, proc.write_buffer)
        except BlockingIOError:
            return
        except OSError:
            proc.write_buffer.clear()
            return
        del proc.write_buffer[:written]

    def _read(self, proc: _WorkerProc) -> None:
        chunks = []
        while True:
            try:
                data = os.read(proc.out_fd, 1 << 20)
            except BlockingIOError:
                break
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
            if len(data) < (1 << 20):
                break
        if not chunks:
            return
        messages: list[Any] = []
        for payload in proc.reader.feed(b"".join(chunks)):
            messages.extend(proto.from_worker_decoder.decode(payload))
        self._handle_messages(proc, messages)

    def _handle_messages(self, proc: _WorkerProc, messages: list[Any]) -> None:
        finished: list[tuple[JobHandle[Any], Any, bool]] = []
        progress: list[tuple[JobHandle[Any], proto.Progress]] = []
        now = time.monotonic()
        with self._lock:
            jobs = self._jobs
            for message in messages:
                handle = jobs.get(message.job)
                if handle is None:
                    continue
                kind = type(message)
                if kind is proto.Started:
                    handle._status = OperationStatus.RUNNING
                    handle.started_at = time.time()
                    handle.set_running_or_notify_cancel()
                    if handle.timeout is not None:
                        self._timers.append((now + handle.timeout + BACKSTOP_MARGIN, handle.id))
                elif kind is proto.Progress:
                    progress.append((handle, message))
                else:
                    self._retire(handle)
                    finished.append((handle, message, True))
            if self._queue:
                self._dispatch_queue()
        for handle, message in progress:
            handle._report(message.message, proto_decode_metadata(message.metadata))
        for handle, message, _ in finished:
            self._resolve(handle, message)
        if finished and self._state == "closing":
            self._wake()

    def _retire(self, handle: JobHandle[Any]) -> None:
        """Forget a live job (lock held): free its slot and its worker's place."""
        self._jobs.pop(handle.id, None)
        if handle._slot is not None and self._table is not None:
            self._table.release(handle._slot)
        if handle._worker is not None:
            proc = self._workers[handle._worker]
            proc.inflight.discard(handle.id)
            proc.completed += 1
        self._history.append(handle)
        if not self._jobs:
            self._idle.notify_all()

    def _dispatch_queue(self) -> None:
        """Move queued jobs to workers with room (lock held), one frame per worker."""
        batches: dict[int, list[tuple[JobHandle[Any], proto.Run]]] = {}
        room = {
            proc.index: self._concurrency - len(proc.inflight)
            for proc in self._workers
            if proc.alive and not proc.stop_sent
        }
        queue = self._queue
        while queue and room:
            handle, run = queue.popleft()
            if handle._cancel_reason is not None or handle.id not in self._jobs:
                continue
            index = max(room, key=room.__getitem__)
            batches.setdefault(index, []).append((handle, run))
            room[index] -= 1
            if room[index] <= 0:
                del room[index]
        for index, batch in batches.items():
            self._dispatch(self._workers[index], batch)

    def _resolve(self, handle: JobHandle[Any], message: Any) -> None:
        handle.ended_at = time.time()
        kind = type(message)
        if kind is proto.Done:
            try:
                result = pickle.loads(message.result)
            except Exception as exc:
                self._set_failed(
                    handle,
                    TypeError(f"the result of job {handle.id} could not be unpickled: {exc!r}"),
                )
                return
            handle._status = OperationStatus.COMPLETED
            self._counts[OperationStatus.COMPLETED] += 1
            handle._end_feeds()
            handle.set_result(result)
        elif kind is proto.Failed:
            try:
                error = pickle.loads(message.error)
            except Exception as exc:
                error = RuntimeError(
                    f"job {handle.id} failed and its exception could not be unpickled: {exc!r}"
                )
            if message.traceback:
                error.__cause__ = _RemoteTraceback(message.traceback)
            self._set_failed(handle, error)
        else:
            partial = None
            if message.partial is not None:
                try:
                    partial = pickle.loads(message.partial)
                except Exception as exc:
                    partial = f"<partial result could not be unpickled: {exc!r}>"
            handle._partial = partial
            reason = CancelationReason(message.reason)
            if handle._cancel_reason is None or reason is not handle._cancel_reason:
                handle._cancel_reason = reason
                handle._cancel_message = message.message
            self._resolve_cancelled(handle, started=message.started)

    def _set_failed(self, handle: JobHandle[Any], error: BaseException) -> None:
        handle._status = OperationStatus.FAILED
        self._counts[OperationStatus.FAILED] += 1
        handle._end_feeds()
        handle.set_exception(error)

    def _resolve_cancelled(self, handle: JobHandle[Any], *, started: bool) -> None:
        reason = handle._cancel_reason or CancelationReason.MANUAL
        message = handle._cancel_message or f"job {handle.id} was cancelled ({reason.value})"
        handle._status = OperationStatus.CANCELLED
        handle.ended_at = handle.ended_at or time.time()
        self._counts[OperationStatus.CANCELLED] += 1
        error = JobCancelled(
            reason, message, None, job_id=str(handle.id), partial_result=handle._partial
        )
        handle._end_feeds()
        handle.set_exception(error)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        due = [job for deadline, job in self._timers if deadline <= now]
        if not due:
            return
        self._timers = [(d, j) for d, j in self._timers if d > now]
        targets = [self._jobs[job] for job in due if job in self._jobs]
        if targets:
            self._cancel_many(targets, CancelationReason.TIMEOUT, "the job ran past its timeout")

    def _worker_died(self, proc: _WorkerProc) -> None:
        assert proc.process is not None
        proc.process.join(0)
        code = proc.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        pid = proc.process.pid
        with self._lock:
            proc.alive = False
            lost = [self._jobs[job] for job in proc.inflight if job in self._jobs]
            for handle in lost:
                self._retire(handle)
            self._close_worker(proc)
            if self._state == "running":
                try:
                    self._spawn(proc)
                except Exception:
                    logger.exception("cancelpool: could not start a replacement worker")
            if self._queue:
                self._dispatch_queue()
        for handle in lost:
            handle.ended_at = time.time()
            if handle._cancel_reason is not None:
                self._resolve_cancelled(handle, started=True)
                continue
            error = WorkerCrashed(
                f"job {handle.id} was lost: its worker process (pid {pid}) died ({how})",
                job_id=str(handle.id),
                partial_result=handle._partial,
            )
            self._set_failed(handle, error)
        if self._state == "closing":
            self._wake()

    def _fail_everything(self, why: str) -> None:
        with self._lock:
            handles = list(self._jobs.values())
            for handle in handles:
                self._retire(handle)
            self._queue.clear()
        for handle in handles:
            if not handle.done():
                self._set_failed(handle, PoolClosed(f"job {handle.id} was lost: {why}"))

    def _close_worker(self, proc: _WorkerProc) -> None:
        for conn in proc.conns:
            conn.close()
        proc.conns = []
        if proc.bell is not None:
            proc.bell.close()
            proc.bell = None

    def _kill_all(self) -> None:
        for proc in self._workers:
            process = proc.process
            if process is None:
                continue
            if process.exitcode is None:
                process.kill()
            process.join(WORKER_EXIT_GRACE)
            proc.alive = False
            self._close_worker(proc)
            if hasattr(process, "close"):
                try:
                    process.close()
                except ValueError:
                    pass
            proc.process = None

    def _close_resources(self) -> None:
        if self._table is not None:
            self._table.close()
            self._table = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    # -- registry ---------------------------------------------------------------------------
    def get(self, job_id: int) -> JobHandle[Any] | None:
        """The handle of a live or recently finished job, or None."""
        with self._lock:
            handle = self._jobs.get(job_id)
            if handle is None:
                for old in self._history:
                    if old.id == job_id:
                        return old
            return handle

    def jobs(
        self, name_pattern: str | None = None, status: OperationStatus | None = None
    ) -> list[JobHandle[Any]]:
        """Handles of live jobs and of the finished ones still in the history."""
        match = _compile_pattern(name_pattern)
        with self._lock:
            every = list(self._history) + list(self._jobs.values())
        return [
            handle
            for handle in every
            if (match is None or (handle.name is not None and match(handle.name)))
            and (status is None or handle._status is status)
        ]

    def statistics(self) -> PoolStatistics:
        """Counters: submitted, queued, running, completed, cancelled, failed, per worker."""
        with self._lock:
            running = sum(1 for h in self._jobs.values() if h._status is OperationStatus.RUNNING)
            return PoolStatistics(
                submitted=self._submitted,
                queued=len(self._jobs) - running,
                running=running,
                completed=self._counts[OperationStatus.COMPLETED],
                cancelled=self._counts[OperationStatus.CANCELLED],
                failed=self._counts[OperationStatus.FAILED],
                workers=tuple(
                    WorkerStatistics(
                        pid=None if p.process is None else p.process.pid,
                        running=len(p.inflight),
                        completed=p.completed,
                    )
                    for p in self._workers
                ),
            )

    def __repr__(self) -> str:
        return f"<CancelPool workers={len(self._workers)} {self._state} jobs={len(self._jobs)}>"


def proto_decode_metadata(raw: Any) -> dict[str, Any]:
    import msgspec

    value = msgspec.msgpack.decode(raw)
    return value if isinstance(value, dict) else {"value": value}


# Pools still running at interpreter exit are stopped hard: their jobs are cancelled,
# their workers killed, their memory released.
_live_pools: weakref.WeakSet[CancelPool] = weakref.WeakSet()


@atexit.register
def _stop_live_pools() -> None:
    for pool in list(_live_pools):
        try:
            pool._cancel_everything(CancelationReason.SIGNAL, "the interpreter is exiting")
            pool.shutdown(wait=False)
            pool._kill_all()
        except Exception:
            traceback.print_exc()

"""The worker process: an event loop that runs many jobs, each inside a ``Cancelable``.

::

    supervisor                          this process
    ----------                          ------------------------------------------------
    inbox pipe   --- Run / Stop ----->  _on_inbox: decode batch, start a task per job
    token table  (shared memory)        each job: Cancelable(token=SharedToken(slot))
    doorbell     --- ring ----------->  _on_bell: every job's token re-reads its slot;
                                        a cancelled one wakes its job's cancel scope
    outbox pipe  <-- Started/Done/...   _flush: one frame per loop iteration (batched)
                 <-- LoopBlocked/...    the watchdog thread (_watchdog.py), itself,
                                        while the loop is blocked
    supervisor pid (pidfd)              readable when the supervisor dies: exit at once

Two threads write the outbox: the loop, and the watchdog when the loop is blocked.
Every write goes through ``write_lock`` and ``write_buffer``, so that frames never
interleave.

The worker never writes shared memory: everything it has to say goes over the outbox.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

import msgspec

from .. import _tracing
from .._core._cancelable import Cancelable
from .._core._enums import CancelationReason, OperationStatus
from .._core._exceptions import CancelationError
from .._core._sources import TimeoutSource
from ..shm import Doorbell, SharedToken, SlotRef, TokenTable
from . import _precise_wait, _remote
from . import _protocol as proto
from ._payload import dump_error, dump_partial, dumps, rewrap
from ._watchdog import LoopWatchdog

#: Bytes asked for per read of the inbox. Frames larger than this arrive in pieces and
#: are reassembled; smaller means more reads for big batches.
_READ_SIZE = 1 << 16
#: Messages after which the worker sends at once instead of at the end of the loop
#: iteration. Larger batches cost less per message; smaller ones let the supervisor
#: start on a burst sooner (cancel_all over thousands of jobs).
FLUSH_BATCH = 256
#: Unpickled job functions kept per worker (keyed by their pickle). Module-level
#: functions repeat; other callables may not, so the cache is emptied when full.
_FUNCTION_CACHE_SIZE = 256
#: Seconds a progress report may wait to share a frame with the reports after it. A
#: job that reports and awaits in turn would otherwise cost a write (and a wake-up of
#: the supervisor) per report; an outcome or any other message still goes out at the
#: end of the loop iteration, the waiting reports ahead of it, in order.
PROGRESS_DELAY = 0.001
#: Minimum seconds between two checkpoints of a job's partial result (sent with its
#: progress reports, kept by the supervisor in case the worker dies). Shorter keeps a
#: fresher partial result; longer pickles it less often.
CHECKPOINT_INTERVAL = 0.05
#: Seconds the watchdog thread keeps trying to write a report into a full outbox pipe
#: before it leaves the rest to the loop. The supervisor reads all the time, so a full
#: pipe drains in milliseconds; longer only matters if the supervisor itself stalls.
_SEND_NOW_PATIENCE = 1.0
#: Collections of the middle generation between two full collections in a worker (see
#: _tune_collector; CPython's default is 10): a burst of 5,000 job starts allocates
#: ~200,000 objects, which made it a candidate for several full collections.
GC_FULL_EVERY = 100


class _Job:
    __slots__ = (
        "checkpoint_at",
        "checkpoint_due",
        "failure",
        "forwarder",
        "op",
        "span",
        "task",
        "token",
    )

    def __init__(self, token: SharedToken, op: Cancelable, task: asyncio.Task[Any] | None) -> None:
        self.token = token
        self.op = op
        self.task = task  # the job's own task: the watchdog names the job holding the loop
        self.failure: BaseException | None = None
        self.forwarder: Callable[..., Any] | None = None
        self.checkpoint_at = 0.0
        self.checkpoint_due = False
        self.span: _tracing.JobSpan | None = None  # its OpenTelemetry span, if traced


class Worker:
    """One worker's state; :func:`main` builds it in the child process."""

    def __init__(
        self,
        table: TokenTable,
        bell: Doorbell,
        inbox: Connection,
        outbox: Connection,
        supervisor_pid: int,
        loop_block_threshold: float | None = None,
    ) -> None:
        self.table = table
        self.bell = bell
        self.inbox = inbox
        self.outbox = outbox
        self.supervisor_pid = supervisor_pid
        self.jobs: dict[int, _Job] = {}
        # Job tasks created and not yet ended (started or not): the last one to end
        # flushes, and a Stop waits for them all. ``jobs`` alone would read empty
        # between the tasks of one inbox batch, each of which runs to its end in turn.
        self.live = 0
        self.functions: dict[bytes, Callable[..., Any]] = {}
        self.pending: list[Any] = []
        self.flush_scheduled = False
        self.progress_flush_armed = False  # _flush_progress is due
        self.write_buffer = bytearray()
        self.write_lock = threading.Lock()
        self.loop_block_threshold = loop_block_threshold
        self.watchdog: LoopWatchdog | None = None
        self.bell_heard = False  # a BellHeard is owed to the supervisor
        # _say_bell_heard, while due: a frame that carries the BellHeard first cancels
        # it (a timer left to fire would wake an idle loop for nothing, once per ring).
        self.bell_timer: asyncio.TimerHandle | None = None
        self.rings_heard = 0  # doorbell rings drained since this process started
        self.reader = proto.FrameReader()
        self.stopping = False
        self.finished: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_id: int | None = None
        self.children: dict[int, _remote.ChildJob] = {}
        self.unannounced: list[int] = []

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self, initializer: tuple[bytes, bool] | None = None) -> None:
        loop = self.loop = asyncio.get_running_loop()
        self.thread_id = threading.get_ident()
        self.finished = asyncio.Event()
        self.in_fd = self.inbox.fileno()
        self.out_fd = self.outbox.fileno()
        os.set_blocking(self.in_fd, False)
        os.set_blocking(self.out_fd, False)
        self._watch_supervisor(loop)
        _declare_asyncio()
        if initializer is not None and not await self._initialize(initializer):
            return
        loop.add_reader(self.in_fd, self._on_inbox)
        loop.add_reader(self.bell.fileno(), self._on_bell)
        if self.loop_block_threshold is not None:
            # Only now: the initializer may take the loop for as long as it needs.
            self.watchdog = LoopWatchdog(
                loop,
                self.loop_block_threshold,
                self.bell.fileno(),
                self._job_of_task,
                Worker._run.__code__,
                self.send_now,
            )
            self.watchdog.start()
        await self.finished.wait()
        if self.watchdog is not None:
            self.watchdog.stop()
        self._flush()
        with self.write_lock:  # a watchdog report may still be on its way out
            if self.write_buffer:
                os.set_blocking(self.out_fd, True)
                os.write(self.out_fd, self.write_buffer)

    async def _initialize(self, initializer: tuple[bytes, bool]) -> bool:
        """Run the pool's initializer once, before any job; False (and reported to the
        supervisor, which stops the pool) if it raised."""
        data, is_async = initializer
        try:
            fn, args = pickle.loads(data)
            result = fn(*args)
            if is_async:
                await result
        except BaseException as exc:  # SystemExit included: the pool must hear of it
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self._send(proto.InitFailed(dump_error(exc), text))
            self._flush()
            if self.write_buffer:
                os.set_blocking(self.out_fd, True)
                os.write(self.out_fd, self.write_buffer)
            return False
        self._send(proto.InitDone())
        self._flush()
        return True

    def _watch_supervisor(self, loop: asyncio.AbstractEventLoop) -> None:
        # A pidfd becomes readable when the supervisor exits, under every start method
        # (under forkserver our parent is the fork server, so getppid() cannot tell).
        # It is watched by a thread of its own, not by the event loop: a job that
        # blocks the loop must not keep an orphaned worker alive.
        try:
            pidfd = os.pidfd_open(self.supervisor_pid)
        except ProcessLookupError:
            os._exit(0)
        except (AttributeError, OSError):  # pragma: no cover - no pidfd: rely on EOF
            return
        threading.Thread(
            target=_exit_when_readable, args=(pidfd,), name="cancelpool-orphan-watch", daemon=True
        ).start()

    def _supervisor_gone(self) -> None:
        # Nobody is left to report to: stop everything now.
        os._exit(0)

    # -- inbox ---------------------------------------------------------------------------
    def _on_inbox(self) -> None:
        try:
            data = os.read(self.in_fd, _READ_SIZE)
        except BlockingIOError:
            return
        if not data:  # the supervisor closed our pipe
            self._supervisor_gone()
        for payload in self.reader.feed(data):
            for message in proto.to_worker_decoder.decode(payload):
                if isinstance(message, proto.Run):
                    self._start(message)
                elif isinstance(message, proto.Stop):
                    self.stopping = True
                elif isinstance(message, proto.Warm):
                    self._warm(message.functions)
                elif isinstance(message, proto.ChildProgress):
                    self._child_progress(message)
                else:
                    _remote.settle_child(self, message)
        if self.stopping and not self.live:
            assert self.finished is not None
            self.finished.set()

    def _start(self, run: proto.Run) -> None:
        fn = self.functions.get(run.fn)
        try:
            if fn is None:
                if len(self.functions) >= _FUNCTION_CACHE_SIZE:
                    self.functions.clear()
                fn = self.functions[run.fn] = pickle.loads(run.fn)
            args, kwargs = pickle.loads(run.args)
        except BaseException as exc:  # SystemExit from a __setstate__ included
            error = rewrap(exc, f"job {run.job} could not be unpickled in the worker: {exc!r}")
            self._send(proto.Failed(run.job, dump_error(error), traceback.format_exc()))
            return
        assert self.loop is not None
        self.loop.create_task(self._run(run, fn, args, kwargs))
        self.live += 1

    def _warm(self, functions: list[bytes]) -> None:
        for data in functions:
            if data not in self.functions and len(self.functions) < _FUNCTION_CACHE_SIZE:
                try:
                    self.functions[data] = pickle.loads(data)
                except Exception:
                    pass  # the job that needs it will report the problem

    # -- running a job -------------------------------------------------------------------
    async def _run(
        self, run: proto.Run, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            job_id = run.job
            token = SharedToken(self.table, SlotRef(run.slot, run.generation))
            if token.is_cancelled:  # cancelled while queued: it never starts
                reason = token.reason or CancelationReason.MANUAL
                message = "cancelled before it started"
                self._send(proto.Cancelled(job_id, reason.value, message, None, False))
                return
            op = Cancelable(run.name, operation_id=str(job_id), register=False).add_token(token)
            if run.timeout is not None:
                op.add_source(TimeoutSource(run.timeout))
            job = self.jobs[job_id] = _Job(token, op, asyncio.current_task())
            # A partial, not a closure over ``job``: that made every job a reference
            # cycle (job -> op -> its callbacks -> the closure -> job) that only the
            # garbage collector could free, thousands at a time, in long pauses.
            job.forwarder = functools.partial(self._forward_progress, job_id)
            op.on_progress(job.forwarder)
            if run.trace is not None:
                span = job.span = _tracing.start_job(
                    run.trace.context, run.trace.attempt, run.name, job_id
                )
                if span is not None:
                    op.on_progress(span.progress)
            _remote.enter_job(self, job_id)
            # Announced at the next flush, and only if it is still running then: a job
            # that finishes within one loop iteration needs no Started message.
            self.unannounced.append(job_id)
            if not self.flush_scheduled:
                self.flush_scheduled = True
                assert self.loop is not None
                self.loop.call_soon(self._flush)
            try:
                async with op:
                    if run.is_async:
                        result = await fn(*args, **kwargs)
                    else:
                        # A partial, so that job kwargs named like run_in_thread's own
                        # parameters ("fn") reach the job untouched.
                        result = await op.run_in_thread(functools.partial(fn, *args, **kwargs))
            except CancelationError as exc:
                if job.failure is not None:
                    self._send_failure(job_id, job.failure)
                elif op.context.status is OperationStatus.CANCELLED and op.is_cancelled:
                    self._send_cancelled(job_id, exc, op)
                else:
                    # An operation inside the job was cancelled and the job let it escape:
                    # the job failed with that error, as it would have in one process.
                    self._send_failure(job_id, exc)
            except asyncio.CancelledError as exc:
                # Only the worker's own shutdown cancels a job's task from outside: say so,
                # then let the cancellation go on.
                self._send_failure(job_id, RuntimeError(f"job stopped by {exc!r}"))
                raise
            except BaseException as exc:
                # The job's own exception, whatever it is (SystemExit and KeyboardInterrupt
                # included, as in concurrent.futures): the caller's result() raises it.
                self._send_failure(job_id, exc)
            else:
                if job.failure is not None:  # it returned before the cancellation landed
                    self._send_failure(job_id, job.failure)
                    return
                try:
                    data = dumps(result)
                except BaseException as problem:  # SystemExit from a __reduce__ included
                    error = rewrap(
                        problem,
                        f"the result of job {job_id} ({type(result).__name__}) cannot be "
                        f"pickled: {problem!r}; return picklable data",
                    )
                    self._send_failure(job_id, error)
                else:
                    self._send(proto.Done(job_id, data))
            finally:
                if job.span is not None:
                    job.span.close()
                del self.jobs[job_id]
                # A job's exception keeps this frame (its traceback) and the frame keeps
                # these: with the operation's context holding that exception, a cycle.
                del job, op
        finally:
            self.live -= 1
            if not self.live:
                # The last job ended: nothing else is about to be batched with its
                # outcome, so send it now rather than on the next loop iteration.
                self._flush()
                if self.stopping:
                    assert self.finished is not None
                    self.finished.set()

    def _send_failure(self, job_id: int, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self._send(proto.Failed(job_id, dump_error(exc), text))
        job = self.jobs.get(job_id)
        if job is not None and job.span is not None:
            job.span.failed(exc)

    def _send_cancelled(self, job_id: int, exc: CancelationError, op: Cancelable) -> None:
        job = self.jobs.get(job_id)
        if job is not None and job.span is not None:
            job.span.cancelled(exc.reason, exc.message)
        data = dump_partial(op.context.partial_result)
        self._send(proto.Cancelled(job_id, exc.reason.value, exc.message, data, True))

    def _forward_progress(
        self, job_id: int, op_id: str, message: str, metadata: dict[str, Any]
    ) -> None:
        """A job's own report (its ``op.on_progress`` callback): to the supervisor."""
        job = self.jobs.get(job_id)
        if job is None:
            return  # reported after the job ended: nobody listens any more
        try:
            raw = msgspec.msgpack.encode(metadata)
        except Exception as problem:
            job.failure = TypeError(
                f"this job's progress metadata cannot be encoded ({problem}); "
                "report JSON-like data: dict, list, str, int (64-bit), float, bool, None"
            )
            job.op.cancel_sync(CancelationReason.ERROR, str(job.failure))
            return
        self._send_progress(proto.Progress(job_id, op_id, str(message), msgspec.Raw(raw)))
        if job.op.context.partial_result is not None:
            self._checkpoint(job_id, job)

    def _checkpoint(self, job_id: int, job: _Job) -> None:
        """Send the job's partial result now, or once the interval has passed (the
        latest one then: a forced stop must not resolve with a stale one)."""
        wait = job.checkpoint_at + CHECKPOINT_INTERVAL - time.monotonic()
        if wait > 0:
            if not job.checkpoint_due:
                job.checkpoint_due = True
                assert self.loop is not None
                self.loop.call_later(wait, self._trailing_checkpoint, job_id, job)
            return
        job.checkpoint_at = time.monotonic()
        try:
            self._send(proto.Checkpoint(job_id, dumps(job.op.context.partial_result)))
        except Exception:
            pass  # reported (or not) when the job ends

    def _trailing_checkpoint(self, job_id: int, job: _Job) -> None:
        job.checkpoint_due = False
        if self.jobs.get(job_id) is job:
            self._checkpoint(job_id, job)

    def _child_progress(self, message: proto.ChildProgress) -> None:
        """A child's report, for the parent job's own callbacks (not forwarded again:
        the supervisor already delivered it to the caller's handles)."""
        job = self.jobs.get(message.parent)
        if job is None or not (callbacks := job.op.progress_callbacks):
            return
        metadata = msgspec.msgpack.decode(message.metadata)
        for callback in callbacks:
            if callback is job.forwarder:
                continue
            try:
                result = callback(str(message.child), message.message, metadata)
                if asyncio.iscoroutine(result):
                    assert self.loop is not None
                    self.loop.create_task(result)
            except Exception:
                traceback.print_exc()

    def post_threadsafe(self, message: Any) -> None:
        """Send a message to the supervisor from any thread of this worker."""
        if threading.get_ident() == self.thread_id:
            self._send(message)
        else:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self._send, message)

    def _say_bell_heard(self) -> None:
        # A ring's BellHeard that no frame has carried yet: sent on its own, a step
        # after the ring (the cancellation it is about has had its turns by then).
        self.bell_timer = None
        if self.bell_heard:
            self._flush()

    def _job_of_task(self, task: asyncio.Task[Any] | None) -> int | None:
        """The job whose own task ``task`` is (called from the watchdog thread; the
        table is copied in one step, under the GIL, whatever the loop does)."""
        if task is None:
            return None
        for job_id, job in list(self.jobs.items()):
            if job.task is task:
                return job_id
        return None

    def send_now(self, message: Any) -> None:
        """Write one message to the supervisor now, from a thread that is not the
        loop's, even while the loop is blocked (the watchdog's reports)."""
        data = _frame([message])
        fd = self.out_fd
        deadline = time.monotonic() + _SEND_NOW_PATIENCE
        with self.write_lock:
            had_buffer = bool(self.write_buffer)
            self.write_buffer += data
        while True:
            with self.write_lock:
                if not self.write_buffer:
                    return
                try:
                    written = os.write(fd, self.write_buffer)
                except BlockingIOError:
                    written = 0
                except OSError:  # the supervisor is gone: nobody to report to
                    os._exit(0)
                del self.write_buffer[:written]
                if not self.write_buffer:
                    return
            if time.monotonic() >= deadline:
                break
            writable = select.poll()  # not select(): a job may hold fds above 1023
            writable.register(fd, select.POLLOUT)
            writable.poll(50)
        if not had_buffer:
            # What is left, the loop sends when it turns again.
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self._want_writable)

    def _want_writable(self) -> None:
        if self.write_buffer:
            assert self.loop is not None
            self.loop.add_writer(self.out_fd, self._on_writable)

    # -- doorbell --------------------------------------------------------------------------
    def _on_bell(self) -> None:
        rings = self.bell.drain()
        # The cancellations first: the bookkeeping below is not on their path.
        for job in list(self.jobs.values()):
            job.token.sync_from_table()
        if self.watchdog is not None:
            self.rings_heard += rings
            self.watchdog.heard_bell()
            # Said with the next frame (or a step later, alone): a write of its own
            # now would delay the cancellation it is about. A one-shot timer, armed by
            # a ring only: a periodic one would make the loop's timers late.
            self.bell_heard = True
            if self.bell_timer is None:
                assert self.loop is not None
                self.bell_timer = self.loop.call_later(self.watchdog.step, self._say_bell_heard)

    # -- outbox ----------------------------------------------------------------------------
    def _send(self, message: Any) -> None:
        self.pending.append(message)
        if len(self.pending) >= FLUSH_BATCH:
            # A burst (thousands of jobs ending at once): send in slices, so that the
            # supervisor works on the first ones while this loop produces the rest.
            self._flush()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            assert self.loop is not None
            self.loop.call_soon(self._flush)

    def _send_progress(self, message: proto.Progress) -> None:
        self.pending.append(message)
        if len(self.pending) >= FLUSH_BATCH:
            self._flush()
        elif not self.flush_scheduled and not self.progress_flush_armed:
            self.progress_flush_armed = True
            assert self.loop is not None
            self.loop.call_later(PROGRESS_DELAY, self._flush_progress)

    def _flush_progress(self) -> None:
        self.progress_flush_armed = False
        if not self.flush_scheduled:  # else the scheduled flush carries them
            self._flush()

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.unannounced:
            jobs = self.jobs
            started = [proto.Started(job) for job in self.unannounced if job in jobs]
            self.unannounced = []
            # Before anything else in this frame: the job is running from now on.
            self.pending[:0] = started
        if self.bell_heard:
            self.bell_heard = False
            self.pending.append(proto.BellHeard(self.rings_heard))
            if self.bell_timer is not None:
                self.bell_timer.cancel()
                self.bell_timer = None
        if not self.pending:
            return
        data = _frame(self.pending)
        self.pending = []
        with self.write_lock:
            if self.write_buffer:
                self.write_buffer += data
                return
            try:
                written = os.write(self.out_fd, data)
            except BlockingIOError:
                written = 0
            except BrokenPipeError:
                self._supervisor_gone()
                return
            if written < len(data):
                self.write_buffer += data[written:]
                assert self.loop is not None
                self.loop.add_writer(self.out_fd, self._on_writable)

    def _on_writable(self) -> None:
        with self.write_lock:
            try:
                written = os.write(self.out_fd, self.write_buffer)
            except BlockingIOError:
                return
            except BrokenPipeError:
                self._supervisor_gone()
                return
            del self.write_buffer[:written]
            if not self.write_buffer:
                assert self.loop is not None
                self.loop.remove_writer(self.out_fd)


def _frame(messages: list[Any]) -> bytes:
    try:
        return proto.frame(messages)
    except (msgspec.EncodeError, UnicodeEncodeError):
        # Text that is not valid UTF-8 (lone surrogates) in some message: escape it
        # rather than lose the whole batch.
        return proto.frame([_encodable(message) for message in messages])


def _encodable(message: Any) -> Any:
    """The message with every str field made valid UTF-8 (odd characters escaped)."""
    changes = {
        field: value.encode("utf-8", "backslashreplace").decode("utf-8")
        for field in message.__struct_fields__
        if isinstance(value := getattr(message, field), str)
    }
    return msgspec.structs.replace(message, **changes) if changes else message


def _declare_asyncio() -> None:
    """Tell sniffio, for this task and every task and callback created from here on,
    that the library is asyncio (uvloop is asyncio too).

    Without it each anyio call a job makes (``anyio.sleep``, ``checkpoint``, a cancel
    scope) asks sniffio, which finds asyncio only after looking up the current task:
    about 0.5 us a call, a sixth of a bare checkpoint. anyio's own ``run()`` sets the
    same variable. Nothing else can run in this thread while the loop does.
    """
    try:
        import sniffio
    except ImportError:  # anyio then asks asyncio directly, which is as fast
        return
    sniffio.current_async_library_cvar.set("asyncio")


def _exit_when_readable(fd: int) -> None:
    select.select([fd], [], [])  # a single small fd: select is fine here
    os._exit(0)


def _supervisors_signal(signum: int, frame: FrameType | None) -> None:
    """SIGINT/SIGTERM in a worker: the supervisor acts on them, not the worker."""


def _default_stop_signals() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _tune_collector() -> None:
    """Make the cyclic garbage collector's full passes rare in this process.

    A worker with thousands of jobs in flight holds hundreds of thousands of live
    objects, and every full collection walks them all (measured: 60-130 ms with 5,000
    jobs in flight, each pause holding up every job of the worker, their cancellations
    too). The pool's own objects die by reference counting (tests/test_reference_cycles.py
    and the worker test say so), so collecting the oldest generation less often costs
    little: the objects of the startup are frozen out of every pass, and a full
    collection waits for ``GC_FULL_EVERY`` middle ones. The young collections, which
    free the cycles a job's own code makes (an exception kept with its traceback), keep
    CPython's schedule. A job's code can set its own thresholds (an ``initializer=``
    runs after this).
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, GC_FULL_EVERY)


def main(
    table: TokenTable,
    bell: Doorbell,
    inbox: Connection,
    outbox: Connection,
    supervisor_pid: int,
    use_uvloop: bool,
    initializer: tuple[bytes, bool] | None = None,
    loop_block_threshold: float | None = None,
) -> None:
    """Entry point of a worker process (``initializer``: the pickle of the pool's
    ``(initializer, initargs)`` and whether it is async; ``loop_block_threshold``:
    seconds without a turn of the loop before the watchdog reports it, None: no
    watchdog)."""
    # Ctrl-C and SIGTERM are the supervisor's to handle: it cancels our jobs through
    # their tokens and stops us (SIGKILL when it must). Both often reach the whole process
    # group (a terminal, systemd's KillMode=control-group, `kill -TERM -PGID`); a worker
    # that died of one would fail its jobs before the supervisor could requeue them. If
    # the supervisor dies, the orphan watch ends us. A handler that does nothing, not
    # SIG_IGN: an ignored signal stays ignored in the programs a job runs (exec keeps
    # SIG_IGN), and a job's subprocess must still stop on SIGTERM.
    signal.signal(signal.SIGINT, _supervisors_signal)
    signal.signal(signal.SIGTERM, _supervisors_signal)
    # A process a job forks (without exec) is not a worker: the defaults again.
    os.register_at_fork(after_in_child=_default_stop_signals)
    _tune_collector()
    worker = Worker(table, bell, inbox, outbox, supervisor_pid, loop_block_threshold)
    # asyncio's own loop wakes its timers up to a millisecond late (a job's timeout
    # with them); this one, to the microsecond. uvloop keeps libuv's timers.
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = _precise_wait.new_event_loop
    if use_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(worker.run(initializer))
    # A forked worker ends in os._exit, which runs no atexit handler: the spans an
    # OpenTelemetry batch processor still holds go out now (a killed worker's are lost).
    _tracing.flush()
    sys.stdout.flush()

"""``current_pool()``: the pool seen from inside a job, for submitting child jobs.

A job's children run anywhere in the pool (any worker, this one included). They are
children in every sense: cancelling the job, for whatever reason, cancels them
(reason PARENT, wherever they run); they never outlive it; their progress reaches the
job's own progress callbacks and the caller's handle of the job.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
import threading
from collections.abc import Callable, Generator, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .. import _tracing
from .._core import _validate
from .._core._enums import CancelationReason
from .._core._exceptions import JobCancelled
from . import _protocol as proto
from ._payload import load_error, load_partial, pickle_args, pickle_fn

if TYPE_CHECKING:
    from ._worker_process import Worker

#: The job running in this task (or thread) and the worker running it, set by the
#: worker when the job starts. A context variable, not a module global: the job's
#: threads and tasks inherit it, and code outside any job sees None.
_current: ContextVar[tuple[Worker, int] | None] = ContextVar("cancelpool_current_job", default=None)


def enter_job(worker: Worker, job_id: int) -> None:
    """Make ``current_pool()`` work in the calling task (the job's own task)."""
    _current.set((worker, job_id))


def current_pool() -> RemotePool:
    """The pool running the current job, for submitting child jobs.

    Raises:
        RuntimeError: not called from inside a job running in a ``CancelPool``.
    """
    current = _current.get()
    if current is None:
        raise RuntimeError(
            "current_pool() works only inside a job running in a CancelPool worker; "
            "in the caller, use the CancelPool object itself"
        )
    return RemotePool(*current)


class ChildJob:
    """A child job submitted from inside a job: awaitable, cancellable.

    ``await child`` returns its result or raises its exception or
    :class:`JobCancelled`. If the awaiting task is cancelled, the child is cancelled.
    From a plain (sync) job, use ``child.result(timeout)`` instead.
    """

    def __init__(self, worker: Worker, request: int, name: str | None) -> None:
        self._worker = worker
        self.request = request
        self.name = name
        self.id: int | None = None
        self._loop = worker.loop
        self._future: asyncio.Future[Any] = worker.loop.create_future()  # type: ignore[union-attr]
        self._done = threading.Event()

    def _settle(self, result: Any = None, error: BaseException | None = None) -> None:
        if not self._future.done():
            if error is not None:
                self._future.set_exception(error)
            else:
                self._future.set_result(result)
            # Nobody may ever await it (fire-and-forget children): no warning then.
            self._future.exception()
        self._done.set()

    def done(self) -> bool:
        """True once the child has ended."""
        return self._done.is_set()

    def cancel(self, message: str | None = None) -> bool:
        """Ask the pool to cancel the child (and its descendants)."""
        if self.done():
            return False
        self._worker.post_threadsafe(proto.CancelChild(self.request, message))
        return True

    def result(self, timeout: float | None = None) -> Any:
        """Block until the child ends (for sync jobs running in a thread)."""
        if threading.get_ident() == getattr(self._worker, "thread_id", None):
            raise RuntimeError("use 'await child' in async jobs: result() would block the loop")
        if not self._done.wait(timeout):
            raise TimeoutError(f"child job {self.id} has not finished")
        return self._future.result()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._wait().__await__()

    async def _wait(self) -> Any:
        try:
            return await asyncio.shield(self._future)
        except asyncio.CancelledError:
            current = _current.get()
            job = self._worker.jobs.get(current[1]) if current is not None else None
            if not self._future.done() and (job is None or not job.op.is_cancelled):
                # Only the awaiting task gave up. (If the whole job is being cancelled,
                # the pool cancels the child itself, with reason PARENT.)
                self.cancel("the task awaiting the child was cancelled")
            raise


class RemotePool:
    """The verbs of :class:`CancelPool` for use inside a job (see :func:`current_pool`)."""

    _requests = itertools.count(1)

    def __init__(self, worker: Worker, job: int) -> None:
        self._worker = worker
        self.job_id = job

    def submit(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        name: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> ChildJob:
        """Submit a child job of the current job; returns at once.

        Raises:
            TypeError: ``fn`` or the arguments cannot be pickled.
        """
        timeout = _validate.optional_seconds(timeout, "timeout")
        _validate.name(name)
        fn_data, args_data = pickle_fn(fn), pickle_args(fn, args, kwargs)
        request = next(self._requests)
        child = ChildJob(self._worker, request, name or getattr(fn, "__name__", None))
        self._worker.children[request] = child
        self._worker.post_threadsafe(
            proto.SubmitChild(
                request,
                self.job_id,
                fn_data,
                args_data,
                child.name,
                timeout,
                _validate.is_async_callable(fn),
                _tracing.capture(),  # a traced job's children nest under its span
            )
        )
        return child

    async def map(
        self, fn: Callable[..., Any], *iterables: Iterable[Any], job_timeout: float | None = None
    ) -> list[Any]:
        """Run ``fn`` as one child job per item; their results, in order.

        If one child fails, the others are cancelled and the error propagates.
        """
        children = [
            self.submit(fn, *items, timeout=job_timeout) for items in zip(*iterables, strict=False)
        ]
        try:
            return [await child for child in children]
        finally:
            for child in children:
                child.cancel("a sibling failed or map() was abandoned")

    def cancel(self, child: ChildJob, message: str | None = None) -> bool:
        """Cancel one of this job's children."""
        if not isinstance(child, ChildJob):
            raise TypeError(f"cancel() takes a ChildJob, not {child!r}")
        return child.cancel(message)


def settle_child(worker: Worker, message: Any) -> None:
    """Apply a ChildAccepted / ChildRefused / ChildOutcome message (worker loop)."""
    child = worker.children.get(message.request)
    if child is None:
        return
    kind = type(message)
    if kind is proto.ChildAccepted:
        child.id = message.job
        return
    del worker.children[message.request]
    try:
        _settle(child, message)
    except Exception as exc:  # e.g. a result that does not unpickle here
        child._settle(
            error=RuntimeError(
                f"child job {child.id} ended, but its outcome "
                f"could not be read in this worker: {exc!r}"
            )
        )


def _settle(child: ChildJob, message: proto.ChildRefused | proto.ChildOutcome) -> None:
    if isinstance(message, proto.ChildRefused):
        child._settle(error=pickle.loads(message.error))
        return
    outcome = message.outcome
    job = child.id if child.id is not None else 0
    if isinstance(outcome, proto.Done):
        child._settle(pickle.loads(outcome.result))
    elif isinstance(outcome, proto.Failed):
        child._settle(error=load_error(outcome.error, outcome.traceback, job))
    else:
        child._settle(
            error=JobCancelled(
                CancelationReason(outcome.reason),
                outcome.message,
                job_id=str(job),
                partial_result=load_partial(outcome.partial),
            )
        )

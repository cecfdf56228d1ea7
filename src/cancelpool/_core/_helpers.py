"""Small helpers the seed library offers next to ``Cancelable``.

``with_timeout`` runs one awaitable under a deadline, ``ensure_cancelable`` narrows an
injected parameter, ``cancelable_stream``, ``CancelableAsyncIterator`` and
``chunked_cancelable_stream`` make any async iterator cancellable, and the callback
type aliases name what the callbacks receive.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import anyio

from ._body import STREAM_BUFFER_SIZE, check_report_interval
from ._cancelable import Cancelable, timeout_name
from ._exceptions import CancelationError
from ._hooks import ErrorCallback, ProgressCallback, StatusCallback
from ._sources import TimeoutSource
from ._token import CancelationToken
from ._validate import optional_seconds

T = TypeVar("T")

#: The seed library's names for the callback types (sync or async alike).
ProgressCallbackType = ProgressCallback
StatusCallbackType = StatusCallback
ErrorCallbackType = ErrorCallback


async def with_timeout(
    timeout: float | timedelta,  # noqa: ASYNC109 - the seed library's signature
    coro: Awaitable[T],
    operation_id: str | None = None,
    name: str | None = None,
) -> T:
    """Await ``coro`` in an operation cancelled after ``timeout`` seconds.

    Example::

        data = await with_timeout(5.0, fetch())

    Raises:
        TimeoutCancelation: the deadline passed; ``coro`` was cancelled at its
            current await. A cancellation from outside propagates untouched.
    """
    if not inspect.isawaitable(coro):
        raise TypeError(
            f"with_timeout() takes an awaitable such as fetch(), not {type(coro).__name__}"
        )
    async with Cancelable.with_timeout(timeout, name=name, operation_id=operation_id):
        return await coro
    raise AssertionError("unreachable")  # pragma: no cover - the block never swallows


def ensure_cancelable(cancelable: Cancelable | None) -> Cancelable:
    """``cancelable`` itself, for a type checker: an injected parameter is never None.

    Raises:
        RuntimeError: ``cancelable`` is None (the function was not called through a
            decorator that injects the operation).
    """
    if cancelable is None:
        raise RuntimeError(
            "the cancelable parameter is None: call the function through a decorator "
            "that injects it (@cancelable), or pass an operation explicitly"
        )
    return cancelable


async def cancelable_stream(
    stream: AsyncIterable[T],
    timeout: float | timedelta | None = None,  # noqa: ASYNC109 - the seed's signature
    token: CancelationToken | None = None,
    report_interval: int | None = None,
    on_progress: Callable[[int, T], Any] | None = None,
    buffer_partial: bool = False,
    operation_id: str | None = None,
    name: str | None = None,
) -> AsyncIterator[T]:
    """Iterate ``stream`` under a deadline for the whole stream and/or a token.

    Example::

        async for row in cancelable_stream(rows(), timeout=30, token=stop):
            ...

    Each wait for the next item runs in its own short operation (a cancel scope
    never spans a ``yield``, which anyio and trio forbid), so the deadline and the
    token interrupt a wait at once, while the consumer's own code between items is
    never cancelled from under it.

    Args:
        stream: any async iterable.
        timeout: seconds the whole stream may take.
        token: stops the stream when cancelled.
        report_interval: call ``on_progress(count, latest_item)`` every this many.
        on_progress: sync or async callback for progress.
        buffer_partial: keep the items read so far; a cancellation error's
            ``partial_result`` is then ``{"count": n, "buffer": [...]}``.
        operation_id: id of the operations made for the waits.
        name: their name. The seed library's defaults: ``stream_timeout`` with a
            timeout, ``stream_token`` with a token, ``stream`` with neither; with both
            it combines the two, so the name is ``combined_<name>`` (``name``
            defaulting to ``timeout_<seconds>s``).

    Raises:
        TimeoutCancelation: the deadline passed while waiting for an item.
        ManualCancelation: the token was cancelled (checked before each item too).
    """
    seconds = optional_seconds(timeout, "timeout")
    check_report_interval(report_interval)
    if token is not None and not isinstance(token, CancelationToken):
        raise TypeError(f"token must be a CancelationToken, not {type(token).__name__}")
    if not hasattr(stream, "__aiter__"):
        raise TypeError(f"cancelable_stream() takes an async iterable, not {type(stream).__name__}")
    deadline = None if seconds is None else anyio.current_time() + seconds
    iterator = stream.__aiter__()
    buffer: list[T] = []
    count = 0
    label = _stream_name(name, timeout, token)
    while True:
        op = Cancelable(label, operation_id=operation_id)
        if token is not None:
            op.add_token(token)
        if deadline is not None:
            op.add_source(TimeoutSource(max(deadline - anyio.current_time(), 0.0)))
        try:
            async with op:
                try:
                    item = await iterator.__anext__()
                except StopAsyncIteration:
                    return
        except CancelationError as exc:
            if exc.context is not None:
                exc.context.partial_result = {
                    "count": count,
                    "buffer": buffer if buffer_partial else None,
                }
            raise
        count += 1
        if buffer_partial:
            buffer.append(item)
        if on_progress is not None and report_interval and count % report_interval == 0:
            result = on_progress(count, item)
            if inspect.isawaitable(result):
                await result
        yield item


def _stream_name(
    name: str | None, timeout: float | timedelta | None, token: CancelationToken | None
) -> str:
    # As the seed library names the operation it makes for a stream.
    if timeout is not None and token is not None:
        return f"combined_{name or timeout_name(timeout)}"
    if name:
        return name
    if timeout is not None:
        return "stream_timeout"
    return "stream" if token is None else "stream_token"


class CancelableAsyncIterator(AsyncIterator[T]):
    """``iterator``, checking ``cancelable``'s cancellation before each item (the seed
    library's class-based twin of :meth:`Cancelable.stream`).

    Example::

        async with Cancelable.with_timeout(30) as op:
            async for row in CancelableAsyncIterator(rows(), op, buffer_partial=True):
                ...

    Use it inside the operation's ``async with``: each ``__anext__`` is a checkpoint
    that unwinds the operation if it has been cancelled (the operation's block then
    raises the matching :class:`CancelationError`). With ``buffer_partial`` the
    operation's ``partial_result`` becomes ``{"count", "buffer", "completed"}`` when
    the iteration ends, is cancelled or fails (the buffer keeps the last
    ``STREAM_BUFFER_SIZE`` items).
    """

    def __init__(
        self,
        iterator: AsyncIterator[T],
        cancelable: Cancelable,
        report_interval: int | None = None,
        buffer_partial: bool = False,
    ) -> None:
        if not hasattr(iterator, "__anext__"):
            raise TypeError(f"expected an async iterator, not {type(iterator).__name__}")
        if not isinstance(cancelable, Cancelable):
            raise TypeError(f"cancelable must be a Cancelable, not {type(cancelable).__name__}")
        check_report_interval(report_interval)
        self._iterator = iterator
        self._cancelable = cancelable
        self._report_interval = report_interval
        self._buffer: list[T] | None = [] if buffer_partial else None
        self._count = 0

    def __aiter__(self) -> CancelableAsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            await self._cancelable.check_cancelation()
            item = await self._iterator.__anext__()
        except StopAsyncIteration:
            self._keep(completed=True)
            raise
        except BaseException:
            self._keep(completed=False)  # recorded; the exception goes on as it was
            # The wrapped iterator will not be asked again: close it now (shielded, so
            # that a cancellation unwinding us lets its clean-up run), not when the
            # garbage collector finds it.
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise
        self._count += 1
        if self._buffer is not None:
            self._buffer.append(item)
            if len(self._buffer) > STREAM_BUFFER_SIZE:
                del self._buffer[0]
        interval = self._report_interval
        if interval is not None and self._count % interval == 0:
            await self._cancelable.report_progress(
                f"Processed {self._count} items", {"count": self._count, "latest_item": item}
            )
        return item

    def _keep(self, *, completed: bool) -> None:
        if self._buffer is not None:
            self._cancelable.context.partial_result = {
                "count": self._count,
                "buffer": self._buffer,
                "completed": completed,
            }

    async def aclose(self) -> None:
        """Close the wrapped iterator, if it can be closed."""
        close = getattr(self._iterator, "aclose", None)
        if close is not None:
            await close()


async def chunked_cancelable_stream(
    stream: AsyncIterable[T], chunk_size: int, cancelable: Cancelable
) -> AsyncIterator[list[T]]:
    """The items of ``stream`` in lists of ``chunk_size`` (the last may be shorter),
    read through ``cancelable.stream()``: a checkpoint before each item, a progress
    report after each chunk ("Processed chunk of N items", then "Processed final chunk
    of N items"), as the seed library words them.

    Raises:
        ValueError: ``chunk_size`` is not a positive int (at the first iteration).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, not {chunk_size!r}")
    chunk: list[T] = []
    async for item in cancelable.stream(stream):
        chunk.append(item)
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
            await cancelable.report_progress(f"Processed chunk of {chunk_size} items")
    if chunk:
        yield chunk
        await cancelable.report_progress(f"Processed final chunk of {len(chunk)} items")

"""Helpers for an operation's body that check its cancellation as they go:
``op.stream(...)`` and ``op.wrap(fn)``. Built on the operation's public methods only.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from ._cancelable import Cancelable

T = TypeVar("T")
P = ParamSpec("P")

#: Items of a stream kept for its partial result (the seed library's bound): more
#: costs memory per stream, fewer hands back less of a cancelled one.
STREAM_BUFFER_SIZE = 1000


def check_report_interval(report_interval: int | None) -> None:
    if report_interval is not None and (
        isinstance(report_interval, bool)
        or not isinstance(report_interval, int)
        or report_interval <= 0
    ):
        raise ValueError(
            f"report_interval must be a positive number of items, not {report_interval!r}"
        )


async def stream_items(
    op: Cancelable, source: AsyncIterable[T], report_interval: int | None, buffer_partial: bool
) -> AsyncIterator[T]:
    """Iterate ``source`` in ``op`` (see :meth:`Cancelable.stream`): a checkpoint before
    each item is handed out, the partial result kept up to date item by item."""
    seen: list[T] | None = [] if buffer_partial else None
    partial: dict[str, Any] = {"count": 0, "buffer": seen, "completed": False}
    op.context.partial_result = partial
    count = 0
    async for item in source:
        await op.check_cancelation()
        count += 1
        partial["count"] = count
        if seen is not None:
            seen.append(item)
            if len(seen) > STREAM_BUFFER_SIZE:
                del seen[0]
        if report_interval is not None and count % report_interval == 0:
            await op.report_progress(
                f"Processed {count} items", {"count": count, "latest_item": item}
            )
        yield item
    partial["completed"] = True


def wrap_call(op: Cancelable, fn: Callable[P, Awaitable[T] | T]) -> Callable[P, Awaitable[T]]:
    """``fn`` made async, checking ``op``'s cancellation before each call."""

    @functools.wraps(fn)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> T:
        await op.check_cancelation()
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            return await result
        return result

    return wrapped

"""An operation that ends, cancelled or not, leaves no reference cycle behind.

A cycle per operation is freed only by CPython's cyclic collector, and its full
collections scan the whole heap: in a worker running 50,000 jobs, a cancel_all then
spent seconds in them. Reference counting alone must free what an operation leaves.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, Iterator

import anyio
import pytest

from cancelpool import Cancelable, CancelationToken, OperationContext


@pytest.fixture
def save_all() -> Iterator[None]:
    """While the test runs, what the cyclic collector frees is kept in ``gc.garbage``."""
    gc.collect()
    flags = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()


async def _cancelled_by_token() -> None:
    token = CancelationToken()
    async with anyio.create_task_group() as tg:

        async def job() -> None:
            async with Cancelable.with_token(token):
                await anyio.sleep(100)

        tg.start_soon(job)
        await anyio.wait_all_tasks_blocked()
        await token.cancel(message="stop")


async def _timed_out() -> None:
    async with Cancelable.with_timeout(0.001):
        await anyio.sleep(100)


async def _failed() -> None:
    async with Cancelable(name="fails"):
        raise ValueError("boom")


async def _completed() -> None:
    async with Cancelable(name="ok"):
        await anyio.sleep(0)


async def _token_read() -> None:
    # The operation's token (what sync code and threads poll) refers back to it.
    async with Cancelable.with_timeout(10, name="polled") as op:
        assert not op.token.is_cancelled


@pytest.mark.anyio
@pytest.mark.parametrize(
    "end",
    [_cancelled_by_token, _timed_out, _failed, _completed, _token_read],
    ids=lambda f: f.__name__,
)
async def test_an_ended_operation_leaves_no_cycle(
    end: Callable[[], Awaitable[None]], save_all: None
) -> None:
    for _ in range(5):
        try:
            await end()
        except BaseException as exc:  # each way of ending is the subject
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
    gc.collect()
    ours = [o for o in gc.garbage if isinstance(o, Cancelable | OperationContext)]
    assert ours == [], f"{len(ours)} operations freed only by the cyclic collector"

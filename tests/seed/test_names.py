"""The seed library's default names, which programs match on (logs, the registry,
``cancel_all(pattern)``): one test per factory that names an operation itself."""

# An operation's body is what a ``pytest.raises`` block runs: several statements.
# ruff: noqa: PT012

from __future__ import annotations

import signal
from datetime import timedelta
from typing import Any

import anyio
import pytest

from _handshake import BACKSTOP
from cancelpool import (
    Cancelable,
    CancelationToken,
    ManualCancelation,
    TimeoutCancelation,
    cancelable,
    cancelable_method,
    cancelable_stream,
    current_operation,
    with_timeout,
)

FOREVER = 3600


@pytest.mark.parametrize(
    ("timeout", "name"),
    [
        (5, "timeout_5s"),
        (5.0, "timeout_5.0s"),
        (0.5, "timeout_0.5s"),
        (timedelta(seconds=5), "timeout_5.0s"),
        (timedelta(milliseconds=250), "timeout_0.25s"),
    ],
)
def test_unnamed_with_timeout_is_named_after_its_seconds(timeout: Any, name: str) -> None:
    assert Cancelable.with_timeout(timeout).name == name
    assert Cancelable.with_timeout(timeout, name="mine").name == "mine"


def test_unnamed_factories_take_the_seed_names() -> None:
    assert Cancelable.with_token(CancelationToken()).name == "token_based"
    assert Cancelable.with_signal(signal.SIGUSR1).name == "signal_based"
    assert Cancelable.with_condition(lambda: False).name == "condition_based"
    assert Cancelable().name is None
    # An explicit name always wins.
    assert Cancelable.with_token(CancelationToken(), name="t").name == "t"
    assert Cancelable.with_signal(signal.SIGUSR1, name="s").name == "s"
    assert Cancelable.with_condition(lambda: False, name="c").name == "c"


def test_a_default_name_shows_in_the_timeout_message() -> None:
    with pytest.raises(TimeoutCancelation, match=r"'timeout_0\.01s' timed out after 0\.01s"):
        anyio.run(_sleep_in, Cancelable.with_timeout(0.01))


async def _sleep_in(op: Cancelable) -> None:
    async with op:
        await anyio.sleep(FOREVER)


@pytest.mark.anyio
async def test_with_timeout_helper_names_its_operation_as_the_seed() -> None:
    async def name_of_current() -> str | None:
        op = current_operation()
        assert op is not None
        return op.name

    assert await with_timeout(BACKSTOP, name_of_current()) == f"timeout_{BACKSTOP}s"
    assert await with_timeout(BACKSTOP, name_of_current(), name="n") == "n"


@pytest.mark.anyio
async def test_decorators_default_to_the_function_and_method_names() -> None:
    @cancelable(timeout=BACKSTOP)
    async def fetch(cancelable: Cancelable) -> str | None:
        return cancelable.name

    class Downloader:
        @cancelable_method(timeout=BACKSTOP)
        async def get(self, cancelable: Cancelable) -> str | None:
            return cancelable.name

    assert await fetch() == "fetch"
    assert await Downloader().get() == "Downloader.get"


@pytest.mark.anyio
async def test_shield_tracker_is_named_after_its_operation() -> None:
    async with Cancelable(name="job") as op, op.shield() as tracker:
        assert tracker.name == "job_shielded"


async def _forever() -> Any:
    yield 0
    await anyio.sleep(FOREVER)
    yield 1  # pragma: no cover


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"token": True}, "stream_token"),
        ({"token": True, "name": "rows"}, "rows"),
        ({"token": True, "timeout": FOREVER}, f"combined_timeout_{FOREVER}s"),
        ({"token": True, "timeout": FOREVER, "name": "rows"}, "combined_rows"),
    ],
)
async def test_cancelable_stream_names_its_operations_as_the_seed(
    options: dict[str, Any], name: str
) -> None:
    token = CancelationToken()
    kwargs = {**options, "token": token}
    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation) as info:
        async for _ in cancelable_stream(_forever(), **kwargs):
            token.cancel_sync("stop")
    assert info.value.context is not None
    assert info.value.context.name == name


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "name"),
    [({"timeout": FOREVER}, "stream_timeout"), ({}, "stream"), ({"name": "rows"}, "rows")],
)
async def test_cancelable_stream_without_a_token_is_named_as_the_seed(
    options: dict[str, Any], name: str
) -> None:
    async def names() -> Any:
        # Each wait for an item runs in the stream's operation.
        op = current_operation()
        yield None if op is None else op.name

    assert [n async for n in cancelable_stream(names(), **options)] == [name]

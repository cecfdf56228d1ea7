"""The seed library's module paths: ``from hother.cancelable.X import Y`` becomes
``from cancelpool.X import Y`` (the same objects), and the stream helpers that only
live there."""

# An operation's body is what a ``pytest.raises`` block runs: several statements.
# ruff: noqa: PT012

from __future__ import annotations

import importlib
from typing import Any

import anyio
import pytest

import cancelpool
import cancelpool.testing
from _handshake import BACKSTOP
from cancelpool import Cancelable, ManualCancelation, TimeoutCancelation
from cancelpool.utils.streams import CancelableAsyncIterator, chunked_cancelable_stream

FOREVER = 3600

# Every seed module path a program imports from, with the names it finds there
# (the seed documents' imports and the seed's own modules).
SEED_PATHS = {
    "core": ["Cancelable", "CancelationToken", "OperationRegistry", "current_operation"],
    "core.cancelable": ["Cancelable", "current_operation"],
    "core.exceptions": [
        "CancelationError",
        "ConditionCancelation",
        "ManualCancelation",
        "ParentCancelation",
        "SignalCancelation",
        "TimeoutCancelation",
    ],
    "core.models": ["CancelationReason", "OperationContext", "OperationStatus"],
    "core.registry": ["OperationRegistry"],
    "core.token": ["CancelationToken", "LinkedCancelationToken"],
    "sources": ["AllOfSource", "AnyOfSource", "CompositeSource", "TimeoutSource"],
    "sources.base": ["CancelationSource"],
    "sources.composite": ["AllOfSource", "AnyOfSource", "CompositeSource"],
    "sources.condition": ["ConditionSource", "ResourceConditionSource"],
    "sources.signal": ["SignalSource"],
    "sources.timeout": ["TimeoutSource"],
    "types": ["ErrorCallbackType", "ProgressCallbackType", "StatusCallbackType"],
    "utils.anyio_bridge": ["AnyioBridge", "call_soon_threadsafe"],
    "utils.context_bridge": ["ContextBridge"],
    "utils.decorators": ["cancelable", "cancelable_combine", "with_current_operation"],
    "utils.threading_bridge": ["ThreadSafeRegistry"],
    "utils.streams": ["cancelable_stream"],
    "utils.testing": ["CancelationScenario", "MockCancelationToken", "sample_async_operation"],
}


@pytest.mark.parametrize("path", sorted(SEED_PATHS))
def test_seed_module_path_gives_the_same_objects(path: str) -> None:
    module = importlib.import_module(f"cancelpool.{path}")
    assert list(module.__all__) == sorted(module.__all__)
    for name in SEED_PATHS[path]:
        assert name in module.__all__
        home = cancelpool.testing if path == "utils.testing" else cancelpool
        assert getattr(module, name) is getattr(home, name)


async def _count(n: int) -> Any:
    for i in range(n):
        await anyio.lowlevel.checkpoint()
        yield i


@pytest.mark.anyio
async def test_cancelable_async_iterator_checks_before_each_item_and_keeps_partial() -> None:
    reports: list[str] = []
    op = Cancelable(name="rows").on_progress(lambda _id, message, _meta: reports.append(message))
    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation):
        async with op:
            async for i in CancelableAsyncIterator(_count(100), op, 2, buffer_partial=True):
                if i == 4:
                    op.cancel_sync("enough")
    assert op.context.partial_result == {"count": 5, "buffer": [0, 1, 2, 3, 4], "completed": False}
    assert reports == ["Processed 2 items", "Processed 4 items"]

    async with Cancelable() as done:
        items = [i async for i in CancelableAsyncIterator(_count(3), done, buffer_partial=True)]
    assert items == [0, 1, 2]
    assert done.context.partial_result == {"count": 3, "buffer": [0, 1, 2], "completed": True}
    with pytest.raises(TypeError, match="async iterator"):
        CancelableAsyncIterator([1, 2], Cancelable())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="report_interval"):
        CancelableAsyncIterator(_count(1), Cancelable(), 0)


@pytest.mark.anyio
async def test_chunked_cancelable_stream_reports_each_chunk() -> None:
    reports: list[str] = []
    async with Cancelable().on_progress(lambda _id, m, _meta: reports.append(m)) as op:
        chunks = [c async for c in chunked_cancelable_stream(_count(7), 3, op)]
    assert chunks == [[0, 1, 2], [3, 4, 5], [6]]
    assert reports == [
        "Processed chunk of 3 items",
        "Processed chunk of 3 items",
        "Processed final chunk of 1 items",
    ]

    async def stalls() -> Any:
        yield 1
        await anyio.sleep(FOREVER)
        yield 2  # pragma: no cover

    with anyio.fail_after(BACKSTOP), pytest.raises(TimeoutCancelation):
        async with Cancelable.with_timeout(0.01) as slow:
            async for _ in chunked_cancelable_stream(stalls(), 1, slow):
                pass
    with pytest.raises(ValueError, match="chunk_size"):
        async with Cancelable() as bad:
            async for _ in chunked_cancelable_stream(_count(1), 0, bad):
                pass

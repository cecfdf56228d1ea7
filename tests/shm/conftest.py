"""Fixtures for the shared-memory token table tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from _leaks import assert_no_leftovers, live_children
from _leaks import dev_shm as dev_shm_entries
from cancelpool.shm import TokenTable


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Assert that the test leaves no /dev/shm entry and no child process behind."""
    before = dev_shm_entries()
    assert not live_children(), "a previous test left a child process behind"
    yield
    assert_no_leftovers(before)


@pytest.fixture
def table() -> Iterator[TokenTable]:
    """A writer table of 8 slots, closed after the test."""
    with TokenTable.create(8) as t:
        yield t


@pytest.fixture
def reader(table: TokenTable) -> Iterator[TokenTable]:
    """A second, reader view of ``table`` in this process, as a worker would have."""
    with TokenTable.attach(os.dup(table.fileno())) as r:
        yield r


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture
def dev_shm() -> Any:
    """The function that lists /dev/shm (semaphores excluded), for before/after checks."""
    return dev_shm_entries

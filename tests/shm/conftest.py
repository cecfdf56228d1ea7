"""Fixtures for the shared-memory token table tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from cancelpool.shm import TokenTable

# multiprocessing's long-lived helpers (started once per test process) are not leaks.
_MP_HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


def dev_shm_entries() -> set[str]:
    """Names in /dev/shm, minus the POSIX semaphores multiprocessing creates and unlinks
    at once (another test running in parallel may own one for a moment)."""
    try:
        names = os.listdir("/dev/shm")
    except FileNotFoundError:  # pragma: no cover - no /dev/shm on this system
        return set()
    return {name for name in names if not name.startswith("sem.")}


def leftover_children() -> list[psutil.Process]:
    """Descendants of this process, except multiprocessing's helpers and zombies."""
    leftovers = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if not any(helper in cmdline for helper in _MP_HELPERS):
            leftovers.append(child)
    return leftovers


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Assert that the test leaves no /dev/shm entry and no child process behind."""
    before = dev_shm_entries()
    assert not leftover_children(), "a previous test left a child process behind"
    yield
    assert dev_shm_entries() - before == set()
    assert leftover_children() == []


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

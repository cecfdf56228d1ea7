"""Fixtures for the lifecycle-event tests: the pool suite's pools and leftover check,
with pools started by their first ``submit()`` (so that a subscriber sees the first
workers start)."""

from __future__ import annotations

import pytest

from _pools import _no_leftovers, make_pool, pool, pool_options, shared_pool

__all__ = ("_no_leftovers", "make_pool", "pool", "pool_options", "pool_starts", "shared_pool")


@pytest.fixture
def pool_starts() -> bool:
    return False

"""Fixtures of the metrics tests: the pool suite's pools (started by their first
``submit()``, so that the metrics count the first workers) and leftover check."""

from __future__ import annotations

import pytest

from _pools import _no_leftovers, make_pool, pool_options

__all__ = ("_no_leftovers", "make_pool", "pool_options", "pool_starts")


@pytest.fixture
def pool_starts() -> bool:
    return False

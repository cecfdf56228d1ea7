"""Helpers shared by the fault tests: processes, /dev/shm, job trees."""

from __future__ import annotations

from typing import Any

from _leaks import (
    EXIT_BACKSTOP,
    assert_no_leftovers,
    assert_no_new_shm,
    dev_shm,
    is_gone,
    live_children,
)
from cancelpool import CancelPool, JobHandle

__all__ = (
    "EXIT_BACKSTOP",
    "assert_no_leftovers",
    "assert_no_new_shm",
    "dev_shm",
    "is_gone",
    "live_children",
)


def descendants(pool: CancelPool, root: JobHandle[Any]) -> list[JobHandle[Any]]:
    """Every job of ``pool`` (live or in its history) below ``root``."""
    found = []
    for handle in pool.jobs():
        parent = handle.parent
        while parent is not None:
            if parent is root:
                found.append(handle)
                break
            parent = parent.parent
    return found

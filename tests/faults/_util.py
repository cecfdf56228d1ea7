"""Helpers shared by the fault tests: processes, /dev/shm, job trees."""

from __future__ import annotations

import time
from typing import Any

import psutil

from _leaks import EXIT_BACKSTOP, dev_shm, is_gone, live_children
from cancelpool import CancelPool, JobHandle

__all__ = ("EXIT_BACKSTOP", "dev_shm", "is_gone", "live_children")


def assert_no_new_shm(before: set[str]) -> None:
    """No new ``/dev/shm`` entry (a parallel test's short-lived one may come and go)."""
    deadline = time.monotonic() + EXIT_BACKSTOP
    new = dev_shm() - before
    while new and time.monotonic() < deadline:
        time.sleep(0.05)  # backstop poll for a parallel test's short-lived entry
        new = dev_shm() - before
    assert not new, f"/dev/shm entries left behind: {sorted(new)}"


def assert_no_leftovers(shm_before: set[str]) -> None:
    """No child process (but the helpers) and no new /dev/shm entry remain."""
    leftovers = live_children()
    if leftovers:
        _gone, alive = psutil.wait_procs(leftovers, timeout=EXIT_BACKSTOP)
        described = []
        for proc in alive:
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                described.append(f"{proc.pid} {' '.join(proc.cmdline())}")
                proc.kill()  # so that one leak does not fail every test after it
            except psutil.Error:
                pass
        assert not described, f"child processes left running: {described}"
    assert_no_new_shm(shm_before)


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

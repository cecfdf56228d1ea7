"""What a test may leave behind: nothing. Child processes and /dev/shm entries, looked up.

Shared by the pool, fault and peer suites. multiprocessing's fork server and resource tracker
are long-lived helpers of the test process, not leftovers; zombies run nothing.
"""

from __future__ import annotations

import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import time
from collections.abc import Iterable

import psutil

# Seconds a finished pool's processes get to disappear before they count as leaked. A
# backstop against a hang, not a synchronization: shutdown(wait=True) already joined them.
EXIT_BACKSTOP = 30.0


# Processes a session fixture owns for the whole run (a PostgreSQL server): they and
# their descendants are the fixture's, which stops them at the end of the session.
_SESSION_HELPERS: set[int] = set()


def session_helper(pid: int) -> None:
    """Mark ``pid`` (and its descendants) as a session fixture's, not a test's leftover."""
    _SESSION_HELPERS.add(pid)


def helper_pids() -> set[int]:
    """The fork server's, the resource tracker's and the session fixtures' pids (with
    their descendants), where they run."""
    forkserver_pid = getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)
    tracker_pid = getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None)
    pids = {pid for pid in (forkserver_pid, tracker_pid) if pid is not None}
    for pid in _SESSION_HELPERS:
        try:
            helper = psutil.Process(pid)
            pids |= {pid, *(child.pid for child in helper.children(recursive=True))}
        except psutil.NoSuchProcess:
            continue
    return pids


def live_children(allowed: Iterable[int] = ()) -> list[psutil.Process]:
    """Child processes of this test process, but the helpers, ``allowed`` and zombies."""
    skip = helper_pids() | set(allowed)
    alive = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in skip:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue  # dead; only waiting for its parent (the fork server) to reap it
        except psutil.NoSuchProcess:
            continue
        alive.append(child)
    return alive


def is_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts: it runs nothing any more)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def dev_shm() -> set[str]:
    """The entries of /dev/shm, but multiprocessing's short-lived semaphores."""
    try:
        names = os.listdir("/dev/shm")
    except FileNotFoundError:  # pragma: no cover - no /dev/shm on this system
        return set()
    # multiprocessing's POSIX semaphores are created and unlinked at once; another test
    # process running in parallel may hold one for a moment.
    return {name for name in names if not name.startswith("sem.")}


def assert_no_new_shm(before: set[str], foreign: tuple[str, ...] = ()) -> None:
    """No new ``/dev/shm`` entry (a parallel test's short-lived one may come and go);
    entries named with a ``foreign`` prefix belong to other programs."""

    def new_entries() -> set[str]:
        return {name for name in dev_shm() - before if not name.startswith(foreign)}

    deadline = time.monotonic() + EXIT_BACKSTOP
    new = new_entries()
    while new and time.monotonic() < deadline:
        time.sleep(0.05)  # backstop poll for a parallel test's short-lived entry
        new = new_entries()
    assert not new, f"/dev/shm entries left behind: {sorted(new)}"


def assert_no_leftovers(
    shm_before: set[str], allowed: Iterable[int] = (), foreign_shm: tuple[str, ...] = ()
) -> None:
    """No child process (but the helpers and ``allowed``) and no new /dev/shm entry
    (but those named with a ``foreign_shm`` prefix) remain. The one leftover check of
    the pool, fault and peer suites."""
    leftovers = live_children(allowed)
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
    assert_no_new_shm(shm_before, foreign_shm)

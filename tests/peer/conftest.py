"""Fixtures for the port of CPython's executor tests: a pool per start method.

CPython runs each of its ``ProcessPoolExecutor`` tests under fork, forkserver and spawn;
so does this port, through the ``start_method`` parameter. Every test ends clean: no
child process of the test process is left (but multiprocessing's fork server and
resource tracker) and no new ``/dev/shm`` entry exists.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from _leaks import EXIT_BACKSTOP, dev_shm, live_children
from cancelpool import CancelPool

# CPython's ExecutorMixin starts 5 workers; 3 are enough for every test here (none needs
# more than 3 jobs running at once) and cost less on a 2-core machine.
WORKERS = 3

START_METHODS = ("forkserver", "spawn", "fork")

TESTS_DIR = Path(__file__).resolve().parents[1]
SRC_DIR = Path(__import__("cancelpool").__file__).resolve().parents[1]


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    """Each test runs under every start method, as CPython's mixins do."""
    return str(request.param)


def assert_clean_end(shm_before: set[str]) -> None:
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
                proc.kill()  # ours (a child of this test), so one leak fails one test
            except psutil.Error:
                pass
        assert not described, f"child processes left running: {described}"
    deadline = time.monotonic() + EXIT_BACKSTOP
    new = dev_shm() - shm_before
    while new and time.monotonic() < deadline:
        time.sleep(0.05)  # backstop poll for a parallel test's short-lived entry
        new = dev_shm() - shm_before
    assert not new, f"/dev/shm entries left behind: {sorted(new)}"


@pytest.fixture(autouse=True)
def _clean_end() -> Iterator[None]:
    before = dev_shm()
    yield
    assert_clean_end(before)


@pytest.fixture
def make_pool(start_method: str) -> Iterator[Callable[..., CancelPool]]:
    """``make_pool(**options)``: a started pool on this test's start method, shut down
    (wait=True) after the test if the test did not."""
    pools: list[CancelPool] = []

    def make(**options: Any) -> CancelPool:
        options.setdefault("workers", WORKERS)
        options.setdefault("start_method", start_method)
        pool = CancelPool(**options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown(wait=True)


@pytest.fixture
def executor(make_pool: Callable[..., CancelPool]) -> CancelPool:
    """CPython's ``self.executor``: a started, primed pool (every worker ran a job)."""
    pool = make_pool()
    # CPython primes its executor with one sleep per worker; a pool starts all its
    # workers at once, so one job proves the pool is up.
    assert pool.submit(pow, 2, 2).result(timeout=EXIT_BACKSTOP) == 4
    return pool


def subprocess_env() -> dict[str, str]:
    """The environment for a child interpreter: ``tests/`` (for ``peer._jobs``) and the
    cancelpool under test first on ``PYTHONPATH``, the rest of it kept."""
    env = dict(os.environ)
    parts = [str(TESTS_DIR), str(SRC_DIR), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def python_command() -> list[str]:
    return [sys.executable, "-X", "faulthandler"]

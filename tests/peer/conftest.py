"""Fixtures for the port of CPython's executor tests: a pool per start method.

CPython runs each of its ``ProcessPoolExecutor`` tests under fork, forkserver and spawn;
so does this port, through the ``start_method`` parameter. The pool fixture, its
teardown policy and the leftover check are the ones of every process suite
(``tests/_pools.py``): every test ends with no child process of the test process left
(but multiprocessing's fork server and resource tracker) and no new ``/dev/shm`` entry.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _leaks import EXIT_BACKSTOP
from _pools import _no_leftovers, make_pool
from cancelpool import CancelPool

__all__ = ("_no_leftovers", "make_pool")

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


@pytest.fixture
def pool_options(start_method: str) -> dict[str, Any]:
    """This suite's pools: ``WORKERS`` workers on the test's start method."""
    return {"workers": WORKERS, "start_method": start_method}


@pytest.fixture
def pool_starts() -> bool:
    """Not started by the fixture: as with ``ProcessPoolExecutor``, the first
    ``submit()`` starts a pool (``make_pool`` tears it down either way)."""
    return False


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

"""cancelpool's pytest plugin, used as a user would: a test project of its own (written
by pytester into a temporary directory) whose tests take the plugin's fixtures, run by
a real pytest in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import psutil
import pytest

pytest_plugins = ("pytester",)

ROOT = Path(__file__).resolve().parents[2]

TASKS = """
import os
import anyio
from cancelpool import current_operation, current_pool


async def add(a, b):
    return a + b


async def where():
    return os.getpid()


async def count_up(n):
    op = current_operation()
    total = 0
    for i in range(n):
        total += i
        op.context.partial_result = total
        await op.report_progress(f"step {i}", {"done": i + 1, "total": n})
        await anyio.sleep(0.01)  # stands for a slow call
    return total


async def parent_of_two():
    pool = current_pool()
    return [await pool.submit(add, 1, 1), await pool.submit(add, 2, 2)]
"""

USER_TESTS = """
import os
import threading

import pytest

import mytasks
from cancelpool import CancelationReason, JobCancelled, current_operation
from cancelpool.queue import JobStatus, TaskNotAllowed


def test_the_pool_is_inline_by_default(cancelpool_pool):
    assert "inline" in repr(cancelpool_pool)
    assert cancelpool_pool.submit(mytasks.add, 2, 3).result(60) == 5
    assert cancelpool_pool.submit(mytasks.where).result(60) == os.getpid()
    assert cancelpool_pool.submit(mytasks.parent_of_two).result(60) == [2, 4]


def test_a_cancel_keeps_the_partial_result(cancelpool_pool):
    three = threading.Event()
    handle = cancelpool_pool.submit(mytasks.count_up, 10_000, name="user_7_sum")
    handle.on_progress(lambda job, message, meta: meta["done"] >= 3 and three.set())
    assert three.wait(60)
    assert cancelpool_pool.cancel_all("user_7_*", message="enough") == 1
    exc = handle.exception(60)
    assert isinstance(exc, JobCancelled)
    assert exc.reason is CancelationReason.MANUAL
    assert exc.message == "enough"
    assert exc.partial_result >= 3


def test_a_timeout(cancelpool_pool):
    exc = cancelpool_pool.submit(mytasks.count_up, 10_000, timeout=0.2).exception(60)
    assert isinstance(exc, JobCancelled)
    assert exc.reason is CancelationReason.TIMEOUT


@pytest.mark.cancelpool(inline=False, workers=1)
def test_worker_processes_when_asked(cancelpool_pool):
    assert "inline" not in repr(cancelpool_pool)
    assert cancelpool_pool.submit(mytasks.where).result(60) != os.getpid()


def test_a_queue_on_a_temporary_db(cancelpool_queue, cancelpool_queue_path, tmp_path):
    job = cancelpool_queue.submit("mytasks:add", 1, 2)
    assert cancelpool_queue.get(job).status is JobStatus.QUEUED
    assert cancelpool_queue_path.is_relative_to(tmp_path)
    assert cancelpool_queue_path.exists()


@pytest.mark.cancelpool(allow=["mytasks:*"])
def test_a_real_server(cancelpool_server):
    queue = cancelpool_server.queue
    job = queue.submit("mytasks:add", 2, 3)
    assert queue.wait(job, timeout=60, need_server=True).result == 5
    steps = queue.submit("mytasks:count_up", 5)
    record = queue.wait(steps, timeout=60, need_server=True)
    assert (record.status, record.result) == (JobStatus.COMPLETED, 10)
    with pytest.raises(TaskNotAllowed):
        queue.submit("os:system", "id")
    assert cancelpool_server.proc.poll() is None


@pytest.mark.cancelpool("positional")
def test_a_positional_marker_is_refused(cancelpool_pool):
    pass
"""


def _processes_naming(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(text in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def test_the_entry_point_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["pytest11"] == {
        "cancelpool": "cancelpool.pytest_plugin"
    }


def test_the_plugin_is_light_to_load() -> None:
    # pytest loads plugins in every project at start-up: loading this one costs the
    # light ``import cancelpool`` and nothing more (no queue, sqlite3 or psutil).
    code = (
        "import sys, cancelpool.pytest_plugin\n"
        "print(sorted(m for m in ('sqlite3', 'psutil', 'cancelpool.queue', 'cancelpool.cli')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_a_user_project_uses_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(mytasks=TASKS, test_user=USER_TESTS)
    # The entry point may or may not be installed here: load the module explicitly.
    result = pytester.runpytest_subprocess(
        "-p", "no:cancelpool", "-p", "cancelpool.pytest_plugin", "-v", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=6, errors=1)
    result.stdout.fnmatch_lines(["*cancelpool takes keyword options only*"])
    # Nothing of the project's server or pools outlives its run (a fork server that
    # names the project's path on its command line exits once its parent has: waited
    # for up to a backstop).
    _gone, alive = psutil.wait_procs(_processes_naming(str(pytester.path)), timeout=60)
    assert alive == []


SERVER_TEST = """
import pytest


@pytest.mark.cancelpool(allow=["mytasks:*"])
def test_a_real_server(cancelpool_server):
    job = cancelpool_server.queue.submit("mytasks:add", 2, 3)
    assert cancelpool_server.queue.wait(job, timeout=60, need_server=True).result == 5
    assert "cancelpool serve: serving" in cancelpool_server.output()
"""


def test_the_server_fixture_ignores_the_developers_serve_settings(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A developer's shell (or a CI job on a deployed host) with their service's settings:
    # a config file this user cannot read, a dashboard port, quiet logs.
    monkeypatch.setenv("CANCELPOOL_CONFIG", str(tmp_path / "not-here.toml"))
    monkeypatch.setenv("CANCELPOOL_HTTP", "not an address")
    monkeypatch.setenv("CANCELPOOL_QUIET", "1")
    pytester.makepyfile(mytasks=TASKS, test_server=SERVER_TEST)
    result = pytester.runpytest_subprocess(
        "-p", "no:cancelpool", "-p", "cancelpool.pytest_plugin", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1)

"""``cancelpool.queue.Queue`` in one process, without a server: validation and bookkeeping."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from qhelpers import DEMO

from cancelpool.queue import InvalidJob, JobNotFinished, JobNotFound, JobStatus, Queue


def test_submit_get_list(queue: Queue) -> None:
    a = queue.submit(f"{DEMO}:add", 1, 2, name="user_1_a", priority=3, timeout=2)
    b = queue.submit(f"{DEMO}:echo", x=[1, {"y": None}], name="user_2_b")
    job = queue.get(a)
    assert job is not None
    assert (job.task, job.args, job.kwargs, job.priority, job.timeout) == (
        f"{DEMO}:add",
        [1, 2],
        {},
        3,
        2.0,
    )
    assert job.status is JobStatus.QUEUED
    assert not job.finished
    assert queue.get(b).kwargs == {"x": [1, {"y": None}]}
    assert queue.get(999) is None
    assert [j.id for j in queue.list(name_pattern="user_2_*")] == [b]
    assert [j.id for j in queue.list(status="queued")] == [a, b]
    assert queue.list(status=["completed", "failed"]) == []
    assert queue.statistics().queued == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"task": "no colon"},
        {"task": "mod:fn", "name": "a b"},
        {"task": "mod:fn", "timeout": 0},
        {"task": "mod:fn", "timeout": True},
        {"task": "mod:fn", "timeout": float("nan")},
        {"task": "mod:fn", "timeout": 366 * 24 * 3600},
        {"task": "mod:fn", "timeout": timedelta(seconds=-1)},
        {"task": "mod:fn", "priority": 1.5},
        {"task": "mod:fn", "parent": 0},
        {"task": "mod:fn", "args": (object(),)},
        {"task": "mod:fn", "args": ("x" * (2 << 20),)},
    ],
)
def test_invalid_submit_raises_and_writes_nothing(queue: Queue, kwargs: dict) -> None:
    kwargs = dict(kwargs)
    args = kwargs.pop("args", ())
    task = kwargs.pop("task")
    with pytest.raises(InvalidJob):
        queue.submit(task, *args, **kwargs)
    assert queue.list() == []


def test_timeouts_follow_the_rule_of_every_layer(queue: Queue) -> None:
    # The same rule as CancelPool.submit and Cancelable: numbers or timedeltas; the
    # queue adds its maximum (a stored deadline of centuries is a typo).
    job = queue.get(queue.submit(f"{DEMO}:add", 1, timeout=timedelta(minutes=2)))
    assert job is not None
    assert job.timeout == 120.0
    with pytest.raises(InvalidJob, match="timeout must be at most 31536000 seconds"):
        queue.submit(f"{DEMO}:add", 1, timeout=timedelta(days=400))
    with pytest.raises(InvalidJob, match="timeout must be a number of seconds or a timedelta"):
        queue.submit(f"{DEMO}:add", 1, timeout="10")


def test_cancel_queued_jobs_and_their_children(queue: Queue) -> None:
    parent = queue.submit(f"{DEMO}:add", 1, 1, name="p")
    child = queue.submit(f"{DEMO}:add", 1, 1, name="c", parent=parent)
    other = queue.submit(f"{DEMO}:add", 1, 1, name="o")
    assert queue.cancel(parent, message="not needed") == 2
    assert queue.get(parent).status == "cancelled"
    assert queue.get(parent).cancel_message == "not needed"
    assert queue.get(child).cancel_reason == "parent"
    assert queue.get(other).status == "queued"
    assert queue.cancel(parent) == 0  # already finished
    with pytest.raises(JobNotFound):
        queue.cancel(other, 12345)
    assert queue.get(other).status == "queued"
    assert queue.cancel_all("o") == 1
    assert queue.wait(other, timeout=0).status == "cancelled"


def test_wait_times_out_and_unknown_jobs(queue: Queue) -> None:
    job_id = queue.submit(f"{DEMO}:add", 1, 1)
    with pytest.raises(JobNotFinished):
        queue.wait(job_id, timeout=0.01)
    with pytest.raises(JobNotFound):
        queue.wait(job_id + 1, timeout=0.01)


def test_import_stays_light() -> None:
    code = (
        "import sys, cancelpool, cancelpool.queue; "
        "assert 'sqlite3' not in sys.modules, 'sqlite3'; "
        "assert 'click' not in sys.modules, 'click'; "
        "assert 'cancelpool.queue._store' not in sys.modules, 'store'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_files_are_private_even_in_a_shared_directory(tmp_path, capsys) -> None:
    import stat

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with Queue(shared / "q.db") as q:
        q.submit(f"{DEMO}:add", 1, 1)
    assert capsys.readouterr().err == ""  # a 0755 directory (a home) is fine: no warning
    for name in ("q.db", "q.db-wal", "q.db-shm"):
        path = shared / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    private = tmp_path / "new" / "deeper"
    with Queue(private / "q.db"):
        pass
    assert stat.S_IMODE(private.stat().st_mode) == 0o700

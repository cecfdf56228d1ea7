"""What ls, result and watch say about a job, end to end (issue 8 item 9)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

from qhelpers import BACKSTOP, TASKS, env, wait_for, wait_progress, wait_status
from test_queue_output import assert_terminal_safe, run_on_pty

MORE = "qtasks_more"
ALLOW = (f"{TASKS}:*", f"{MORE}:*")


def _row(cli, job_id: int) -> list[str]:
    """The cells of the job's row in a plain ``ls`` (NO_COLOR)."""
    out = cli("ls")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    starts = [
        header.index(h)
        for h in ("ID", "STATUS", "NAME", "TASK", "TRY", "PROGRESS", "TIME", "OUTCOME")
    ]
    for line in rows:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        if cells[0] == str(job_id):
            return cells
    raise AssertionError(f"job {job_id} not in ls:\n{out.stdout}")


def test_a_cancel_reason_is_said_once(cli, queue) -> None:
    plain = queue.submit(f"{TASKS}:record", "x", "y")
    told = queue.submit(f"{TASKS}:record", "x", "y")
    assert cli("cancel", str(plain)).returncode == 0
    assert cli("cancel", str(told), "--message", "user 42 closed the tab").returncode == 0
    out = cli("result", str(plain))
    assert out.returncode == 5
    assert out.stderr.strip() == f"job {plain} cancelled (manual)"
    out = cli("result", str(told))
    assert out.stderr.strip() == f"job {told} cancelled (manual): user 42 closed the tab"
    assert _row(cli, plain)[7] == "manual; no partial result"


def test_a_parent_shows_its_own_progress_not_its_childs(cli, queue, start_server, tmp_path) -> None:
    start_server(allow=ALLOW)
    release, release_child = tmp_path / "release", tmp_path / "release_child"
    parent = queue.submit(f"{TASKS}:checkpoint_then_wait", str(release))
    wait_progress(queue, parent)
    child = queue.submit(f"{MORE}:progress_then_wait", str(release_child), parent=parent)
    wait_progress(queue, child)
    # The child's report reaches the parent's pool handle too (bubbling); the server
    # stores each job's own, in the same batch.
    job = queue.get(parent)
    assert job.progress_message == "stage 1 done"
    assert job.progress == {"done": 1, "total": 2, "partial_result": {"stage": 1}}
    assert _row(cli, parent)[5] == "50%"
    assert _row(cli, child)[5] == "25%"
    # The child first: a parent that ends cancels its live children (they never
    # outlive it), so released together the child could end cancelled.
    release_child.touch()
    wait_status(queue, child, "completed")
    release.touch()
    wait_status(queue, parent, "completed")


def test_a_requeued_job_shows_its_wait(cli, queue, start_server, tmp_path) -> None:
    server = start_server(allow=ALLOW)
    job_id = queue.submit(f"{MORE}:progress_then_wait", str(tmp_path / "never"))
    wait_progress(queue, job_id)
    assert server.stop(signal.SIGTERM) == 0
    job = wait_status(queue, job_id, "queued")
    assert job.started_at is not None  # it ran before
    assert job.attempts == 1
    cells = _row(cli, job_id)
    assert cells[1] == "queued"
    assert cells[6].endswith(" wait"), cells  # its wait since it was queued, not a run time


def test_a_running_job_without_progress_shows_that_it_runs(
    cli, queue, start_server, tmp_path
) -> None:
    start_server(allow=ALLOW)
    release = tmp_path / "release"
    job_id = queue.submit(f"{MORE}:quiet_wait", str(release))
    wait_status(queue, job_id, "running")
    assert _row(cli, job_id)[5] == "running"
    code, out = run_on_pty(["watch", "--db", str(cli.db), "--timeout", "0.5", str(job_id)])
    assert code == 0
    text = assert_terminal_safe(out)
    row = next(line for line in text.splitlines() if "quiet_wait" in line)
    assert " running " in row
    assert "━" * 24 in row  # rich's pulse: the whole bar, as no fraction is known
    # The pulse is a gradient that moves: many colours in one frame's bar (a bar with
    # a fraction has two), and the frames differ.
    frames = [f for f in out.split(b"\r\x1b[2K") if b"quiet_wait" in f]
    assert len(frames) >= 2
    assert len(set(re.findall(rb"\x1b\[[0-9;]*m", frames[0]))) >= 5
    assert len(set(frames)) >= 2
    release.touch()
    wait_status(queue, job_id, "completed")


def test_watch_json_prints_changes(cli, queue, start_server, tmp_path) -> None:
    start_server(allow=ALLOW)
    release = tmp_path / "release"
    job_id = queue.submit(f"{MORE}:progress_then_wait", str(release), name="w1")
    wait_progress(queue, job_id)
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cancelpool.cli",
            "watch",
            "--db",
            str(cli.db),
            "--json",
            str(job_id),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(),
        text=True,
    )
    try:
        assert watcher.stdout is not None
        first = json.loads(watcher.stdout.readline())
        assert first["id"] == job_id
        assert first["task"] == f"{MORE}:progress_then_wait"
        assert first["status"] == "running"
        release.touch()  # only now can anything change
        rest = [json.loads(line) for line in watcher.stdout]
        assert watcher.wait(BACKSTOP) == 0, watcher.stderr.read() if watcher.stderr else ""
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(BACKSTOP)
        for stream in (watcher.stdout, watcher.stderr):
            if stream is not None:
                stream.close()
    assert rest, "watch printed no change"
    last = rest[-1]
    assert last["status"] == "completed"
    assert last["result"] == "done"
    for change in rest:
        assert not {"task", "args", "name"} & set(change)  # only what changed
        assert change["id"] == job_id
        assert len(change) > 1
    wait_for(lambda: queue.get(job_id).finished, "the job to be finished")


def test_result_of_an_unserved_job_says_why_it_does_not_finish(cli, queue) -> None:
    job = queue.submit(f"{TASKS}:record", "x", "y")  # no server runs on this queue
    out = cli("result", str(job))
    assert out.returncode == 7
    first, second = out.stderr.strip().splitlines()
    assert first == f"job {job} is queued"
    assert f"job {job} is queued and no live server serves" in second
    assert "start one: cancelpool serve" in second


def test_watch_says_when_no_server_can_finish_a_job_and_ctrl_c_ends_it(db, queue) -> None:
    job = queue.submit(f"{TASKS}:record", "x", "y")  # no server: watch would wait for ever
    proc = subprocess.Popen(
        [sys.executable, "-m", "cancelpool.cli", "watch", "--db", str(db), str(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(),
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # blocks until watch says it (or exits: "")
        assert f"job {job} is queued and no live server serves" in line, line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(BACKSTOP) == 130
        rest = proc.stderr.read()
        assert rest.strip() == "Aborted!", rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(BACKSTOP)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()

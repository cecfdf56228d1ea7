"""`cancelpool serve` with real client processes: outcomes, cancellation, signals, crashes."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from qhelpers import DEMO, TASKS, env, wait_for, wait_progress, wait_status

from cancelpool.queue import NoLiveServer, Queue


def test_submit_then_result(cli, start_server) -> None:
    start_server()
    submitted = cli("submit", f"{DEMO}:echo", '[1, "two", {"three": 3}]', "--name", "e1")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert job_id.isdigit()
    out = cli("result", job_id, "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"args": [1, "two", {"three": 3}], "kwargs": {}}


def test_a_plain_function_task_reports_progress(queue, start_server) -> None:
    start_server()
    job = queue.wait(queue.submit(f"{TASKS}:count_sync", 5), timeout=60)
    assert job.status.value == "completed"
    assert job.result == 5
    assert job.progress_message == "5/5"
    assert job.progress == {"done": 5, "total": 5}


def test_jobs_submitted_without_a_server_run_in_priority_order(queue, start_server) -> None:
    low = queue.submit(f"{DEMO}:add", 1, 1, name="low")
    high = queue.submit(f"{DEMO}:add", 2, 2, name="high", priority=10)
    mid = queue.submit(f"{DEMO}:add", 3, 3, name="mid", priority=5)
    also_low = queue.submit(f"{DEMO}:add", 4, 4, name="low2")
    start_server("--concurrency", "1")
    jobs = [queue.wait(job_id, timeout=60) for job_id in (low, high, mid, also_low)]
    assert [job.result for job in jobs] == [2, 4, 6, 8]
    order = sorted(jobs, key=lambda job: job.started_at or 0)
    assert [job.id for job in order] == [high, mid, low, also_low]


def test_keyword_arguments_named_like_options(queue, start_server) -> None:
    start_server()
    job_id = queue.submit(f"{TASKS}:kwargs_named_like_options", name="n", timeout=5.0)
    assert queue.wait(job_id, timeout=60).status == "failed"  # name/timeout were options
    job_id = queue._submit(
        f"{TASKS}:kwargs_named_like_options", [], {"name": "x", "timeout": 3}, None, None, 0, None
    )
    assert queue.wait(job_id, timeout=60).result == ["x", 3]


def test_result_exit_codes(cli, queue, start_server) -> None:
    start_server()
    failed = queue.submit(f"{DEMO}:fail", "boom")
    out = cli("result", str(failed), "--wait")
    assert out.returncode == 4
    assert "ValueError: boom" in out.stderr
    assert "Traceback" in out.stderr

    timed = queue.submit(f"{DEMO}:crunch", 1000, 0.01, timeout=0.3)
    out = cli("result", str(timed), "--wait")
    assert out.returncode == 5, out.stderr
    assert "timeout" in out.stderr
    assert json.loads(out.stdout)["steps_done"] >= 1

    pending = queue.submit(f"{DEMO}:wait_for_cancel")
    wait_status(queue, pending, "running")
    assert cli("result", str(pending)).returncode == 7
    assert cli("result", str(pending), "--wait", "--timeout", "0.05").returncode == 7
    queue.cancel(pending)
    assert cli("result", "999999").returncode == 1


def test_non_json_result_fails_clearly(queue, start_server) -> None:
    start_server()
    job = queue.wait(queue.submit(f"{TASKS}:not_json"), timeout=60)
    assert job.status == "failed"
    assert "must be JSON data" in (job.error or "")
    assert job.traceback is None  # the queue's refusal: only cancelpool's frames
    raised = queue.wait(queue.submit(f"{DEMO}:fail", "boom"), timeout=60)
    assert raised.status == "failed"
    assert "demo_tasks.py" in (raised.traceback or "")  # the job's own error keeps its


def test_unimportable_tasks_fail_at_run_time_and_refused_ones_wait(queue, start_server) -> None:
    # Submitted while no server runs: nobody can refuse them yet.
    missing = queue.submit(f"{TASKS}:no_such_function")
    not_callable = queue.submit(f"{TASKS}:NOT_CALLABLE")
    refused = queue.submit("os:getcwd")
    start_server()
    for job_id, words in ((missing, "has no 'no_such_function'"), (not_callable, "not callable")):
        job = queue.wait(job_id, timeout=60)
        assert words in (job.error or "")
        assert job.traceback is None
    # A task the server may not run is not its to fail: it stays queued for a server
    # that may run it, and a waiter hears that none of the live ones does.
    with pytest.raises(NoLiveServer, match=r"none of the live servers of .* allows its task"):
        queue.wait(refused, timeout=60, need_server=True)
    job = queue.get(refused)
    assert job is not None
    assert job.status == "queued"
    assert job.attempts == 0


def test_servers_with_different_allow_lists_share_a_queue(queue, start_server) -> None:
    # One server runs the queue suite's tasks and the demo's, the other the suite's
    # only: the demo's jobs all run on the first; the second never claims (or fails)
    # one of them.
    start_server(allow=(f"{TASKS}:*",))
    start_server()
    jobs = [queue.submit(f"{DEMO}:add", n, 1) for n in range(20)]
    records = [queue.wait(job, timeout=60) for job in jobs]
    assert [r.status for r in records] == ["completed"] * 20, [r.error for r in records]
    assert [r.result for r in records] == [n + 1 for n in range(20)]
    assert all(r.attempts == 1 for r in records)


def test_cancel_reaches_a_running_job(cli, queue, start_server) -> None:
    start_server()
    job_id = queue.submit(f"{DEMO}:wait_for_cancel", name="waiter")
    wait_progress(queue, job_id)
    out = cli("cancel", str(job_id))
    returned = time.time()
    assert out.returncode == 0, out.stderr
    assert "1 running" in out.stdout
    job = wait_status(queue, job_id, "cancelled")
    assert job.cancel_reason == "manual"
    seen = job.partial_result["cancel_seen_at"]
    # A backstop only (the benchmark measures the latency): it arrived, and promptly.
    assert seen - returned < 5.0


def test_cancel_pattern_and_parent_cascade(cli, queue, start_server) -> None:
    start_server()
    a = queue.submit(f"{DEMO}:wait_for_cancel", name="user_42_a")
    b = queue.submit(f"{DEMO}:wait_for_cancel", name="user_42_b")
    other = queue.submit(f"{DEMO}:wait_for_cancel", name="user_7_a")
    parent = queue.submit(f"{DEMO}:wait_for_cancel", name="parent")
    child = queue.submit(f"{DEMO}:wait_for_cancel", name="child", parent=parent)
    grandchild = queue.submit(f"{DEMO}:wait_for_cancel", name="grandchild", parent=child)
    for job_id in (a, b, other, parent, child, grandchild):
        wait_progress(queue, job_id)
    out = cli("cancel", "--pattern", "user_42_*", "--wait")
    assert out.returncode == 0, out.stderr
    assert "cancelled 2 job(s)" in out.stdout
    assert queue.get(a).status == queue.get(b).status == "cancelled"
    assert queue.get(other).status == "running"
    out = cli("cancel", str(parent), "--json")
    assert json.loads(out.stdout)["requested"] == [parent, child, grandchild]
    for job_id in (child, grandchild):
        assert wait_status(queue, job_id, "cancelled").cancel_reason == "parent"
    assert wait_status(queue, parent, "cancelled").cancel_reason == "manual"
    out = cli("cancel", str(parent))
    assert "already finished" in out.stdout
    queue.cancel(other)
    wait_status(queue, other, "cancelled")


def test_timeout_of_a_parent_cancels_its_children(queue, start_server) -> None:
    start_server()
    parent = queue.submit(f"{DEMO}:crunch", 1000, 0.01, timeout=0.5, name="p")
    child = queue.submit(f"{DEMO}:wait_for_cancel", parent=parent, name="c")
    assert wait_status(queue, parent, "cancelled").cancel_reason == "timeout"
    assert wait_status(queue, child, "cancelled").cancel_reason == "parent"


def test_sigterm_requeues_running_jobs_with_their_partial_results(queue, start_server) -> None:
    server = start_server()
    job_id = queue.submit(f"{DEMO}:wait_for_cancel")
    done = queue.submit(f"{DEMO}:add", 1, 2)
    wait_progress(queue, job_id)
    assert queue.wait(done, timeout=60).result == 3
    assert server.stop(signal.SIGTERM) == 0
    server.assert_family_gone()
    job = queue.get(job_id)
    assert job.status == "queued"
    assert job.attempts == 1
    assert "cancel_seen_at" in job.partial_result
    assert queue.get(done).result == 3
    assert "requeued" in server.output()
    assert not queue.live_servers(refresh=True)


def test_sigint_with_on_shutdown_cancel(queue, start_server) -> None:
    server = start_server("--on-shutdown", "cancel")
    job_id = queue.submit(f"{DEMO}:crunch", 10_000, 0.01)
    wait_progress(queue, job_id)
    assert server.stop(signal.SIGINT) == 0
    job = queue.get(job_id)
    assert job.status == "cancelled"
    assert job.cancel_reason == "signal"
    assert job.partial_result["steps_done"] >= 1


def test_sigkill_then_restart_requeues_running_jobs(queue, start_server, tmp_path) -> None:
    release = tmp_path / "release"
    server = start_server()
    done = queue.submit(f"{DEMO}:add", 20, 22)
    assert queue.wait(done, timeout=60).result == 42
    job_id = queue.submit(f"{TASKS}:checkpoint_then_wait", str(release))
    wait_progress(queue, job_id)
    server.stop(signal.SIGKILL)
    server.assert_family_gone()  # its workers and fork server died with it
    assert queue.get(job_id).status == "running"  # nobody has noticed yet
    queued = queue.submit(f"{DEMO}:add", 1, 1)  # accepted while no server runs
    start_server()
    job = wait_for(lambda: (j := queue.get(job_id)).attempts == 2 and j, "the job to restart")
    assert job.partial_result == {"stage": 1}  # kept across the crash
    release.touch()
    assert queue.wait(job_id, timeout=60).result == "finished"
    assert queue.wait(queued, timeout=60).result == 2
    assert queue.get(done).result == 42


def test_sigkill_then_restart_past_max_attempts_marks_interrupted(
    queue, start_server, tmp_path
) -> None:
    server = start_server()
    job_id = queue.submit(f"{TASKS}:checkpoint_then_wait", str(tmp_path / "never"))
    wait_progress(queue, job_id)
    server.stop(signal.SIGKILL)
    server.assert_family_gone()
    start_server("--max-attempts", "1")
    job = wait_status(queue, job_id, "interrupted")
    assert job.partial_result == {"stage": 1}
    assert job.progress_message == "stage 1 done"
    assert "died" in (job.error or "")


def test_two_servers_never_run_a_job_twice(queue, start_server, tmp_path) -> None:
    runs = tmp_path / "runs.txt"
    first = start_server("--concurrency", "4")
    second = start_server("--concurrency", "4")
    ids = [queue.submit(f"{TASKS}:record", str(runs), f"job-{n}") for n in range(150)]
    jobs = [queue.wait(job_id, timeout=60) for job_id in ids]
    assert all(job.status == "completed" for job in jobs)
    lines = runs.read_text().split()
    assert sorted(lines) == sorted(f"job-{n}" for n in range(150))  # each exactly once
    owners = {job.owner for job in jobs}
    assert owners <= {s.id for s in queue.store.servers(live_only=False)}
    assert first.stop() == second.stop() == 0


def test_a_live_server_recovers_the_jobs_of_a_dead_one(queue, start_server, tmp_path) -> None:
    release = tmp_path / "release"
    doomed = start_server()
    job_id = queue.submit(f"{TASKS}:checkpoint_then_wait", str(release))
    wait_progress(queue, job_id)
    start_server()  # a second server, alive while the first dies
    doomed.stop(signal.SIGKILL)
    wait_for(lambda: queue.get(job_id).attempts == 2, "the survivor to take the job over")
    release.touch()
    assert queue.wait(job_id, timeout=60).result == "finished"


@pytest.mark.sqlite_only  # writes or reads SQLite rows/files directly
def test_files_are_private(db: Path, queue, start_server) -> None:
    start_server()
    queue.wait(queue.submit(f"{DEMO}:add", 1, 1), timeout=60)
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    ctl = db.with_name(db.name + ".ctl")
    assert stat.S_IMODE(ctl.stat().st_mode) == 0o700
    fifos = list(ctl.iterdir())
    assert len(fifos) == 1
    assert stat.S_ISFIFO(fifos[0].stat().st_mode)
    assert stat.S_IMODE(fifos[0].stat().st_mode) == 0o600


def test_ls_watch_stats(cli, queue, start_server) -> None:
    server = start_server()
    ok = queue.submit(f"{DEMO}:crunch", 3, 0.01, name="user_1_ok")
    bad = queue.submit(f"{DEMO}:fail", name="user_1_bad")
    out = cli("watch", str(ok), str(bad))
    assert out.returncode == 0, out.stderr
    assert f"{ok} user_1_ok completed" in out.stdout
    assert f"{bad} user_1_bad failed" in out.stdout
    out = cli("ls")
    assert "user_1_ok" in out.stdout
    assert "completed" in out.stdout
    assert "ValueError" in out.stdout
    out = cli("ls", "--json", "--status", "failed")
    assert [job["id"] for job in json.loads(out.stdout)] == [bad]
    out = cli("ls", "--json", "--pattern", "user_1_*", "--status", "completed")
    assert [job["name"] for job in json.loads(out.stdout)] == ["user_1_ok"]
    out = cli("stats", "--json")
    data = json.loads(out.stdout)
    assert data["jobs"]["completed"] == 1
    assert data["jobs"]["failed"] == 1
    assert [s["pid"] for s in data["servers"]] == [server.pid]
    assert "SERVER" in cli("stats").stdout


def test_submit_wait_prints_the_outcome(cli, start_server) -> None:
    start_server()
    out = cli("submit", f"{DEMO}:add", "[2, 3]", "--wait")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"


def test_queue_in_another_process_sees_what_the_cli_did(db, cli, start_server) -> None:
    start_server()
    job_id = int(cli("submit", f"{DEMO}:add", "[1, 2]").stdout)
    with Queue(db) as other:
        assert other.wait(job_id, timeout=60).result == 3


def test_sigterm_with_a_blocking_job_that_never_checks(queue, start_server) -> None:
    server = start_server("--grace", "0.5")
    job_id = queue.submit(f"{TASKS}:blocking_sleep", 3600)  # a thread that never checks
    wait_status(queue, job_id, "running")
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 30  # backstop: the grace is 0.5 s
    server.assert_family_gone()
    job = queue.get(job_id)
    assert job.status == "queued"
    assert job.attempts == 1


def test_watch_a_pattern(db, queue, start_server, tmp_path) -> None:
    release = tmp_path / "release"
    start_server()
    ids = [
        queue.submit(f"{TASKS}:checkpoint_then_wait", str(release), name=f"batch_{n}")
        for n in range(3)
    ]
    queue.submit(f"{DEMO}:wait_for_cancel", name="other")
    for job_id in ids:
        wait_progress(queue, job_id)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "cancelpool.cli", "watch", "--db", str(db), "--pattern", "batch_*"],
        stdout=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline()  # the handshake: it is watching
        assert "batch_" in first
        release.touch()
        rest = watcher.stdout.read()
        assert watcher.wait(60) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        if watcher.stdout is not None:
            watcher.stdout.close()
    out = first + rest
    for job_id in ids:
        assert f"{job_id} batch_{job_id - ids[0]} completed" in out
    assert "other" not in out
    queue.cancel_all("other")


def test_a_job_that_waited_for_a_worker_is_timed_from_its_start(queue, start_server) -> None:
    # One worker, taken by a plain function (it runs alone in its worker): the server
    # claims the next job at once, but it starts only when the worker is free. Its
    # TIME (ended - started) is the time it ran, not the time since its claim.
    start_server()
    sync = queue.submit(f"{TASKS}:blocking_sleep", 1.5)
    quick = queue.submit(f"{DEMO}:add", 1, 2)
    waited = queue.wait(quick, timeout=60)
    held = queue.wait(sync, timeout=60)
    assert (held.status.value, waited.status.value) == ("completed", "completed")
    assert held.started_at is not None
    assert held.ended_at is not None
    assert waited.started_at is not None
    assert waited.ended_at is not None
    assert held.ended_at - held.started_at >= 1.4
    assert waited.ended_at - waited.started_at < 1.0, (waited.started_at, waited.ended_at)
    assert waited.ended_at >= held.ended_at - 0.1  # it did wait for the worker


def test_a_failing_worker_init_stops_serve_and_leaves_the_jobs_queued(db, queue) -> None:
    # Its initializer fails in every worker, so the pool can run nothing: that is no
    # job's failure. serve stops by itself (exit 1) and the jobs wait for a server
    # that can run them.
    jobs = [queue.submit(f"{DEMO}:add", n, 1) for n in range(3)]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cancelpool.cli",
            "serve",
            "--db",
            str(db),
            "--workers",
            "1",
            "--allow",
            f"{DEMO}:*",
            "--worker-init",
            f"{TASKS}:failing_init",
        ],
        capture_output=True,
        text=True,
        env=env(),
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert "the pool cannot run jobs" in out.stderr
    assert "the worker's setup failed" in out.stderr
    for job_id in jobs:
        record = queue.get(job_id)
        assert record is not None
        assert record.status == "queued", record
        assert record.error is None

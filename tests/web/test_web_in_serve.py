"""``cancelpool serve --http ADDR``: the dashboard served from the queue server itself."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from webhelpers import BACKSTOP, Proc, wait_for

from _leaks import assert_no_new_shm, dev_shm
from cancelpool.queue import Queue


def test_serve_http_serves_the_dashboard_until_the_server_stops(
    db: Path, tmp_path: Path, queue: Queue
) -> None:
    shm_before = dev_shm()
    proc = Proc(
        [
            "serve",
            "--db",
            str(db),
            "--workers",
            "1",
            "--quiet",
            "--http",
            "127.0.0.1:0",
            "--allow",
            "cancelpool.demo_tasks:*",
        ],
        tmp_path / "serve.log",
    )
    try:
        # --quiet hides the server's log, not the address: the generated token is in it.
        line = wait_for(
            lambda: (
                re.search(r"dashboard (http://127\.0\.0\.1:\d+/)\?token=(\S+)", proc.output())
                or proc.proc.poll() is not None
            ),
            "the dashboard's address in serve's log",
        )
        assert line is not True, f"serve exited {proc.proc.returncode}:\n{proc.output()}"
        base, token = line.group(1), line.group(2)
        proc.remember_family()
        job = queue.submit("cancelpool.demo_tasks:add", 2, 3, name="via_serve_http")
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("api/stats").status_code == 401  # the token is needed
            auth = {"Authorization": f"Bearer {token}"}
            jobs = client.get("api/jobs", headers=auth)
            assert jobs.status_code == 200, jobs.text
            assert job in [row["id"] for row in jobs.json()["jobs"]]
    finally:
        code = proc.stop()
    assert code == 0, proc.output()
    assert "Traceback" not in proc.output()
    assert_no_new_shm(shm_before)


def test_serve_http_refuses_a_bad_address_and_starts_nothing(db: Path, tmp_path: Path) -> None:
    args = ["serve", "--db", str(db), "--allow", "cancelpool.demo_tasks:*"]
    proc = Proc([*args, "--http", "127.0.0.1:99999"], tmp_path / "serve.log")
    code = proc.proc.wait(BACKSTOP)  # it exits on its own
    proc.stop()
    assert code == 2, proc.output()
    assert "--http" in proc.output()
    assert "Traceback" not in proc.output()
    assert not db.exists()  # refused before the server created anything

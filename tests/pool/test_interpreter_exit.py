"""What a pool still running at interpreter exit does: what ``concurrent.futures`` does.

Each test runs a small program in a real interpreter that exits with a pool it never
shut down, and checks what happened to its jobs and its workers afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent
# Seconds a program may take to start, run its jobs and exit: a backstop.
RUN_BACKSTOP = 60.0
# Seconds its workers get to disappear once it has exited: a backstop.
GONE_BACKSTOP = 10.0
_NOISE = ("supervisor thread failed", "Bad file descriptor", "process object is closed")

_PROLOGUE = """
import atexit
import json
import sys

from cancelpool import CancelPool, PoolClosed
from pool import _jobs
from _handshake import BACKSTOP, Gate

def report(**what):
    print(json.dumps(what), flush=True)
"""


def _run(tmp_path: Path, body: str) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    script = tmp_path / "program.py"
    # Under the main guard: forkserver and spawn workers import the main module.
    main = textwrap.indent(textwrap.dedent(body), "    ")
    script.write_text(f'{_PROLOGUE}\nif __name__ == "__main__":\n{main}')
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=RUN_BACKSTOP,
    )
    for noise in _NOISE:
        assert noise not in done.stderr, done.stderr
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    workers = [pid for report in reports for pid in report.get("workers", ())]
    alive = []
    for pid in workers:
        try:
            alive.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _gone, still = psutil.wait_procs(alive, timeout=GONE_BACKSTOP)
    still = [p for p in still if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not still, f"workers left running: {[p.pid for p in still]}"
    return done, reports


def test_pending_jobs_finish_at_exit(tmp_path: Path) -> None:
    # The job is still working when the main module ends; the interpreter waits for it.
    done, reports = _run(
        tmp_path,
        """
        pool = CancelPool(workers=1)
        handle = pool.submit(_jobs.work_then_record, "finished.txt", 0.5)
        queued = pool.submit(_jobs.add, 1, 2)  # queued behind it, runs too
        queued.add_done_callback(lambda h: report(queued=h.result()))
        report(workers=[w.pid for w in pool.statistics().workers])
        """,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "finished.txt").read_text() == "finished"
    assert {"queued": 3} in reports
    assert "Traceback" not in done.stderr, done.stderr


def test_cancel_at_exit_cancels_running_jobs_with_reason_signal(tmp_path: Path) -> None:
    done, _ = _run(
        tmp_path,
        """
        gate = Gate()
        pool = CancelPool(workers=1, cancel_at_exit=True)
        pool.submit(_jobs.record_cancellation, gate.path, "reason.txt")
        gate.wait(1)  # it runs
        gate.close()
        report(workers=[w.pid for w in pool.statistics().workers])
        """,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "reason.txt").read_text() == "signal"
    assert "Traceback" not in done.stderr, done.stderr


def test_an_exit_caused_by_ctrl_c_cancels_running_jobs_with_reason_signal(
    tmp_path: Path,
) -> None:
    done, _ = _run(
        tmp_path,
        """
        gate = Gate()
        pool = CancelPool(workers=1)
        pool.submit(_jobs.record_cancellation, gate.path, "reason.txt")
        gate.wait(1)  # it runs
        gate.close()
        report(workers=[w.pid for w in pool.statistics().workers])
        raise KeyboardInterrupt  # as if Ctrl-C arrived here
        """,
    )
    assert done.returncode != 0
    assert "KeyboardInterrupt" in done.stderr
    assert (tmp_path / "reason.txt").read_text() == "signal"


@pytest.mark.parametrize("used", [False, True], ids=["never-used", "used"])
def test_submit_after_interpreter_shutdown_raises_pool_closed(tmp_path: Path, used: bool) -> None:
    done, reports = _run(
        tmp_path,
        f"""
        pool = CancelPool(workers=1)
        if {used}:
            assert pool.submit(_jobs.add, 1, 1).result(BACKSTOP) == 2
            report(workers=[w.pid for w in pool.statistics().workers])

        def late_submit():
            try:
                pool.submit(_jobs.add, 1, 1)
            except PoolClosed as exc:
                report(refused=str(exc))
            else:
                report(refused=None)

        atexit.register(late_submit)
        """,
    )
    assert done.returncode == 0, done.stderr
    [refused] = [r["refused"] for r in reports if "refused" in r]
    assert refused is not None
    assert "shut" in refused

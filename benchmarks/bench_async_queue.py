"""Event-loop lag while queue calls run: AsyncQueue (store calls in worker threads)
against calling the synchronous Queue from a coroutine (what an async handler would do
without AsyncQueue), on SQLite and, when a URL is given, PostgreSQL.

A probe task sleeps ``TICK`` seconds in a loop and records how late each wake-up is
(the loop's lag). Meanwhile ``CALLERS`` tasks each make ``CALLS`` rounds of submit + get
+ list. Reported: calls per second, and the probe's median / p99 / max lag.

    python benchmarks/bench_async_queue.py                        # SQLite, ~10 s
    python benchmarks/bench_async_queue.py --pg postgresql://u@h/db
    python benchmarks/bench_async_queue.py --backend trio

Noisy machines: compare rows of one run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from cancelpool import AsyncQueue
from cancelpool.queue import Queue

#: The probe's sleep (seconds): shorter sees shorter stalls, costs more wake-ups.
TICK = 0.002
CALLERS = 16
CALLS = 40


class Probe:
    def __init__(self) -> None:
        self.lags: list[float] = []

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await anyio.sleep(TICK)
            self.lags.append(time.perf_counter() - start - TICK)


async def _round_async(aq: AsyncQueue, i: int) -> None:
    job = await aq.submit("bench.tasks:noop", i, name=f"bench_{i}")
    await aq.get(job)
    await aq.list(limit=10)


async def _round_sync(queue: Queue, i: int) -> None:
    job = queue.submit("bench.tasks:noop", i, name=f"bench_{i}")
    queue.get(job)
    queue.list(limit=10)
    await anyio.lowlevel.checkpoint()


async def measure(target: Any, mode: str) -> dict[str, float]:
    probe = Probe()
    aq = AsyncQueue(target, connections=4)
    queue = Queue(target)
    try:
        await aq.get(1)  # open a connection first: not part of the measurement
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe.run)
            await anyio.sleep(0.05)
            probe.lags.clear()
            began = time.perf_counter()
            async with anyio.create_task_group() as callers:
                for c in range(CALLERS):

                    async def caller(c: int = c) -> None:
                        for k in range(CALLS):
                            if mode == "AsyncQueue":
                                await _round_async(aq, c * CALLS + k)
                            else:
                                await _round_sync(queue, c * CALLS + k)

                    callers.start_soon(caller)
            elapsed = time.perf_counter() - began
            tg.cancel_scope.cancel()
    finally:
        queue.close()
        await aq.aclose()
    lags = sorted(probe.lags) or [0.0]
    return {
        "rounds_per_s": CALLERS * CALLS / elapsed,
        "lag_median_ms": statistics.median(lags) * 1000,
        "lag_p99_ms": lags[int(len(lags) * 0.99) - 1 if len(lags) > 1 else 0] * 1000,
        "lag_max_ms": lags[-1] * 1000,
    }


#: How long another connection holds SQLite's write lock in the "held" row (seconds).
HOLD = 0.2


async def held_call(path: Path, mode: str) -> float:
    """Max probe lag (ms) while one submit waits HOLD seconds on SQLite's write lock."""
    import sqlite3
    import threading

    probe = Probe()
    aq = AsyncQueue(path)
    queue = Queue(path)
    try:
        await aq.get(1)
        lock = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe.run)
            await anyio.sleep(0.05)
            lock.execute("BEGIN IMMEDIATE")
            threading.Timer(HOLD, lambda: lock.execute("ROLLBACK")).start()
            probe.lags.clear()
            if mode == "AsyncQueue":
                await aq.submit("bench.tasks:noop", name="held")
            else:
                queue.submit("bench.tasks:noop", name="held")
            await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        lock.close()
    finally:
        queue.close()
        await aq.aclose()
    return max(probe.lags or [0.0]) * 1000


async def main(pg: str | None) -> None:
    targets: list[tuple[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="cp-bench-aq-"))
    try:
        targets.append(("sqlite", tmp / "state" / "queue.db"))
        if pg:
            targets.append(("postgresql", pg))
        print(f"{CALLERS} tasks x {CALLS} rounds of submit+get+list; probe tick {TICK * 1000} ms")
        print(f"{'store':<11} {'mode':<20} {'rounds/s':>9} {'lag p50':>9} {'p99':>9} {'max':>9}")
        for kind, target in targets:
            for mode in ("AsyncQueue", "sync Queue in loop"):
                row = await measure(target, mode)
                print(
                    f"{kind:<11} {mode:<20} {row['rounds_per_s']:>9.0f} "
                    f"{row['lag_median_ms']:>7.2f}ms {row['lag_p99_ms']:>7.2f}ms "
                    f"{row['lag_max_ms']:>7.2f}ms"
                )
        print(
            f"\none submit held {HOLD * 1000:.0f} ms by SQLite's write lock (another connection):"
        )
        for mode in ("AsyncQueue", "sync Queue in loop"):
            lag = await held_call(tmp / "state" / "queue.db", mode)
            print(f"  {mode:<20} max loop lag {lag:7.1f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", help="a postgresql:// URL of a database to use (emptied)")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    anyio.run(main, args.pg, backend=args.backend)

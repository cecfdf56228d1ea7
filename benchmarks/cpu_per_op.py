"""CPU time per pool operation, for comparing two source trees where wall time is noise.

On a shared 2-vCPU machine, two runs of identical code differ by more than 10% on most
latency rows of ``bench_pool.py``; the CPU time an operation costs (every thread of the
caller's process and of the workers, from ``/proc/<pid>/task/*/schedstat``, in ns)
varies by a few percent. Run it alternately against each tree::

    for i in 1 2 3; do
      for src in /path/to/old/src src; do
        PYTHONPATH=$src python benchmarks/cpu_per_op.py --label $src
      done
    done

Operations, on a pool of 2 workers with ``concurrency=1``:
    round trip   submit one trivial async job, wait for its result; its CPU split
                 into the calling thread, the caller's other threads (the
                 supervisor) and the workers.
    stop cycle   submit a job that reports "ready" and sleeps; once ready, cancel it
                 and wait for its handle (the ``stop`` section of bench_pool.py).

Linux only (schedstat). Prints one line per worker loop and writes JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from typing import Any

import _jobs
from _ours import _submit_probe

from cancelpool import CancelPool


def _cpu_ns(pid: int, *, main_thread: bool | None = None) -> int:
    """CPU time so far of the threads of ``pid``: all of them, only its main thread
    (``main_thread=True``) or all but it (False). Threads that ended are not counted:
    none of the pool's threads end while it measures."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        if main_thread is not None and (int(tid) == pid) != main_thread:
            continue
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError):
            pass  # the thread ended meanwhile
    return total


def _measure(use_uvloop: bool, round_trips: int, stops: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with CancelPool(workers=2, use_uvloop=use_uvloop, concurrency=1) as pool:
        assert [pool.submit(_jobs.ainc, i).result(30) for i in range(50)] == list(range(1, 51))
        me = os.getpid()
        workers = [w.pid for w in pool.statistics().workers if w.pid]

        def parts() -> tuple[int, int, int]:
            # The calling thread; the caller's other threads (the supervisor); workers.
            return (
                _cpu_ns(me, main_thread=True),
                _cpu_ns(me, main_thread=False),
                sum(_cpu_ns(pid) for pid in workers),
            )

        def cpu() -> int:
            return sum(parts())

        p0, t0 = parts(), time.perf_counter_ns()
        for i in range(round_trips):
            assert pool.submit(_jobs.ainc, i).result(30) == i + 1
        p1 = parts()
        out["round trip: CPU us"] = (sum(p1) - sum(p0)) / round_trips / 1e3
        for name, a, b in zip(("caller", "supervisor", "workers"), p0, p1, strict=True):
            out[f"  {name}"] = (b - a) / round_trips / 1e3
        out["round trip: wall us"] = (time.perf_counter_ns() - t0) / round_trips / 1e3

        def probe() -> tuple[Any, threading.Event]:
            handle, ready, _ = _submit_probe(pool, 100.0)  # bench_pool's stop probe
            return handle, ready

        hold, ready = probe()  # keeps the other worker busy, as bench_pool's stop does
        if not ready.wait(30):
            raise RuntimeError("the held job never started")
        c0, waited = cpu(), 0
        for _ in range(stops):
            handle, ready = probe()
            if not ready.wait(30):
                raise RuntimeError("a probe never started")
            t = time.perf_counter_ns()
            handle.cancel()
            handle.exception(30)
            waited += time.perf_counter_ns() - t
        out["stop cycle: CPU us"] = (cpu() - c0) / stops / 1e3
        out["cancel -> resolved: wall us"] = waited / stops / 1e3
        hold.cancel()
        hold.exception(30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="", help="names the tree in the output")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    parser.add_argument("--round-trips", type=int, default=1500)
    parser.add_argument("--stops", type=int, default=800)
    args = parser.parse_args()
    results = {}
    for loop_name, use_uvloop in (("asyncio", False), ("uvloop", True)):
        figures = _measure(use_uvloop, args.round_trips, args.stops)
        results[loop_name] = figures
        text = "  ".join(f"{k} {v:,.0f}" for k, v in figures.items())
        print(f"{args.label} {loop_name:7}  {text}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"label": args.label, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()

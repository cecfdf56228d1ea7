"""How cancelpool's costs grow: with workers, with live jobs, with queued jobs.

Three sections of ``bench_pool.py``:

    scaling            trivial jobs, submit then collect, with each worker count of
                       ``--workers`` (default 1,2,4,8): cancelpool on asyncio and uvloop
                       workers, and mp.Pool imap(chunksize=1) with as many processes,
                       its ratio the reference. On 2 cores the curve flattens past 2: a
                       machine with more cores shows how far it goes.
    cancel_all_growth  ``cancel_all(name_pattern=...)`` over 1,000, 10,000 and 100,000
                       live jobs, every one running (a cancel_probe awaiting in its
                       worker), until every handle has resolved; the cost per job, its
                       ratio to the 1,000-job round (flat means O(n) in all).
    memory             the caller process's memory per queued job with 100,000 jobs
                       queued behind 2 blocked workers, cancelpool against
                       ProcessPoolExecutor, each measured in a fresh interpreter
                       (``_memory_probe.py``): RSS after minus before, over the count.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import _jobs
from _common import MP_IMAP, OURS_SUBJECT, BenchArgs, Row, Target, now_ns
from _ours import _BACKSTOP_S, _note, _pool, cancel_all_round

from cancelpool import CancelPool

SCALING = "throughput, workers={n}"
CANCEL_ALL_PER_JOB = "cancel_all per job, {n:,} live jobs"
MEMORY = "caller memory per queued job"
PPE_QUEUED = "ProcessPoolExecutor"
_GROWTH_SIZES = (1_000, 10_000, 100_000)
_QUEUED = 100_000
_HERE = Path(__file__).resolve().parent


def _cancelpool_throughput(workers: int, use_uvloop: bool, n: int) -> float:
    with CancelPool(workers=workers, use_uvloop=use_uvloop) as pool:
        warm = [pool.submit(_jobs.ainc, i) for i in range(50 * workers)]
        assert [h.result(_BACKSTOP_S) for h in warm] == [i + 1 for i in range(50 * workers)]
        t0 = now_ns()
        handles = [pool.submit(_jobs.ainc, i) for i in range(n)]
        results = [h.result(_BACKSTOP_S) for h in handles]
        elapsed = now_ns() - t0
    if results != [i + 1 for i in range(n)]:
        raise RuntimeError(f"scaling: wrong results with {workers} workers")
    return n / (elapsed / 1e9)


def _mp_pool_throughput(workers: int, n: int) -> float:
    pool = mp.get_context().Pool(workers)
    try:
        pool.map(_jobs.inc, range(4 * workers))
        t0 = now_ns()
        results = list(pool.imap(_jobs.inc, range(n), chunksize=1))
        elapsed = now_ns() - t0
    finally:
        pool.close()
        pool.join()
    if results != [i + 1 for i in range(n)]:
        raise RuntimeError(f"scaling: mp.Pool gave wrong results with {workers} workers")
    return n / (elapsed / 1e9)


def scaling_rows(args: BenchArgs) -> list[Row]:
    """Throughput per worker count, cancelpool (both loops) against mp.Pool."""
    n = args.count(20_000, 2_000)
    rows: list[Row] = []
    for workers in args.workers:
        measure = SCALING.format(n=workers)
        rows.append(Row(measure, MP_IMAP, _mp_pool_throughput(workers, n), "jobs/s"))
        for variant, use_uvloop in (("", False), ("uvloop", True)):
            subject = f"{OURS_SUBJECT} ({variant})" if variant else OURS_SUBJECT
            value = _cancelpool_throughput(workers, use_uvloop, n)
            rows.append(
                Row(measure, subject, value, "jobs/s", ref=(measure, MP_IMAP),
                    target=Target(">=", 2.0), note=f"n={n}")
            )  # fmt: skip
    return rows


def _cancel_all_round(n: int) -> tuple[float, float]:
    """Seconds until all ``n`` running jobs resolved after cancel_all, and the call's."""
    with _pool(False, concurrency=n // 2) as pool:  # 2 workers: every job runs
        total_ms, call_ms, _seen = cancel_all_round(pool, n)
    return total_ms / 1e3, call_ms / 1e3


def cancel_all_growth_rows(args: BenchArgs) -> list[Row]:
    """cancel_all's cost per job at each size, against the smallest size."""
    sizes = _GROWTH_SIZES[:2] if args.quick else _GROWTH_SIZES
    rows: list[Row] = []
    first: tuple[str, str] | None = None
    for n in sizes:
        total, call = _cancel_all_round(n)
        measure = CANCEL_ALL_PER_JOB.format(n=n)
        note = (
            f"all resolved in {total * 1e3:,.0f} ms; "
            f"cancel_all() returned after {call * 1e3:,.0f} ms"
        )
        rows.append(
            Row(measure, OURS_SUBJECT, total / n * 1e6, "us", ref=first,
                target=Target("<=", 1.5) if first else None, note=note)
        )  # fmt: skip
        first = first or (measure, OURS_SUBJECT)
    return rows


def _probe(subject: str, n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(_HERE / "_memory_probe.py"), subject, str(n)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"memory probe {subject} failed:\n{out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def memory_rows(args: BenchArgs) -> list[Row]:
    """Caller-process bytes per queued job, cancelpool against ProcessPoolExecutor."""
    n = args.count(_QUEUED, 10_000)
    peer = _probe("ppe", n)
    ours = _probe("cancelpool", n)
    _note(f"  memory: ppe {peer}, cancelpool {ours}")
    return [
        Row(MEMORY, PPE_QUEUED, peer["bytes_per_job"], "bytes", note=f"{n:,} queued"),
        Row(MEMORY, OURS_SUBJECT, ours["bytes_per_job"], "bytes", ref=(MEMORY, PPE_QUEUED),
            target=Target("<=", 1.0), note=f"{n:,} queued; RSS growth, fresh interpreter"),
    ]  # fmt: skip

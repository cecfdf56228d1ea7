"""Peers: what existing process pools do on this machine, 2 workers each.

Sections (see ``_common.SECTIONS``):
    throughput  20,000 trivial jobs (3,000 with --quick) submitted, then all collected.
    latency     submit -> result of one trivial job, sequential, after a warm-up.
    stop        two workers busy in ``sleep(100)``; cancel one job; time until its handle
                resolves, until its worker is dead (pidfd), until a newly submitted
                trivial job starts (pebble, anyio.to_process: the peers that can stop a
                running job at all).
    queued      2 blockers + 50 queued marker jobs; cancel the 50; release the blockers;
                count cancelled jobs that ran anyway (ProcessPoolExecutor, loky, pebble).
    timeout     pebble ``schedule(timeout=0.2)`` on a sleeping job:
                lateness = resolved - submitted - 0.2 s.

Every pool is shut down before the next one starts; nothing is left running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
import multiprocessing as mp
import os
import random
import select
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _jobs
from _common import (
    AIOMP_APPLY,
    AIOMP_MAP,
    ANYIO,
    LATENCY,
    LOKY,
    MP_APPLY,
    MP_IMAP,
    PEBBLE,
    PEBBLE_TIMEOUT,
    PPE,
    QUEUED_RAN,
    STOP_DIED,
    STOP_NEXT,
    STOP_RESOLVED,
    THROUGHPUT,
    TIMEOUT_LATE,
    BenchArgs,
    Row,
    now_ns,
    stat_rows,
)

WORKERS = 2
# Sequential trivial jobs before latency sampling starts: workers forked/spawned, code
# paths warm, first-use allocations done.
_LAT_WARMUP = 20
_QUEUED_JOBS = 50
_TIMEOUT_S = 0.2
# Polling for a job's start file: 0.5 ms keeps the wait short without burning the core
# the job itself needs (2 cores, 2 workers).
_FILE_POLL_S = 0.0005
# Backstop for anything that should take milliseconds; a hang fails loudly instead.
_BACKSTOP_S = 30.0
# pebble's manager loop period (pebble.common.CONSTS.sleep_unit): kills and timeouts
# happen on this tick.
_PEBBLE_TICK_S = 0.1


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- helpers


def wait_for_file(path: Path, backstop: float = _BACKSTOP_S) -> int:
    """Wait until a job announced itself in *path*; return the pid it wrote."""
    deadline = time.monotonic() + backstop
    while True:
        try:
            return int(path.read_text())
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"job never started: {path}")
        time.sleep(_FILE_POLL_S)


async def await_file(path: Path, backstop: float = _BACKSTOP_S) -> int:
    import anyio

    with anyio.fail_after(backstop):
        while True:
            try:
                return int(path.read_text())
            except FileNotFoundError:
                await anyio.sleep(_FILE_POLL_S)


class DeathWatch:
    """Timestamp a process's death exactly: a thread blocks on the process's pidfd.

    A pidfd becomes readable when the process terminates, whoever its parent is, so
    this works for pebble's forked workers and anyio's ``python -m`` workers alike.
    """

    def __init__(self, pid: int) -> None:
        self._fd = os.pidfd_open(pid)
        self.dead_ns: int | None = None
        self._thread = threading.Thread(target=self._run, name=f"deathwatch-{pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        select.select([self._fd], [], [])
        self.dead_ns = now_ns()

    def wait(self, timeout: float = _BACKSTOP_S) -> int:
        self._thread.join(timeout)
        if self.dead_ns is None:
            raise TimeoutError("the cancelled job's worker never died")
        os.close(self._fd)
        return self.dead_ns


def _throughput_row(subject: str, n: int, elapsed_ns: int) -> Row:
    ref = None if subject == MP_IMAP else (THROUGHPUT, MP_IMAP)
    return Row(THROUGHPUT, subject, n / (elapsed_ns / 1e9), "jobs/s", ref=ref, note=f"n={n}")


def _latency_rows(subject: str, samples: Sequence[int]) -> list[Row]:
    ref = None if subject == ANYIO else ANYIO
    return stat_rows(LATENCY, subject, samples, ("p50", "p90"), ref_subject=ref)


def _check(results: Sequence[int], n: int) -> None:
    if list(results) != list(range(1, n + 1)):
        raise AssertionError("a peer returned wrong results")


def _sync_latency(call: Callable[[int], int], n: int) -> list[int]:
    for i in range(_LAT_WARMUP):
        call(i)
    samples = []
    for i in range(n):
        t0 = now_ns()
        result = call(i)
        samples.append(now_ns() - t0)
        if result != i + 1:
            raise AssertionError("a peer returned a wrong result")
    return samples


# ---------------------------------------------------- throughput + latency, one pool each

Submit = Callable[..., Any]  # submit(fn, *args) -> concurrent.futures.Future-like


def _futures_rows(subject: str, submit: Submit, args: BenchArgs) -> list[Row]:
    """Throughput and latency for a pool with ``submit(fn, *args) -> future``."""
    rows = []
    [f.result() for f in [submit(_jobs.inc, i) for i in range(4 * WORKERS)]]
    if args.wants("throughput"):
        n = args.count(20_000, 3_000)
        t0 = now_ns()
        futures = [submit(_jobs.inc, i) for i in range(n)]
        results = [f.result() for f in futures]
        rows.append(_throughput_row(subject, n, now_ns() - t0))
        _check(results, n)
    if args.wants("latency"):
        samples = _sync_latency(lambda i: submit(_jobs.inc, i).result(), args.count(300, 60))
        rows += _latency_rows(subject, samples)
    return rows


def _ppe_rows(args: BenchArgs) -> list[Row]:
    with cf.ProcessPoolExecutor(max_workers=WORKERS) as ex:
        return _futures_rows(PPE, ex.submit, args)


def _loky_rows(args: BenchArgs) -> list[Row]:
    import loky

    ex = loky.ProcessPoolExecutor(max_workers=WORKERS)
    try:
        return _futures_rows(LOKY, ex.submit, args)
    finally:
        ex.shutdown(wait=True)


def _pebble_submit(pool: Any) -> Submit:
    def submit(fn: Callable[..., Any], *fn_args: Any, timeout: float | None = None) -> Any:
        return pool.schedule(fn, args=fn_args, timeout=timeout)

    return submit


def _pebble_rows(args: BenchArgs) -> list[Row]:
    import pebble

    pool = pebble.ProcessPool(max_workers=WORKERS)
    try:
        return _futures_rows(PEBBLE, _pebble_submit(pool), args)
    finally:
        pool.close()
        pool.join()


def _mp_pool_rows(args: BenchArgs) -> list[Row]:
    rows = []
    pool = mp.get_context().Pool(WORKERS)
    try:
        pool.map(_jobs.inc, range(4 * WORKERS))
        if args.wants("throughput"):
            n = args.count(20_000, 3_000)
            t0 = now_ns()
            results = list(pool.imap(_jobs.inc, range(n), chunksize=1))
            rows.append(_throughput_row(MP_IMAP, n, now_ns() - t0))
            _check(results, n)
        if args.wants("latency"):
            call = lambda i: pool.apply_async(_jobs.inc, (i,)).get()  # noqa: E731
            rows += _latency_rows(MP_APPLY, _sync_latency(call, args.count(300, 60)))
    finally:
        pool.close()
        pool.join()
    return rows


def _aiomp_rows(args: BenchArgs) -> list[Row]:
    import aiomultiprocess

    async def main() -> list[Row]:
        rows = []
        async with aiomultiprocess.Pool(processes=WORKERS) as pool:
            await pool.map(_jobs.ainc, range(4 * WORKERS))
            if args.wants("throughput"):
                n = args.count(20_000, 3_000)
                t0 = now_ns()
                results = await pool.map(_jobs.ainc, range(n))
                rows.append(_throughput_row(AIOMP_MAP, n, now_ns() - t0))
                _check(results, n)
            if args.wants("latency"):
                # Each call costs ~16 ms (aiomultiprocess polls every 5 ms): fewer samples.
                for i in range(_LAT_WARMUP // 4):
                    await pool.apply(_jobs.ainc, (i,))
                samples = []
                for i in range(args.count(150, 30)):
                    t0 = now_ns()
                    await pool.apply(_jobs.ainc, (i,))
                    samples.append(now_ns() - t0)
                rows += _latency_rows(AIOMP_APPLY, samples)
        return rows

    try:
        return asyncio.run(main())
    finally:
        # aiomultiprocess keeps a module-global multiprocessing Manager (a server process)
        # alive until interpreter exit; stop it so no process outlives this peer.
        from aiomultiprocess import core

        if core._manager is not None:
            core._manager.shutdown()
            core._manager = None


def _anyio_rows(args: BenchArgs) -> list[Row]:
    import anyio
    from anyio import to_process

    async def main() -> list[Row]:
        rows = []
        limiter = anyio.CapacityLimiter(WORKERS)
        run = functools.partial(to_process.run_sync, limiter=limiter)

        async def one(i: int, out: list[int]) -> None:
            out[i] = await run(_jobs.inc, i)

        async def run_all(n: int) -> list[int]:
            out = [0] * n
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i, out)
            return out

        await run_all(4 * WORKERS)
        if args.wants("throughput"):
            n = args.count(20_000, 3_000)
            t0 = now_ns()
            results = await run_all(n)
            rows.append(_throughput_row(ANYIO, n, now_ns() - t0))
            _check(results, n)
        if args.wants("latency"):
            for i in range(_LAT_WARMUP):
                await run(_jobs.inc, i)
            samples = []
            for i in range(args.count(300, 60)):
                t0 = now_ns()
                await run(_jobs.inc, i)
                samples.append(now_ns() - t0)
            rows += _latency_rows(ANYIO, samples)
        return rows

    # anyio kills its worker processes when the event loop shuts down.
    return anyio.run(main)


# ------------------------------------------------------------------ stopping a running job


def _stop_rows(subject: str, resolved: list[int], died: list[int], nxt: list[int]) -> list[Row]:
    return [
        *stat_rows(STOP_RESOLVED, subject, resolved),
        *stat_rows(STOP_DIED, subject, died, unit="ms"),
        *stat_rows(STOP_NEXT, subject, nxt, unit="ms"),
    ]


def _pebble_stop_rows(args: BenchArgs, tmp: Path) -> list[Row]:
    import pebble

    resolved: list[int] = []
    died: list[int] = []
    nxt: list[int] = []
    pool = pebble.ProcessPool(max_workers=WORKERS)
    try:
        for r in range(args.count(15, 3)):
            a, b = tmp / f"pebble-stop-a{r}", tmp / f"pebble-stop-b{r}"
            fa = pool.schedule(_jobs.sleep_marked, args=(str(a), 100))
            fb = pool.schedule(_jobs.sleep_marked, args=(str(b), 100))
            watch = DeathWatch(wait_for_file(a))
            wait_for_file(b)
            done_at: list[int] = []
            time.sleep(random.uniform(0, _PEBBLE_TICK_S))  # random phase vs pebble's tick
            fa.add_done_callback(lambda _f, d=done_at: d.append(now_ns()))
            t0 = now_ns()
            fa.cancel()
            # Both workers are busy: the new job needs the cancelled job's worker replaced.
            started = pool.schedule(_jobs.started_ns).result(timeout=_BACKSTOP_S)
            dead = watch.wait()
            fb.cancel()
            resolved.append(done_at[0] - t0)
            died.append(dead - t0)
            nxt.append(started - t0)
    finally:
        pool.close()
        pool.join()
    note = "future resolves at cancel(); the job runs on until the manager kills it"
    rows = _stop_rows(PEBBLE, resolved, died, nxt)
    return [r if r.measure != f"{STOP_RESOLVED} p50" else _with_note(r, note) for r in rows]


def _with_note(row: Row, note: str) -> Row:
    return Row(row.measure, row.subject, row.value, row.unit, row.ref, row.target,
               f"{row.note}; {note}")  # fmt: skip


def _anyio_stop_rows(args: BenchArgs, tmp: Path) -> list[Row]:
    import anyio
    from anyio import to_process

    resolved: list[int] = []
    died: list[int] = []
    nxt: list[int] = []

    async def main() -> None:
        limiter = anyio.CapacityLimiter(WORKERS)

        Scopes = dict[Path, anyio.CancelScope]

        async def victim(path: Path, scopes: Scopes, done: list[int]) -> None:
            with anyio.CancelScope() as scope:
                scopes[path] = scope
                await to_process.run_sync(
                    _jobs.sleep_marked, str(path), 100, cancellable=True, limiter=limiter
                )
            done.append(now_ns())

        for r in range(args.count(10, 3)):
            a, b = tmp / f"anyio-stop-a{r}", tmp / f"anyio-stop-b{r}"
            scopes: dict[Path, anyio.CancelScope] = {}
            done_a: list[int] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(victim, a, scopes, done_a)
                tg.start_soon(victim, b, scopes, [])
                watch = DeathWatch(await await_file(a))
                await await_file(b)
                t0 = now_ns()
                scopes[a].cancel()
                started = await to_process.run_sync(_jobs.started_ns, limiter=limiter)
                scopes[b].cancel()
            resolved.append(done_a[0] - t0)
            died.append(watch.wait() - t0)
            nxt.append(started - t0)

    anyio.run(main)
    return _stop_rows(ANYIO, resolved, died, nxt)


# --------------------------------------------------------------------- queued-job cancel


def _queued_rows(args: BenchArgs, tmp: Path) -> list[Row]:
    def ppe() -> tuple[Submit, Callable[[], None]]:
        ex = cf.ProcessPoolExecutor(max_workers=WORKERS)
        return ex.submit, functools.partial(ex.shutdown, wait=True)

    def loky_() -> tuple[Submit, Callable[[], None]]:
        import loky

        ex = loky.ProcessPoolExecutor(max_workers=WORKERS)
        return ex.submit, functools.partial(ex.shutdown, wait=True)

    def pebble_() -> tuple[Submit, Callable[[], None]]:
        import pebble

        pool = pebble.ProcessPool(max_workers=WORKERS)

        def shutdown() -> None:
            pool.close()
            pool.join()

        return _pebble_submit(pool), shutdown

    rows = []
    rounds = args.count(3, 1)
    for subject, make in ((PPE, ppe), (LOKY, loky_), (PEBBLE, pebble_)):
        try:
            accepted = ran = ran_accepted = 0
            for r in range(rounds):
                tag = f"queued-{subject.split()[0]}-{r}"
                submit, shutdown = make()
                try:
                    cancelled = _queued_cancel(submit, tmp, tag)
                finally:
                    shutdown()  # every job has run or been dropped once this returns
                marks = tmp / f"{tag}-marks"
                done = {int(x) for x in marks.read_text().split()} if marks.exists() else set()
                accepted += len(cancelled)
                ran += len(done)
                ran_accepted += len(done & cancelled)
        except ImportError as exc:
            _note(f"peers: {subject} skipped ({exc})")
            continue
        total = rounds * _QUEUED_JOBS
        note = (
            f"{rounds}x{_QUEUED_JOBS} cancelled; cancel() returned True for {accepted}/{total}"
            f" ({ran_accepted} of those ran)"
        )
        rows.append(Row(QUEUED_RAN, subject, ran, "jobs", note=note))
    return rows


def _queued_cancel(submit: Submit, tmp: Path, tag: str) -> set[int]:
    """Block the workers, queue marker jobs, cancel them all, release the workers.

    Returns the indices of the jobs whose ``cancel()`` returned True. A job counts as
    "ran anyway" if it ran although we called ``cancel()`` on it, whatever that returned:
    the caller asked for it not to run.
    """
    marks, release = tmp / f"{tag}-marks", tmp / f"{tag}-release"
    starts = [tmp / f"{tag}-blocker{k}" for k in range(WORKERS)]
    blockers = [submit(_jobs.block_until, str(s), str(release)) for s in starts]
    try:
        for s in starts:
            wait_for_file(s)
        queued = [submit(_jobs.append_marker, str(marks), i) for i in range(_QUEUED_JOBS)]
        cancelled = {i for i, f in enumerate(queued) if f.cancel()}
    finally:
        release.touch()
    for f in blockers:
        f.result(timeout=_BACKSTOP_S)
    return cancelled


# --------------------------------------------------------------------------- timeouts


def _pebble_timeout_rows(args: BenchArgs, tmp: Path) -> list[Row]:
    import pebble

    late: list[int] = []
    pool = pebble.ProcessPool(max_workers=WORKERS)
    try:
        for r in range(args.count(20, 5)):
            # Two concurrent naps: both workers are up and idle before the timed job,
            # so a replacement still starting (after the previous kill) is not counted.
            for f in [pool.schedule(_jobs.nap, args=(0.02,)) for _ in range(WORKERS)]:
                f.result(timeout=_BACKSTOP_S)
            # pebble checks timeouts on a 100 ms tick; a random phase keeps this loop from
            # locking onto the tick and reporting one lateness 20 times.
            time.sleep(random.uniform(0, _PEBBLE_TICK_S))
            resolved = threading.Event()
            done_at: list[int] = []

            def on_done(_f: Any, d: list[int] = done_at, ev: threading.Event = resolved) -> None:
                d.append(now_ns())
                ev.set()

            t0 = now_ns()
            future = pool.schedule(
                _jobs.sleep_marked, args=(str(tmp / f"timeout-{r}"), 100), timeout=_TIMEOUT_S
            )
            future.add_done_callback(on_done)
            if not resolved.wait(_BACKSTOP_S):
                raise TimeoutError("pebble never timed the job out")
            if not isinstance(future.exception(), TimeoutError):
                raise AssertionError(f"expected TimeoutError, got {future.exception()!r}")
            late.append(done_at[0] - t0 - int(_TIMEOUT_S * 1e9))
    finally:
        pool.close()
        pool.join()
    return stat_rows(TIMEOUT_LATE, PEBBLE_TIMEOUT, late, unit="ms")


# ------------------------------------------------------------------------------ entry


def peer_rows(args: BenchArgs) -> list[Row]:
    """All peer rows the sections selected in *args* ask for."""
    rows: list[Row] = []
    if args.wants("throughput") or args.wants("latency"):
        for subject, fn in (
            (PPE, _ppe_rows),
            (MP_IMAP, _mp_pool_rows),
            (LOKY, _loky_rows),
            (PEBBLE, _pebble_rows),
            (AIOMP_MAP, _aiomp_rows),
            (ANYIO, _anyio_rows),
        ):
            rows += _timed(subject, fn, args)
    with tempfile.TemporaryDirectory(prefix="cancelpool-bench-") as d:
        tmp = Path(d)
        if args.wants("stop"):
            rows += _timed("pebble stop", lambda a: _pebble_stop_rows(a, tmp), args)
            rows += _timed("anyio stop", lambda a: _anyio_stop_rows(a, tmp), args)
        if args.wants("queued"):
            rows += _timed("queued cancel", lambda a: _queued_rows(a, tmp), args)
        if args.wants("timeout"):
            rows += _timed("pebble timeout", lambda a: _pebble_timeout_rows(a, tmp), args)
    return rows


def _timed(what: str, fn: Callable[[BenchArgs], list[Row]], args: BenchArgs) -> list[Row]:
    t0 = time.monotonic()
    try:
        rows = fn(args)
    except ImportError as exc:
        _note(f"peers: {what} skipped ({exc})")
        return []
    _note(f"peers: {what}: {time.monotonic() - t0:.1f} s")
    return rows

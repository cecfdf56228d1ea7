"""cancelpool's rows for ``bench_pool.py``: the measures of ``_common.OURS``, 2 workers.

Sections (see ``_common.SECTIONS``), each on fresh pools, every pool shut down before
the next one starts:
    throughput  20,000 trivial async jobs (3,000 --quick) submitted, then all collected.
    latency     one trivial job submit -> result, sequential, p50/p90 after a warm-up.
    stop        a job reports "ready" right before ``await anyio.sleep(100)``; once the
                caller got that event (plus 1-2 ms, so the worker is idle as in the
                floor), t0 and ``handle.cancel()``. **job sees it**: the job's own
                ``perf_counter_ns()`` in its ``except BaseException`` (its partial
                result) - t0. **handle resolved**: ``handle.exception()`` returns in the
                caller - t0. **next job starts**: concurrency=1 and the other worker is
                held busy, so a trivial job queued before the cancel can only run once
                the cancelled job's place frees up; its start (in the worker) - t0.
    queued      2 blockers + 50 queued jobs that append their index to a file; cancel
                the 50; release the blockers; count cancelled jobs that ran anyway. Two
                ways of being queued: in the supervisor (concurrency=1) and already sent
                to a worker whose event loop is blocked (the Run sits in its pipe).
    timeout     ``timeout=0.2`` on a job sleeping 10 s; lateness = handle resolved
                (done-callback) - job started (its own clock, reported as progress) -
                0.2 s.
    cancel_all  10,000 live jobs (concurrency=5000, all running, each a cancel_probe in
                ``anyio.sleep(100)``), names ``user_{i % 100}_job``;
                ``cancel_all(name_pattern="user_*")``; until every handle has resolved
                (the note adds when the first and the last job saw the cancellation).
    progress    one job reporting 200,000 progress events to an ``on_progress``
                callback that checks none is lost and all come in order.

Asyncio workers (``use_uvloop=False``) give the plain ``cancelpool`` rows; uvloop workers
give ``cancelpool (uvloop)`` rows for throughput, latency, stop and timeout.
"""

from __future__ import annotations

import multiprocessing.forkserver
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _jobs
import psutil
from _common import (
    CANCEL_ALL,
    CANCEL_NEXT,
    CANCEL_RESOLVED,
    CANCEL_SEEN,
    FLOOR_READER_UVLOOP,
    LATENCY,
    PROGRESS,
    QUEUED_RAN,
    THROUGHPUT,
    TIMEOUT_LATE,
    BenchArgs,
    Row,
    now_ns,
    ours_row,
    ours_stat_rows,
    percentile,
)
from _peers import wait_for_file

from cancelpool import CancelationReason, CancelPool, JobCancelled

WORKERS = 2
# (variant, use_uvloop): "" is asyncio workers, the plain "cancelpool" subject.
_ASYNCIO = ("", False)
_UVLOOP = ("uvloop", True)
_LAT_WARMUP = 20
_STOP_WARMUP = 5
_QUEUED_JOBS = 50
_TIMEOUT_S = 0.2
_CANCEL_ALL_JOBS = 10_000
_CANCEL_ALL_CONCURRENCY = 5_000
# Backstop for anything that should take milliseconds: a hang fails loudly instead.
_BACKSTOP_S = 30.0
# shutdown() cancels running jobs; they stop within milliseconds (cancel_grace is 5 s).
_SHUTDOWN_BACKSTOP_S = 15.0


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _us(ns: float) -> str:
    return f"{ns / 1e3:.0f} us"


@contextmanager
def _pool(use_uvloop: bool, **kwargs: Any) -> Iterator[CancelPool]:
    """A started pool of 2 workers, always shut down (running jobs cancelled) on exit."""
    pool = CancelPool(workers=WORKERS, use_uvloop=use_uvloop, **kwargs)
    try:
        pool.__enter__()
        yield pool
    finally:
        _shutdown(pool)


def _shutdown(pool: CancelPool) -> None:
    """Shut *pool* down; if that hangs, kill its workers and fail loudly (never hang)."""
    stopper = threading.Thread(
        target=pool.shutdown,
        kwargs={"wait": True, "cancel_pending": True, "cancel_running": True},
        name="cancelpool-bench-shutdown",
        daemon=True,
    )
    stopper.start()
    stopper.join(_SHUTDOWN_BACKSTOP_S)
    if not stopper.is_alive():
        return
    pids = [w.pid for w in pool.statistics().workers if w.pid is not None]
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    stopper.join(_SHUTDOWN_BACKSTOP_S)
    raise RuntimeError(
        f"cancelpool: shutdown() hung for {_SHUTDOWN_BACKSTOP_S:.0f} s; killed workers {pids}"
        + (" and it still hangs" if stopper.is_alive() else "")
    )


class _AllDone:
    """A done-callback for many handles: the time the last one resolved, and an event.

    Used instead of ``concurrent.futures.wait`` so that the time measured is when the
    pool resolved the handles, not the cost of ``wait`` over 10,000 futures (and because
    ``wait``/``as_completed`` over several handles of one pool deadlocked when this was
    written: every handle shares one non-reentrant condition lock).
    """

    def __init__(self, handles: list[Any]) -> None:
        self.left = len(handles)
        self.last_ns = 0
        self.lock = threading.Lock()
        self.event = threading.Event()
        if not handles:
            self.event.set()
        for handle in handles:
            handle.add_done_callback(self)

    def __call__(self, _handle: Any) -> None:
        with self.lock:
            self.left -= 1
            if self.left == 0:
                self.last_ns = now_ns()
                self.event.set()

    def wait(self, what: str) -> int:
        if not self.event.wait(_BACKSTOP_S):
            raise RuntimeError(f"{what}: {self.left} handles never resolved")
        return self.last_ns


def _wait_ready(ready: threading.Event, what: str) -> None:
    if not ready.wait(_BACKSTOP_S):
        raise RuntimeError(f"{what}: the job never reported it was running")


# --------------------------------------------------------------- throughput and latency


def _throughput_latency_rows(args: BenchArgs, variant: str, use_uvloop: bool) -> list[Row]:
    out: list[Row] = []
    with _pool(use_uvloop) as pool:
        warm = [pool.submit(_jobs.ainc, i) for i in range(200)]
        assert [h.result(_BACKSTOP_S) for h in warm] == [i + 1 for i in range(200)]
        if args.wants("throughput"):
            n = args.count(20_000, 3_000)
            t0 = now_ns()
            handles = [pool.submit(_jobs.ainc, i) for i in range(n)]
            t_submitted = now_ns()
            results = [h.result(_BACKSTOP_S) for h in handles]
            elapsed = now_ns() - t0
            if results != [i + 1 for i in range(n)]:
                raise RuntimeError(f"cancelpool throughput ({variant}): wrong results")
            note = f"n={n}; submit loop alone {n / ((t_submitted - t0) / 1e9):,.0f}/s"
            out.append(ours_row(THROUGHPUT, n / (elapsed / 1e9), note=note, variant=variant))
        if args.wants("latency"):
            samples = []
            for i in range(_LAT_WARMUP + args.count(300, 60)):
                t0 = now_ns()
                result = pool.submit(_jobs.ainc, i).result(_BACKSTOP_S)
                if i >= _LAT_WARMUP:
                    samples.append(now_ns() - t0)
                assert result == i + 1
            out += ours_stat_rows(LATENCY, samples, ("p50", "p90"), variant=variant)
    return out


# -------------------------------------------------------------------------------- stop


def _submit_probe(
    pool: CancelPool, seconds: float, **kwargs: Any
) -> tuple[Any, threading.Event, list[int]]:
    """Submit a cancel_probe; returns its handle, its "ready" event and its start time."""
    ready = threading.Event()
    started: list[int] = []

    def on_progress(_job: int, _msg: str, meta: dict[str, Any]) -> None:
        started.append(meta["t"])
        ready.set()

    handle = pool.submit(_jobs.cancel_probe, seconds, **kwargs)
    handle.on_progress(on_progress)
    return handle, ready, started


def _stop_rows(args: BenchArgs, variant: str, use_uvloop: bool) -> list[Row]:
    seen: list[int] = []
    resolved: list[int] = []
    call: list[int] = []
    nxt_started: list[int] = []
    nxt_returned: list[int] = []
    # concurrency=1: with the other worker held busy, the next job can only run on the
    # worker whose job was cancelled, once the pool knows that job is gone.
    with _pool(use_uvloop, concurrency=1) as pool:
        assert [pool.submit(_jobs.ainc, i).result(_BACKSTOP_S) for i in range(20)] == list(
            range(1, 21)
        )
        hold, hold_ready, _ = _submit_probe(pool, 100.0, name="hold")
        _wait_ready(hold_ready, "stop: hold")
        for r in range(_STOP_WARMUP + args.count(200, 40)):
            victim, ready, _ = _submit_probe(pool, 100.0, name="victim")
            _wait_ready(ready, "stop: victim")
            time.sleep(random.uniform(0.001, 0.002))  # the worker's loop is idle
            nxt = pool.submit(_jobs.astarted_ns)  # waits in the supervisor's queue
            t0 = now_ns()
            victim.cancel()
            t_call = now_ns()
            exc = victim.exception(_BACKSTOP_S)
            t_resolved = now_ns()
            started = nxt.result(_BACKSTOP_S)
            t_returned = now_ns()
            if not isinstance(exc, JobCancelled) or not isinstance(exc.partial_result, int):
                raise RuntimeError(f"stop ({variant}): the victim ended with {exc!r}")
            if r < _STOP_WARMUP:
                continue
            seen.append(exc.partial_result - t0)
            resolved.append(t_resolved - t0)
            call.append(t_call - t0)
            nxt_started.append(started - t0)
            nxt_returned.append(t_returned - t0)
        hold.cancel()
        if not isinstance(hold.exception(_BACKSTOP_S), JobCancelled):
            raise RuntimeError(f"stop ({variant}): the held job did not end cancelled")
    ref = FLOOR_READER_UVLOOP if use_uvloop else None
    nxt_p50 = _us(percentile(nxt_returned, 50))
    nxt_note = f"same worker (concurrency=1); next job returned p50 {nxt_p50}"
    seen_note = f"cancel() itself returned after p50 {_us(percentile(call, 50))}"
    return [
        *ours_stat_rows(CANCEL_SEEN, seen, note=seen_note, ref_subject=ref, variant=variant),
        *ours_stat_rows(CANCEL_RESOLVED, resolved, variant=variant),
        *ours_stat_rows(CANCEL_NEXT, nxt_started, ("p50",), note=nxt_note, variant=variant),
    ]


# ------------------------------------------------------------------------------ queued


def _queued_round(tmp: Path, tag: str, in_pipe: bool) -> tuple[int, int, int]:
    """One round; returns (cancelled jobs that ran, cancel() returned True, jobs)."""
    marker = tmp / f"{tag}-marker"
    release = tmp / f"{tag}-release"
    starts = [tmp / f"{tag}-start{k}" for k in range(WORKERS)]
    # in_pipe: default concurrency, so the 50 jobs are sent to the workers at once, but
    # each worker's loop is blocked: the Run messages wait unread in the pipe.
    # Otherwise concurrency=1: the 50 wait in the supervisor's queue.
    kwargs: dict[str, Any] = {} if in_pipe else {"concurrency": 1}
    blocker = _jobs.block_loop if in_pipe else _jobs.block_until
    with _pool(False, **kwargs) as pool:
        assert pool.submit(_jobs.ainc, 1).result(_BACKSTOP_S) == 2
        blockers = [pool.submit(blocker, str(s), str(release)) for s in starts]
        for s in starts:
            wait_for_file(s)
        queued = [pool.submit(_jobs.append_marker, str(marker), i) for i in range(_QUEUED_JOBS)]
        said_true = sum(bool(h.cancel()) for h in queued)
        release.touch()
        for h in blockers:
            h.result(_BACKSTOP_S)
        _AllDone(queued).wait(f"queued ({tag})")
        not_cancelled = [h for h in queued if not isinstance(h.exception(), JobCancelled)]
        # A trivial job after them: every worker has read its pipe by now.
        assert [pool.submit(_jobs.ainc, i).result(_BACKSTOP_S) for i in range(4)] == [1, 2, 3, 4]
    ran = len(marker.read_text().split()) if marker.exists() else 0
    if not_cancelled:
        _note(f"queued ({tag}): {len(not_cancelled)} handles did not end in JobCancelled")
    return ran, said_true, len(queued)


def _queued_rows(args: BenchArgs, tmp: Path) -> list[Row]:
    out = []
    for in_pipe, variant, where in (
        (False, "", "queued in the supervisor (concurrency=1)"),
        (True, "in worker pipe", "sent to workers whose loops are blocked"),
    ):
        ran = said = total = 0
        rounds = args.count(3, 1)
        for r in range(rounds):
            a, b, c = _queued_round(tmp, f"q{int(in_pipe)}-{r}", in_pipe)
            ran, said, total = ran + a, said + b, total + c
        note = f"{rounds} x {_QUEUED_JOBS} jobs {where}; cancel() returned True {said}/{total}"
        out.append(ours_row(QUEUED_RAN, ran, note=note, variant=variant))
    return out


# ----------------------------------------------------------------------------- timeout


def _timeout_rows(args: BenchArgs, variant: str, use_uvloop: bool) -> list[Row]:
    late: list[int] = []
    seen_late: list[int] = []
    from_submit: list[int] = []
    timeout_ns = int(_TIMEOUT_S * 1e9)
    with _pool(use_uvloop) as pool:
        assert pool.submit(_jobs.ainc, 1).result(_BACKSTOP_S) == 2
        for _ in range(args.count(30, 5)):
            done_at: list[int] = []
            t_submit = now_ns()
            handle, ready, started = _submit_probe(pool, 10.0, timeout=_TIMEOUT_S)
            handle.add_done_callback(lambda _f, d=done_at: d.append(now_ns()))
            exc = handle.exception(_BACKSTOP_S)
            if not isinstance(exc, JobCancelled) or exc.reason is not CancelationReason.TIMEOUT:
                raise RuntimeError(f"timeout ({variant}): the job ended with {exc!r}")
            _wait_ready(ready, "timeout")
            while not done_at:  # the done-callback runs right after exception() wakes us
                time.sleep(0.0001)
            late.append(done_at[0] - started[0] - timeout_ns)
            seen_late.append(exc.partial_result - started[0] - timeout_ns)
            from_submit.append(done_at[0] - t_submit - timeout_ns)
    note = (
        f"from the job's start; job saw it p50 {_us(percentile(seen_late, 50))} late, "
        f"p99 {_us(percentile(seen_late, 99))}; from submit p50 {_us(percentile(from_submit, 50))}"
    )
    return ours_stat_rows(TIMEOUT_LATE, late, note=note, variant=variant)


# -------------------------------------------------------------------------- cancel_all


def cancel_all_round(pool: CancelPool, n: int) -> tuple[float, float, tuple[float, float]]:
    """Start ``n`` cancel_probe jobs (all must run at once), ``cancel_all`` them by
    pattern; milliseconds until every handle resolved, until ``cancel_all()`` returned,
    and when the first and the last job saw the cancellation."""
    handles = [pool.submit(_jobs.cancel_probe, 100.0, name=f"user_{i % 100}_job") for i in range(n)]
    all_done = _AllDone(handles)
    deadline = time.monotonic() + _BACKSTOP_S * max(1, n // 10_000)
    while pool.statistics().running < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"cancel_all: only {pool.statistics().running}/{n} ran")
        time.sleep(0.01)
    time.sleep(0.05)  # every job is in its await, every worker idle
    t0 = now_ns()
    count = pool.cancel_all(name_pattern="user_*")
    t_call = now_ns()
    t1 = all_done.wait("cancel_all")
    if count != n:
        raise RuntimeError(f"cancel_all: {count} of {n} jobs cancelled")
    errors = [h.exception() for h in handles]
    if not all(isinstance(e, JobCancelled) for e in errors):
        raise RuntimeError("cancel_all: a handle did not end in JobCancelled")
    seen = [e.partial_result - t0 for e in errors]  # type: ignore[union-attr]
    return (t1 - t0) / 1e6, (t_call - t0) / 1e6, (min(seen) / 1e6, max(seen) / 1e6)


def _cancel_all_rows(args: BenchArgs) -> list[Row]:
    times: list[float] = []
    call_ms: list[float] = []
    seen_ms: list[tuple[float, float]] = []
    with _pool(False, concurrency=_CANCEL_ALL_CONCURRENCY) as pool:
        for _ in range(args.count(3, 1)):
            total, call, seen = cancel_all_round(pool, _CANCEL_ALL_JOBS)
            times.append(total)
            call_ms.append(call)
            seen_ms.append(seen)
    rounds = ", ".join(f"{t:.0f}" for t in times)
    seen_txt = ", ".join(f"{a:.0f}-{b:.0f}" for a, b in seen_ms)
    calls = ", ".join(f"{c:.0f}" for c in call_ms)
    note = (
        f"worst of {len(times)} rounds ({rounds} ms); cancel_all() returned after "
        f"{calls} ms; jobs saw it (first-last) {seen_txt} ms; asyncio workers"
    )
    return [ours_row(CANCEL_ALL, max(times), note=note)]


# ---------------------------------------------------------------------------- progress


class _ProgressCounter:
    """An on_progress callback that counts events and checks their order."""

    def __init__(self) -> None:
        self.count = 0
        self.expected = 0
        self.out_of_order = 0
        self.first_sent = 0
        self.first_recv = 0
        self.last_recv = 0

    def __call__(self, _job: int, _msg: str, meta: dict[str, Any]) -> None:
        t = now_ns()
        i = meta["i"]
        if i != self.expected:
            self.out_of_order += 1
        if i == 0:
            self.first_sent = meta["t"]
            self.first_recv = t
        self.expected = i + 1
        self.count += 1
        self.last_recv = t


def _progress_run(pool: CancelPool, fn: Callable[..., Any], n: int) -> tuple[float, float, str]:
    counter = _ProgressCounter()
    handle = pool.submit(fn, n)
    handle.on_progress(counter)
    if handle.result(_BACKSTOP_S) != n:
        raise RuntimeError("progress: wrong result")
    # Callbacks of a batch run before the handle resolves; this is only a backstop.
    deadline = time.monotonic() + 5.0
    while counter.count < n and time.monotonic() < deadline:
        time.sleep(0.001)
    lost = n - counter.count
    check = (
        "none lost, in order"
        if lost == 0 and counter.out_of_order == 0
        else f"LOST {lost}, {counter.out_of_order} out of order"
    )
    end_to_end = n / ((counter.last_recv - counter.first_sent) / 1e9)
    received = (n - 1) / max(1, counter.last_recv - counter.first_recv) * 1e9
    return end_to_end, received, check


def _progress_rows(args: BenchArgs) -> list[Row]:
    out = []
    with _pool(False) as pool:
        assert pool.submit(_jobs.ainc, 1).result(_BACKSTOP_S) == 2
        for fn, n, variant, how in (
            (_jobs.progress_burst, args.count(200_000, 50_000), "", "reports back to back"),
            (_jobs.progress_stream, args.count(100_000, 20_000), "yields between",
             "yields to its loop after each report"),
        ):  # fmt: skip
            end_to_end, received, check = _progress_run(pool, fn, n)
            note = (
                f"n={n}; {check}; job {how}; job's first report -> last callback "
                f"(first -> last received: {received:,.0f}/s)"
            )
            out.append(ours_row(PROGRESS, end_to_end, note=note, variant=variant))
    return out


# --------------------------------------------------------------------------------- all


def _timed(what: str, fn: Callable[..., list[Row]], *fn_args: Any) -> list[Row]:
    t0 = time.monotonic()
    rows = fn(*fn_args)
    _note(f"  cancelpool {what}: {time.monotonic() - t0:.1f} s")
    return rows


def _stop_forkserver(was_running: bool) -> None:
    """Stop the fork server our pools started (it would outlive the run otherwise)."""
    server = multiprocessing.forkserver._forkserver
    if not was_running and getattr(server, "_forkserver_pid", None) is not None:
        server._stop()


def forkserver_running() -> bool:
    """Whether multiprocessing's fork server runs already (then it is not ours to stop)."""
    return getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None) is not None


def rows(args: BenchArgs) -> list[Row]:
    """cancelpool's rows (see the module docstring)."""
    forkserver_was_running = forkserver_running()
    out: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="cancelpool-bench-") as tmp_name:
            tmp = Path(tmp_name)
            for variant, use_uvloop in (_ASYNCIO, _UVLOOP):
                label = variant or "asyncio"
                if args.wants("throughput") or args.wants("latency"):
                    out += _timed(
                        f"throughput/latency ({label})",
                        _throughput_latency_rows, args, variant, use_uvloop,
                    )  # fmt: skip
                if args.wants("stop"):
                    out += _timed(f"stop ({label})", _stop_rows, args, variant, use_uvloop)
                if args.wants("timeout"):
                    out += _timed(f"timeout ({label})", _timeout_rows, args, variant, use_uvloop)
            if args.wants("queued"):
                out += _timed("queued", _queued_rows, args, tmp)
            if args.wants("cancel_all"):
                out += _timed("cancel_all", _cancel_all_rows, args)
            if args.wants("progress"):
                out += _timed("progress", _progress_rows, args)
    finally:
        _stop_forkserver(forkserver_was_running)
    return out

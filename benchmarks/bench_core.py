"""The in-process core against bare anyio, measured in one run.

    python benchmarks/bench_core.py [--quick] [--json PATH]

Rows (each a ratio against a control measured in the same run, on the same loop):

* ``async with Cancelable()`` enter+exit  vs  ``with anyio.CancelScope()``  (target <= 3x)
* ``async with Cancelable.with_timeout(10)``  vs  ``with anyio.move_on_after(10)``
* ``op.cancel_sync()`` from a plain thread -> the task awaiting ``anyio.sleep(100)``
  inside the operation resumes: one-way latency, median and p99  vs  the control
  ``loop.call_soon_threadsafe(scope.cancel)`` (trio: ``TrioToken.run_sync_soon``)
  (target p50 <= 1.5x)

on asyncio and uvloop (the targets), and trio (for information).

One-way latency: the thread stamps ``time.perf_counter_ns()`` just before it calls
``cancel_sync()``; the task stamps it again the moment its ``await`` raises. The
thread is handed the operation from a loop callback, which runs only once the task has
suspended in ``sleep()``, so every run measures a wake-up of a blocked task.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import queue
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio

from cancelpool import Cancelable, OperationRegistry
from cancelpool._core._loop import LoopHandle

now_ns = time.perf_counter_ns

BACKENDS: list[tuple[str, str, dict[str, Any]]] = [
    ("asyncio", "asyncio", {}),
    ("uvloop", "asyncio", {"use_uvloop": True}),
    ("trio", "trio", {}),
]
# The targets hold on the loops workers run (asyncio, uvloop); trio is for information.
TARGET_BACKENDS = {"asyncio", "uvloop"}


@dataclass
class Row:
    measure: str
    backend: str
    ours: float
    control: float
    unit: str
    target: float | None  # the ratio ours / control must not exceed this

    @property
    def ratio(self) -> float:
        return self.ours / self.control if self.control else float("nan")

    @property
    def verdict(self) -> str:
        if self.target is None or self.backend not in TARGET_BACKENDS:
            return "info"
        return "ok" if self.ratio <= self.target else "MISSED"


# ----------------------------------------------------------------- enter + exit


async def _per_op_ns(body: Callable[[int], Awaitable[None]], n: int) -> float:
    t0 = now_ns()
    await body(n)
    return (now_ns() - t0) / n


async def cancelable_plain(n: int) -> None:
    for _ in range(n):
        async with Cancelable():
            pass


async def cancel_scope_plain(n: int) -> None:
    for _ in range(n):
        with anyio.CancelScope():
            pass


async def cancelable_timeout(n: int) -> None:
    for _ in range(n):
        async with Cancelable.with_timeout(10):
            pass


async def move_on_after(n: int) -> None:
    for _ in range(n):
        with anyio.move_on_after(10):
            pass


async def compare_overhead(
    ours: Callable[[int], Awaitable[None]],
    control: Callable[[int], Awaitable[None]],
    n: int,
    rounds: int,
) -> tuple[float, float]:
    """Median per-operation cost (ns) of ``ours`` and ``control``, rounds interleaved."""
    await ours(n // 10)  # warm up caches and lazy imports
    await control(n // 10)
    ours_ns: list[float] = []
    control_ns: list[float] = []
    for _ in range(rounds):
        OperationRegistry.get_instance()._clear()
        gc.collect()
        ours_ns.append(await _per_op_ns(ours, n))
        control_ns.append(await _per_op_ns(control, n))
    return statistics.median(ours_ns), statistics.median(control_ns)


# -------------------------------------------------------------- thread wake-up


class Canceller(threading.Thread):
    """A plain thread that cancels whatever it is handed, stamping the time first."""

    def __init__(self) -> None:
        super().__init__(name="bench-canceller", daemon=True)
        self.inbox: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
        self.stamp = 0

    def run(self) -> None:
        while (fire := self.inbox.get()) is not None:
            self.stamp = now_ns()
            fire()


async def wakeup_latencies(runs: int) -> tuple[list[float], list[float]]:
    """One-way latencies (us) of ``cancel_sync()`` and of the bare control, interleaved."""
    handle = LoopHandle.current()
    thread = Canceller()
    thread.start()
    ours: list[float] = []
    control: list[float] = []
    try:
        for i in range(runs + runs // 10):
            warm = i < runs // 10
            # cancelpool: the operation is cancelled from the thread.
            woke = 0
            try:
                async with Cancelable() as op:
                    # Runs on the loop after this task has suspended in sleep().
                    handle.call_soon_threadsafe(thread.inbox.put, op.cancel_sync)
                    try:
                        await anyio.sleep(100)
                    finally:
                        woke = now_ns()
            except Exception:
                pass
            if not warm:
                ours.append((woke - thread.stamp) / 1000)
            # Control: the bare scope, cancelled through the loop's own wake-up.
            with anyio.CancelScope() as scope:
                handle.call_soon_threadsafe(
                    thread.inbox.put,
                    lambda scope=scope: handle.call_soon_threadsafe(scope.cancel),
                )
                try:
                    await anyio.sleep(100)
                finally:
                    woke = now_ns()
            if not warm:
                control.append((woke - thread.stamp) / 1000)
    finally:
        thread.inbox.put(None)
        thread.join()
    return ours, control


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# ------------------------------------------------------------------------- run


async def measure_backend(backend: str, quick: bool) -> list[Row]:
    n = 2_000 if quick else 20_000
    rounds = 3 if quick else 7
    runs = 60 if quick else 300
    gc_was_enabled = gc.isenabled()
    rows: list[Row] = []
    try:
        ours, ctl = await compare_overhead(cancelable_plain, cancel_scope_plain, n, rounds)
        rows.append(
            Row("enter+exit: Cancelable() vs CancelScope()", backend, ours / 1000,
                ctl / 1000, "us", 3.0)
        )  # fmt: skip
        ours, ctl = await compare_overhead(cancelable_timeout, move_on_after, n, rounds)
        rows.append(
            Row("enter+exit: with_timeout(10) vs move_on_after(10)", backend, ours / 1000,
                ctl / 1000, "us", None)
        )  # fmt: skip
        gc.collect()
        gc.disable()
        lat, ctl_lat = await wakeup_latencies(runs)
    finally:
        if gc_was_enabled:
            gc.enable()
    rows.append(
        Row("cancel_sync() thread -> awaiting task, p50", backend,
            statistics.median(lat), statistics.median(ctl_lat), "us", 1.5)
    )  # fmt: skip
    rows.append(
        Row("cancel_sync() thread -> awaiting task, p99", backend,
            percentile(lat, 99), percentile(ctl_lat, 99), "us", None)
    )  # fmt: skip
    return rows


def print_table(rows: list[Row]) -> None:
    headers = ("measure", "backend", "cancelpool", "control", "ratio", "target", "")
    lines = [
        (
            r.measure,
            r.backend,
            f"{r.ours:.2f} {r.unit}",
            f"{r.control:.2f} {r.unit}",
            f"{r.ratio:.2f}x",
            f"<= {r.target:g}x" if r.target is not None else "-",
            r.verdict,
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    print(fmt.format(*headers))
    print(fmt.format(*("-" * w for w in widths)))
    for line in lines:
        print(fmt.format(*line))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write rows as JSON")
    parser.add_argument(
        "--backend",
        action="append",
        choices=[name for name, _, _ in BACKENDS],
        help="only these backends (repeatable; default: all)",
    )
    args = parser.parse_args(argv)
    rows: list[Row] = []
    for name, backend, options in BACKENDS:
        if args.backend and name not in args.backend:
            continue
        try:
            rows += anyio.run(measure_backend, name, args.quick, backend=backend,
                              backend_options=options)  # fmt: skip
        except ImportError as exc:  # e.g. uvloop or trio not installed
            print(f"skipping {name}: {exc}", file=sys.stderr)
    print(
        f"cancelpool core vs bare anyio  (Python {platform.python_version()}, "
        f"{'quick' if args.quick else 'full'} run)\n"
    )
    print_table(rows)
    if args.json:
        payload = {
            "python": platform.python_version(),
            "quick": args.quick,
            "rows": [dict(asdict(r), ratio=r.ratio, verdict=r.verdict) for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""cancelpool against its peers and the physical floors, in one run, as one table.

    python benchmarks/bench_pool.py [--quick] [--json out.json] [--only NAME,...]
                                    [--workers 1,2,4,8]

Rows come from three places, in this order:
    floors      ``_floors.floor_rows(args)``   pipe / add_reader / CancelScope wake-ups
    peers       ``_peers.peer_rows(args)``     ProcessPoolExecutor, mp.Pool, loky, pebble,
                                               aiomultiprocess, anyio.to_process
    cancelpool  ``_ours.rows(args)``           written by the pool engineer; optional
    growth      ``_growth.*_rows(args)``       workers, live jobs, queued jobs

Each row may name a reference row of the same run; the table prints the ratio and
checks the row's target (``_common.OURS`` lists cancelpool's). See benchmarks/README.md.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
from _common import BenchArgs, Row, Table, parse_args, run_meta
from _floors import floor_rows
from _peers import peer_rows

_OURS_FILE = Path(__file__).with_name("_ours.py")


def cancelpool_rows(args: BenchArgs) -> list[Row]:
    """cancelpool's rows, from ``benchmarks/_ours.py`` once it exists.

    ``_ours.py`` defines ``rows(args: BenchArgs) -> list[Row]`` and builds its rows with
    ``_common.ours_row`` / ``_common.ours_stat_rows``; it should honour
    ``args.wants(section)`` and ``args.count(full, quick)`` like the peers do.
    """
    if not _OURS_FILE.is_file():
        print("cancelpool rows: not available yet")
        return []
    # Imported by its plain name (benchmarks/ is sys.path[0]), so job functions defined
    # there pickle as ``_ours.fn`` and resolve in spawned workers too.
    ours = importlib.import_module("_ours")
    return list(ours.rows(args))


def growth_rows(args: BenchArgs) -> list[Row]:
    """How the costs grow (``_growth.py``): workers, live jobs, queued jobs."""
    growth = importlib.import_module("_growth")
    ours = importlib.import_module("_ours")
    rows: list[Row] = []
    was_running = ours.forkserver_running()
    try:
        for section, fn in (
            ("scaling", growth.scaling_rows),
            ("cancel_all_growth", growth.cancel_all_growth_rows),
            ("memory", growth.memory_rows),
        ):
            if args.wants(section):
                t0 = time.monotonic()
                rows += fn(args)
                print(f"  {section}: {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    finally:
        ours._stop_forkserver(was_running)
    return rows


def _stop_resource_trackers() -> None:
    """Stop and reap multiprocessing's and loky's resource-tracker processes.

    They would exit on their own when this interpreter does (their pipe closes), but
    then as orphans that linger as zombies until init reaps them; stopping them here,
    after every pool is gone, leaves nothing behind at all. Private API: best effort.
    """
    from multiprocessing import resource_tracker

    trackers = [resource_tracker._resource_tracker]
    if "loky" in sys.modules:
        from loky.backend import resource_tracker as loky_tracker

        trackers.append(loky_tracker._resource_tracker)
    for tracker in trackers:
        stop = getattr(tracker, "_stop", None)
        if stop is not None:
            stop()


def _leftover_processes() -> list[psutil.Process]:
    """This run's child processes that are still alive."""
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                left.append(child)
        except psutil.NoSuchProcess:
            pass
    return left


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv, description=__doc__.splitlines()[0])
    t0 = time.monotonic()
    rows: list[Row] = []
    if args.wants("floors"):
        rows += floor_rows(args)
    if args.wants_family("peers"):
        rows += peer_rows(args)
    if args.wants_family("cancelpool"):
        rows += cancelpool_rows(args)
        rows += growth_rows(args)
    seconds = time.monotonic() - t0

    table = Table(rows)
    print(table.render())
    print(f"{len(rows)} rows in {seconds:.1f} s{' (--quick)' if args.quick else ''}")
    if args.json is not None:
        table.write_json(args.json, run_meta(args, seconds))
        print(f"rows written to {args.json}")

    _stop_resource_trackers()
    left = _leftover_processes()
    if left:
        print("LEFTOVER PROCESSES:", *(f"{p.pid} {p.cmdline()}" for p in left), sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""bench_pool's sections with the worker watchdog on, off, or with a long threshold.

    python benchmarks/ab_watchdog.py on|off|slow --json F.json [--only timeout]

``off`` builds every cancelpool pool with ``loop_block_threshold=None`` (no watchdog
thread), ``slow`` with a 10 s threshold; ``on`` is the default. Run it interleaved
(off, on, off, on, ...) and compare the JSON rows: it isolates what the watchdog costs.
"""

from __future__ import annotations

import functools
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _ours  # noqa: E402 - after the path is set

# The loop_block_threshold each mode builds pools with; "on" keeps the default.
THRESHOLDS: dict[str, float | None] = {"off": None, "slow": 10.0}
MODES = ("on", *THRESHOLDS)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in MODES:
        raise SystemExit("usage: ab_watchdog.py on|off|slow [bench_pool.py options]")
    mode = sys.argv.pop(1)
    if mode in THRESHOLDS:
        _ours.CancelPool = functools.partial(  # type: ignore[misc]
            _ours.CancelPool, loop_block_threshold=THRESHOLDS[mode]
        )
    sys.argv[0] = str(HERE / "bench_pool.py")
    runpy.run_path(str(HERE / "bench_pool.py"), run_name="__main__")


if __name__ == "__main__":
    main()

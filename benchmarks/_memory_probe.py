"""One memory measurement in a fresh interpreter (run by ``_growth.memory_rows``).

    python benchmarks/_memory_probe.py cancelpool|ppe N

Both workers of a 2-worker pool are held by a job each; N trivial jobs are then
submitted and stay queued. Prints one JSON line: the caller process's RSS growth over N
(``bytes_per_job``), after a full collection. Then the workers are released and every
queued job must complete with its result: a queue that lost or broke jobs would make
the figure meaningless.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _jobs
from _peers import wait_for_file

from cancelpool import CancelPool

WORKERS = 2
BACKSTOP_S = 120.0


def main() -> None:
    subject, n = sys.argv[1], int(sys.argv[2])
    pool: Any
    if subject == "ppe":
        pool = cf.ProcessPoolExecutor(max_workers=WORKERS)
    elif subject == "cancelpool":
        pool = CancelPool(workers=WORKERS, concurrency=1)
    else:
        raise SystemExit(f"unknown subject {subject!r}: cancelpool or ppe")
    rss = psutil.Process().memory_info
    with pool, tempfile.TemporaryDirectory(prefix="cancelpool-bench-") as tmp_name:
        tmp = Path(tmp_name)
        release = tmp / "release"
        blockers = [
            pool.submit(_jobs.block_until, str(tmp / f"start{i}"), str(release))
            for i in range(WORKERS)
        ]
        for i in range(WORKERS):
            wait_for_file(tmp / f"start{i}")
        gc.collect()
        before = rss().rss
        handles = [pool.submit(_jobs.inc, i) for i in range(n)]
        gc.collect()
        after = rss().rss
        release.touch()
        for blocker in blockers:
            blocker.result(BACKSTOP_S)
        if [h.result(BACKSTOP_S) for h in handles] != [i + 1 for i in range(n)]:
            raise SystemExit(f"{subject}: a queued job was lost or gave a wrong result")
    print(json.dumps({"bytes_per_job": (after - before) / n, "before": before, "after": after}))


if __name__ == "__main__":
    main()

"""A program that uses a CancelPool, run as a real subprocess by ``test_leftovers.py``.

Usage: ``python _program.py MODE START_METHOD GATE_PATH``. Its jobs report to the test's
gate, so the test knows when they run and in which worker. It prints one JSON line with
its own pid and its workers' pids, then blocks in ``handle.result()`` until the test
kills it or interrupts it. Modes:

* ``run``: a sync job (CPU loop polling its token) and an async job (awaiting).
* ``blocked``: the sync job, and an async job that blocks its worker's loop for 30 s.
* ``sigint``: like ``run``, inside ``with CancelPool(...)``; on Ctrl-C it prints how
  each job ended (one JSON line) and exits 0.

It imports the jobs as ``faults._jobs``: the test puts ``tests/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from cancelpool import CancelPool
from faults import _jobs

# Seconds the ``blocked`` job keeps its worker's loop busy: far longer than any bound
# the test allows for an orphaned worker to exit.
BLOCKED_SECONDS = 30.0


def _hello(pool: CancelPool) -> None:
    workers = [w.pid for w in pool.statistics().workers]
    print(json.dumps({"supervisor": os.getpid(), "workers": workers}), flush=True)


def _outcome(handle: Any) -> dict[str, Any]:
    exc = handle.exception(0)
    return {
        "type": type(exc).__name__,
        "reason": str(getattr(exc, "reason", "")),
        "partial": handle.partial_result,
        "status": str(handle.status),
    }


def main(mode: str, method: str, gate: str) -> int:
    handles: dict[str, Any] = {}
    try:
        with CancelPool(workers=2, start_method=method, cancel_grace=1.0) as pool:
            # The sync job first: it needs a worker with nothing else running.
            handles["sync"] = pool.submit(_jobs.spin_sync, gate, "sync")
            if mode == "blocked":
                handles["blocked"] = pool.submit(_jobs.spin_async, gate, "blocked", BLOCKED_SECONDS)
            else:
                handles["async"] = pool.submit(_jobs.hold_forever, gate, "async", {"async": 1})
            _hello(pool)
            handles["sync"].result()
    except KeyboardInterrupt:
        if mode != "sigint":
            raise
        print(json.dumps({tag: _outcome(h) for tag, h in handles.items()}), flush=True)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

"""Every example script runs to completion and says what it demonstrates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# A backstop against a hung example, not a speed requirement: each takes about a
# second, the tour about two.
RUN_TIMEOUT = 60

# script -> lines (or fragments) its output must contain
EXPECTED = {
    "tour.py": [
        "stopped: operation 'slow-download' timed out",
        "stopped: user clicked Stop",
        "progress: 3/3 images",
        "page-3: cancelled, reason: parent",
        "any-of fired first on: budget",
        "all-of fired once both held",
        "timed out, but kept",
        "Tour complete.",
    ],
    "timeouts.py": ["(a TimeoutError: True)", "the total budget ran out first", "slow call:"],
    "tokens_from_threads.py": [
        "render stopped: stop button",
        "admin thread cancelled 2 jobs",
        "worker thread noticed: operation 'crunch' timed out",
    ],
    "progress.py": ["[ui]  100%", "[pipeline] load finished"],
    "streams.py": ["stopped: temperature limit reached", "kept 20 readings, last 30.0"],
    "hierarchies.py": [
        "worker-2: reason=parent",
        "parent still running",
        "TimeoutCancelation: operation 'request' timed out",
    ],
    "any_all_of.py": ["any-of: stopped by", "all-of: all 2 sources fired"],
    "decorators.py": [
        "the combined timeout fired",
        "the token fired for upload: shutting down",
        "indexed by Indexer.index",
        "audit: compress done (in nightly-batch)",
    ],
    "wrap.py": ["got https://example.com: 200 OK", "stopped after 4 items: enough for today"],
    "partial_results.py": ["translate timed out; kept", "status=cancelled, reason=timeout"],
    "registry.py": ["cancelled 2 operations of user 42", "still running: user_7_report"],
    "pool.py": [
        "quick crawl: ['docs.example/page-1'",
        "cancelled for user 42: 2",
        "user_7_crawl_2 still running",
        "checksum timed out: operation 'checksum' timed out",
        ": parent (parent job",
        "Pool tour complete.",
    ],
    "bridges.py": [
        "for operation 'monthly-report'",
        "own thread sees 'monthly-report'",
        "stored 10 readings from the sensor thread",
        "after the block: this AnyioBridge is closed",
    ],
    "integration_httpx.py": [
        "paused: user pressed pause; kept 524288 bytes",
        "resumed from 524288 (HTTP 206)",
        "complete and intact: True",
    ],
    "integration_logging.py": [
        "stopped: operation 'nightly-export' timed out after 0.05s",
        "logged: nightly-export cancelled, reason timeout",
        "logged ERROR: cancelpool: cancel callback",
        "with its traceback: True",
        "Logging example complete.",
    ],
    "integration_sqlalchemy.py": [
        "import stopped: operation 'import' timed out after 0.2s",
        "rows committed: 0; connections checked out: 0",
        "read 2000 rows, then: seen enough",
    ],
    "progress_bars.py": [
        "resized 120 images in 3 batches",
        "too-big: cancelled (too big for today), kept ",
        "batch-60",
    ],
    "integration_otel.py": [
        "[worker] span 'load' status=UNSET",
        "[worker] span 'cancelpool.job resize' status=OK",
        "events=['cancelpool.progress']",
        "[worker] span 'cancelpool.job wait_forever' status=UNSET",
        "events=['cancelpool.cancelled'] reason=manual",
        "stuck job: cancelled, reason manual",
        "[caller] span 'batch'",
        "the job ran in the batch's trace: True",
        "Tracing example complete.",
    ],
    "integration_fastapi.py": [
        "the client hangs up",
        "request stopped: Client disconnected (signal)",
        "job in its worker: cancelled (JobCancelled)",
        "FastAPI example complete.",
    ],
}


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script: str) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env,
        cwd=EXAMPLES.parent,
    )
    assert result.returncode == 0, result.stderr
    for expected in EXPECTED[script]:
        assert expected in result.stdout, f"{expected!r} missing from:\n{result.stdout}"

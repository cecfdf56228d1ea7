"""``cancelpool.progress_display`` off a terminal (a file): real jobs in real workers,
their outcomes on their rows, hostile names escaped, nothing cancelled by the display.
(On a real pty: tests/queue/test_queue_rich.py.)"""

from __future__ import annotations

import io

import pytest

from _handshake import Gate
from cancelpool import CancelPool, JobCancelled
from cancelpool._visible import done_total
from cancelpool.progress_display import ProgressDisplay, new_console, show_progress

from . import _jobs


@pytest.fixture(autouse=True)
def _no_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest-xdist exports COLUMNS=80, which rich (rightly) honours even on a file.
    monkeypatch.delenv("COLUMNS", raising=False)


def _console() -> tuple[io.StringIO, object]:
    out = io.StringIO()
    return out, new_console(file=out)


def test_show_progress_prints_the_final_state_once_off_a_terminal(pool: CancelPool) -> None:
    out, console = _console()
    handles = [
        pool.submit(_jobs.report_and_return, 3, "v", name="reports"),
        pool.submit(_jobs.fail, "\x1b]0;PWNED\x07 [red]boom[/red]", name="fails"),
    ]
    assert show_progress(handles, console=console) is True  # type: ignore[arg-type]
    text = out.getvalue()
    assert "\x1b" not in text  # no colour, no redraw on a file
    lines = text.splitlines()
    assert len(lines) == 2  # one frame, printed once, a line per job
    assert lines[0].split()[:2] == ["reports", "completed"]
    assert lines[1].split()[:2] == ["fails", "failed"]
    assert "\\x1b]0;PWNED\\x07 [red]boom[/red]" in lines[1]  # escaped, markup as typed


def test_waiting_cancels_nothing_and_a_cancelled_job_says_why(pool: CancelPool) -> None:
    gate = Gate()
    try:
        out, console = _console()
        held = pool.submit(_jobs.hold, gate.path, "held", name="held")
        gate.wait(1)
        with ProgressDisplay([held], console=console) as display:  # type: ignore[arg-type]
            assert display.wait(timeout=0.05) is False  # it gave up; the job runs on
            assert not held.done()
            held.cancel("the user left")
            assert display.wait() is True
        assert isinstance(held.exception(), JobCancelled)
        row = out.getvalue().splitlines()[-1]
        assert row.split()[:2] == ["held", "cancelled"]
        assert "manual: the user left" in row
    finally:
        gate.close()


def test_done_total_reads_counts_and_percent_and_nothing_else() -> None:
    assert done_total({"done": 3, "total": 4}) == (3.0, 4.0)
    assert done_total({"done": 9, "total": 4}) == (4.0, 4.0)  # clamped
    assert done_total({"percent": 37.5}) == (37.5, 100.0)
    assert done_total({"percent": 250}) == (100.0, 100.0)
    for bad in (
        None,
        [],
        {"done": True, "total": 2},
        {"done": 1, "total": 0},
        {"done": float("nan"), "total": 2},
        {"percent": float("inf")},
        {"done": "1", "total": "2"},
    ):
        assert done_total(bad) is None, bad

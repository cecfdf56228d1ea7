"""The CLI's rich output (issue 13 item 5), on a real pty and on a pipe: tables that
fit the terminal, colours only where wanted, live bars with rate and time left, and
job text (escape sequences, rich markup) shown as typed, never interpreted."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
from qhelpers import BACKSTOP, env
from test_queue_output import assert_terminal_safe, plant, run_on_pty

from cancelpool.queue import Queue

#: Markup rich would turn into styles, a link or an emoji if it read job text as markup.
MARKUP = "[bold red]boom[/bold red] [link=https://evil.example]x[/link] :smile:"
_SGR = re.compile(rb"\x1b\[([0-9;]*)m")


def _cells(line: str) -> int:
    """How many terminal cells a line takes (wide CJK characters count twice)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


@pytest.fixture
def marked(db: Path, queue: Queue) -> dict[str, int]:
    """Rows whose text is rich markup and very long names, as a planted row can hold."""
    now = time.time()
    return {
        "done": plant(
            db,
            status="completed",
            name=MARKUP,
            started_at=now - 3,
            ended_at=now,
            attempts=1,
            result='"[red]ok[/red]"',
        ),
        "long": plant(
            db,
            status="failed",
            name="n" * 80,
            task="qtasks_more:" + "t" * 80,
            started_at=now - 1,
            ended_at=now,
            attempts=1,
            error="ValueError: " + "e" * 120,
        ),
        "running": plant(
            db,
            status="running",
            name="counting",
            started_at=now - 2,
            attempts=1,
            progress_message=MARKUP,
            progress='{"done": 1, "total": 3}',
        ),
    }


@pytest.mark.sqlite_only  # plants SQLite rows
@pytest.mark.parametrize("columns", [60, 100, 200])
def test_ls_fits_the_terminal_one_line_per_job(db, marked, columns) -> None:
    code, out = run_on_pty(["ls", "--db", str(db)], columns=columns)
    assert code == 0
    text = assert_terminal_safe(out)
    lines = text.rstrip("\n").splitlines()
    assert len(lines) == 1 + len(marked)  # no row wrapped onto a second line
    assert all(_cells(line) <= columns for line in lines), lines
    assert lines[0].split()[:3] == ["ID", "STATUS", "NAME"]
    assert any("…" in line for line in lines)  # the long cells were cut, visibly
    for line, job_id in zip(lines[1:], sorted(marked.values()), strict=True):
        assert line.split()[0] == str(job_id)  # ids and statuses are never cut
    if columns == 200:
        assert MARKUP[:20] in text  # markup shown as typed (the cell may be cut to fit)


@pytest.mark.sqlite_only  # plants SQLite rows
def test_ls_shows_wide_text_whole_where_it_fits(db, queue) -> None:
    # 14 CJK characters take 28 cells, far under 200 columns: nothing of them may be cut.
    name = "日本語の名前です日本語の名前"
    now = time.time()
    plant(db, status="completed", name=name, started_at=now - 1, ended_at=now, result="1")
    code, out = run_on_pty(["ls", "--db", str(db)], columns=200)
    assert code == 0
    text = assert_terminal_safe(out)
    assert name in text, text
    assert "…" not in text
    # Where room is short, the row still fits the terminal (cut in cells, not letters).
    code, out = run_on_pty(["ls", "--db", str(db)], columns=60)
    assert code == 0
    lines = assert_terminal_safe(out).rstrip("\n").splitlines()
    assert len(lines) == 2
    assert all(_cells(line) <= 60 for line in lines), lines


@pytest.mark.sqlite_only  # plants SQLite rows
def test_ls_colours_follow_rich_and_no_color(db, marked) -> None:
    code, out = run_on_pty(["ls", "--db", str(db)], colour=True)
    assert code == 0
    codes = {m for m in _SGR.findall(out)}
    assert b"32" in codes  # completed is green
    assert b"31" in codes  # failed is red
    assert b"1" in codes  # a bold header
    assert "boom" in assert_terminal_safe(out)
    assert b"\x1b]8;" not in out  # the [link=...] in a name made no hyperlink
    # NO_COLOR: rich keeps bold, drops every colour.
    code, out = run_on_pty(["ls", "--db", str(db)], colour=False)
    assert code == 0
    for params in _SGR.findall(out):
        assert not re.search(rb"(^|;)(3[0-9]|9[0-7]|38)(;|$)", params), out
    # A pipe: no escape sequence at all, whole cells.
    piped = subprocess.run(
        [sys.executable, "-m", "cancelpool.cli", "ls", "--db", str(db)],
        capture_output=True,
        env={k: v for k, v in env().items() if k != "NO_COLOR"},
        timeout=BACKSTOP,
    )
    assert piped.returncode == 0
    assert b"\x1b" not in piped.stdout
    assert MARKUP.encode() in piped.stdout  # whole: on a pipe nothing is cut
    assert ("e" * 20).encode() in piped.stdout


@pytest.mark.sqlite_only  # plants SQLite rows
def test_watch_draws_bars_with_rate_and_time_left(db, marked) -> None:
    ids = [str(marked["running"]), str(marked["done"])]
    code, out = run_on_pty(["watch", "--db", str(db), "--timeout", "0.3", *ids])
    assert code == 0
    text = assert_terminal_safe(out)
    bar = next(line for line in text.splitlines() if line.startswith("counting"))
    assert "1/3" in bar
    # Rate from the job's own start (1 done in about 2 s) and the time left at it.
    rate = re.search(r"(\d+(?:\.\d+)?)/s", bar)
    assert rate is not None, bar
    assert 0.05 < float(rate.group(1)) <= 0.5
    assert re.search(r"eta \d+:\d\d", bar), bar
    assert MARKUP[:28] in bar or MARKUP[:27] + "…" in bar  # the message, as typed
    # The finished job is in the table under the bars.
    assert any(line.split()[:2] == [ids[1], "completed"] for line in text.splitlines())


def test_demo_on_a_terminal(tmp_path) -> None:
    code, out = run_on_pty(["demo"], columns=160, extra_env={"TMPDIR": str(tmp_path)}, colour=True)
    assert code == 0
    text = assert_terminal_safe(out)
    assert b"\x1b[?25l" in out  # rich's live view ran (cursor hidden while it drew)
    assert "cancelpool cancel --pattern 'user_42_*'" in text
    assert "partial=" in text
    assert re.search(r"running jobs stopped, cancel to outcome stored: ", text)
    # The table that stays after the live view is gone: one line per job.
    table = text[text.rindex("$ cancelpool ls") :].split("\n\n")[0].splitlines()[1:]
    assert table[0].split()[:2] == ["ID", "STATUS"]
    assert [line.split()[0] for line in table[1:]] == [str(n) for n in range(1, 12)]
    assert list(tmp_path.iterdir()) == []


def test_progress_display_on_a_terminal(tmp_path) -> None:
    """A user's script with ``show_progress``: bars for real jobs in real workers, a
    hostile job name escaped, the outcome of each job on its row."""
    script = tmp_path / "bars.py"
    script.write_text(
        "from cancelpool import CancelPool\n"
        "from cancelpool.progress_display import show_progress\n"
        "from qtasks_more import counted, refuse\n"
        "if __name__ == '__main__':\n"
        "    with CancelPool(2) as pool:\n"
        "        handles = [\n"
        "            pool.submit(counted, 5, name='five'),\n"
        "            pool.submit(counted, 3, name='evil\\x1b]0;PWNED\\x07[red]x'),\n"
        "            pool.submit(refuse, name='fails'),\n"
        "        ]\n"
        "        print('all finished' if show_progress(handles, timeout=60) else 'timed out')\n"
    )
    code, out = run_on_pty([], command=[sys.executable, str(script)], columns=150)
    assert code == 0, out
    assert_terminal_safe(out)
    # The last frame rich drew (each redraw starts by erasing the lines it drew).
    text = assert_terminal_safe(out.rsplit(b"\r\x1b[2K", 1)[-1])
    assert "all finished" in text
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "completed" in rows["five"]
    assert "5/5" in rows["five"]
    assert "evil\\x1b]0;PWNED\\x07[red]x" in text  # escaped, and the markup as typed
    assert "failed" in rows["fails"]
    assert "ValueError: no" in rows["fails"]

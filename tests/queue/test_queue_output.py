"""What the CLI writes to a terminal: job-provided text never drives it.

Names, tasks, progress messages, metadata, results, errors, tracebacks and paths come
from jobs, other users or a planted row; every human-readable line shows their control
and format characters as escapes and their newlines as ``\\n``. The tests run the real
CLI in a subprocess on a real pty and assert on the bytes it wrote; ``--json`` stays
exact JSON.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import psutil
import pytest
from qhelpers import BACKSTOP, env, wait_status
from qtasks_more import EVIL

from cancelpool.queue import Queue
from cancelpool.queue._format import visible, visible_json

# What the CLI (rich) may send a terminal itself: colours (SGR), and a live view's
# redraw: hide/show the cursor, return to column 0 and erase the line, line up + erase.
# A carriage return of its own is always followed by an erase or a line up; a job's \r
# is escaped.
_OURS = re.compile(
    rb"\x1b\[[0-9;]*m|\r(?=\x1b\[(?:2K|1A))|\x1b\[2K|\x1b\[1A\x1b\[2K|\x1b\[\?25[lh]"
)
# After those are removed, nothing but printable text, spaces and line ends may remain.
_BAD = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]"
)


def run_on_pty(
    args: list[str],
    *,
    colour: bool = True,
    stop_after: str | None = None,
    columns: int = 200,
    extra_env: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> tuple[int, bytes]:
    """Run ``python -m cancelpool.cli ARGS`` (or ``command``) with stdin, stdout and
    stderr on a new pty ``columns`` wide; return its exit code and every byte it wrote.
    With ``stop_after``, SIGTERM it once that text has appeared (for ``serve``)."""
    environ = env()
    if colour:
        environ.pop("NO_COLOR", None)
        environ["TERM"] = "xterm-256color"
    environ.pop("COLUMNS", None)
    environ.pop("LINES", None)
    environ.update(extra_env or {})
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(
        command or [sys.executable, "-m", "cancelpool.cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=environ,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + BACKSTOP
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"{args} wrote nothing for {BACKSTOP} s (backstop)")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the pty has closed it
                break
            if not data:
                break
            chunks.append(data)
            if stop_after is not None and stop_after.encode() in b"".join(chunks):
                proc.send_signal(signal.SIGTERM)
                stop_after = None
        return proc.wait(BACKSTOP), b"".join(chunks)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(BACKSTOP)


def assert_terminal_safe(out: bytes) -> str:
    """The output decodes as UTF-8 and holds no control or format character but line
    ends and our own colour and redraw sequences; returns it as text (\\r\\n -> \\n)."""
    text = _OURS.sub(b"", out).decode("utf-8").replace("\r\n", "\n")
    bad = _BAD.findall(text)
    assert not bad, f"raw control characters {bad!r} reached the terminal:\n{text}"
    assert "\r" not in text
    assert "PWNED\x07" not in text
    return text


def plant(db: Path, **columns: object) -> int:
    """Insert a job row as another program (or a hostile user) could."""
    values = {
        "task": "qtasks_more:shout",
        "args": "[]",
        "kwargs": "{}",
        "submitted_at": time.time(),
    }
    values.update(columns)
    with sqlite3.connect(db) as conn:
        cursor = conn.execute(
            f"INSERT INTO jobs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
            list(values.values()),
        )
        job_id = cursor.lastrowid
    conn.close()
    assert job_id is not None
    return job_id


@pytest.fixture
def planted(db: Path, queue: Queue) -> dict[str, int]:
    now = time.time()
    common = {"name": EVIL, "started_at": now - 2, "attempts": 1}
    return {
        "completed": plant(
            db, status="completed", ended_at=now, result=json.dumps([EVIL]), **common
        ),
        "failed": plant(
            db,
            status="failed",
            ended_at=now,
            error=f"ValueError: {EVIL}",
            traceback=f"Traceback (most recent call last):\n  File 'x'\nValueError: {EVIL}\n",
            **common,
        ),
        "cancelled": plant(
            db,
            status="cancelled",
            ended_at=now,
            cancel_reason=EVIL,
            cancel_message=EVIL,
            partial_result=json.dumps({"k": EVIL}),
            **common,
        ),
        "running": plant(
            db,
            status="running",
            task=f"qtasks_more:x{EVIL}",
            progress_message=EVIL,
            progress=json.dumps({"note": EVIL, "done": 1, "total": 3}),
            **common,
        ),
    }


def test_visible_escapes_what_drives_a_terminal() -> None:
    assert visible(EVIL) == (
        "\\x1b]0;PWNED\\x07\\x1b[2J\\nFORGED 99 completed\\x9b31m\\u202eoknil\\u2028end"
    )
    assert visible("ünïcode 日本 ok") == "ünïcode 日本 ok"
    assert visible("\U000e0041\ud800") == "\\U000e0041\\ud800"
    # Valid JSON still, the same value, and nothing raw on the terminal.
    assert json.loads(visible_json({"k": [EVIL, "\U000e0041"]})) == {"k": [EVIL, "\U000e0041"]}
    assert not _BAD.search(visible_json({"k": EVIL}).replace("\n", ""))


def test_visible_escapes_every_control_and_format_character() -> None:
    import unicodedata

    # Every character of the categories that draw nothing of their own (controls,
    # format characters such as the soft hyphen, separators, surrogates) is escaped, so
    # a name cannot look like another one ("adm\xadin" as "admin") or hide text.
    unsafe = [
        chr(code)
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) in ("Cc", "Cf", "Zl", "Zp", "Cs")
    ]
    shown = [char for char in unsafe if visible(char) == char]
    assert not shown, [hex(ord(char)) for char in shown]
    assert visible("adm\xadin") == "adm\\xadin"
    assert json.loads(visible_json(["adm\xadin"])) == ["adm\xadin"]


@pytest.mark.sqlite_only  # writes or reads SQLite rows/files directly
@pytest.mark.parametrize("colour", [True, False])
def test_ls_on_a_terminal(db, planted, colour) -> None:
    code, out = run_on_pty(["ls", "--db", str(db)], colour=colour)
    assert code == 0
    text = assert_terminal_safe(out)
    assert "\\x1b]0;PWNED\\x07" in text
    # One row per job: the forged line never starts a line of its own.
    assert not any(line.startswith("FORGED") for line in text.splitlines())
    assert len(text.strip().splitlines()) == 1 + len(planted)


@pytest.mark.sqlite_only  # writes or reads SQLite rows/files directly
@pytest.mark.parametrize("which", ["completed", "failed", "cancelled", "running"])
def test_result_on_a_terminal(db, planted, which) -> None:
    code, out = run_on_pty(["result", "--db", str(db), str(planted[which])])
    assert code == {"completed": 0, "failed": 4, "cancelled": 5, "running": 7}[which]
    text = assert_terminal_safe(out)
    assert not any(line.startswith("FORGED") for line in text.splitlines())
    if which == "completed":
        assert json.loads(text) == [EVIL]  # still JSON, and the same value
    if which == "failed":
        assert "| Traceback (most recent call last):" in text  # the job's own, quoted
        assert "\\x1b]0;PWNED\\x07" in text


@pytest.mark.sqlite_only  # writes or reads SQLite rows/files directly
def test_result_json_stays_exact(db, planted) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cancelpool.cli",
            "result",
            "--db",
            str(db),
            "--json",
            str(planted["failed"]),
        ],
        capture_output=True,
        env=env(),
        timeout=BACKSTOP,
    )
    assert out.returncode == 4
    record = json.loads(out.stdout)
    assert record["name"] == EVIL
    assert record["error"] == f"ValueError: {EVIL}"


@pytest.mark.sqlite_only  # writes or reads SQLite rows/files directly
def test_json_on_a_terminal_is_safe_and_exact(db, planted) -> None:
    # --json is for programs, but people read it on terminals too: the same values,
    # with C1 controls, bidi overrides and line separators as \\u escapes.
    code, out = run_on_pty(["ls", "--db", str(db), "--json"])
    assert code == 0
    assert {job["name"] for job in json.loads(assert_terminal_safe(out))} == {EVIL}
    code, out = run_on_pty(["result", "--db", str(db), "--json", str(planted["failed"])])
    assert code == 4
    assert json.loads(assert_terminal_safe(out))["error"] == f"ValueError: {EVIL}"
    ids = [str(i) for i in planted.values()]
    code, out = run_on_pty(["watch", "--db", str(db), "--json", "--timeout", "0.3", *ids])
    assert code == 0
    lines = assert_terminal_safe(out).splitlines()
    assert {json.loads(line).get("name") for line in lines} == {EVIL}


@pytest.mark.sqlite_only  # writes or reads SQLite rows/files directly
def test_watch_on_a_terminal_and_in_a_pipe(db, planted) -> None:
    ids = [str(i) for i in planted.values()]
    code, out = run_on_pty(["watch", "--db", str(db), "--timeout", "0.3", *ids])
    assert code == 0
    text = assert_terminal_safe(out)
    assert "\\x1b]0;PWNED\\x07" in text
    piped = subprocess.run(
        [
            sys.executable,
            "-m",
            "cancelpool.cli",
            "watch",
            "--db",
            str(db),
            "--timeout",
            "0.3",
            *ids,
        ],
        capture_output=True,
        env=env(),
        timeout=BACKSTOP,
    )
    assert piped.returncode == 0
    lines = piped.stdout.decode().splitlines()
    assert len(lines) == len(ids)  # one line per job: the newline in the message is escaped
    assert not any(line.startswith("FORGED") for line in lines)


@pytest.mark.sqlite_only  # writes or reads SQLite rows/files directly
def test_stats_on_a_terminal(db, queue) -> None:
    me = psutil.Process()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO servers (id, pid, proc_start, wake_path, allow, workers, started_at, "
            "heartbeat) VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
            (
                EVIL,
                me.pid,
                me.create_time(),
                str(db) + ".ctl/x.wake",
                json.dumps([EVIL]),
                time.time(),
                time.time(),
            ),
        )
    conn.close()
    code, out = run_on_pty(["stats", "--db", str(db)])
    assert code == 0
    text = assert_terminal_safe(out)
    assert not any(line.startswith("FORGED") for line in text.splitlines())


def test_errors_quoting_input_on_a_terminal(db, queue) -> None:
    code, out = run_on_pty(["submit", "--db", str(db), f"x:y{EVIL}"])
    assert code == 2
    assert_terminal_safe(out)
    code, out = run_on_pty(["ls", "--db", str(db), "--pattern", EVIL])
    assert code == 2
    assert_terminal_safe(out)


def test_an_unexpected_error_shows_its_traceback_escaped() -> None:
    # What no handler expected (a bug; a row the store cannot decode, which stops
    # serve) still quotes database text in its traceback: never raw on the terminal.
    code = (
        "import cancelpool.cli as c\n"
        "@c.cli.command('boom')\n"
        "def boom():\n"
        "    raise RuntimeError('\\x1b]0;PWNED\\x07 row text')\n"
        "c.main()\n"
    )
    status, out = run_on_pty([], command=[sys.executable, "-c", code, "boom"])
    assert status == 1
    text = assert_terminal_safe(out)
    assert "Traceback (most recent call last):" in text
    assert "RuntimeError: \\x1b]0;PWNED\\x07 row text" in text


def test_a_job_and_the_server_log_on_a_terminal(tmp_path) -> None:
    # The db's directory name is hostile too: the server log names it.
    where = tmp_path / "q\x1b]0;PWNED\x07"
    where.mkdir(mode=0o700)
    db = where / "queue.db"
    with Queue(db) as q:
        job_id = q.submit("qtasks_more:shout")
        result_id = q.submit("qtasks_more:shout_result")
    code, out = run_on_pty(
        ["serve", "--db", str(db), "--workers", "1", "--allow", "qtasks_more:*"],
        stop_after="serving",
    )
    # The server ran until SIGTERM; the jobs may or may not have run by then: run them
    # to the end with a second server that is not on a terminal.
    assert code == 0
    text = assert_terminal_safe(out)
    assert "\\x1b]0;PWNED\\x07" in text  # the db's path in the server's log line
    assert "Traceback" not in text
    log = tmp_path / "server.log"
    with open(log, "w") as sink:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cancelpool.cli",
                "serve",
                "--db",
                str(db),
                "--workers",
                "1",
                "--allow",
                "qtasks_more:*",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env(),
        )
    try:
        with Queue(db) as q:
            wait_status(q, job_id, "failed")
            wait_status(q, result_id, "completed")
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(BACKSTOP) == 0
    for args, expected in (
        (["ls"], 0),
        (["result", str(job_id)], 4),
        (["result", str(result_id)], 0),
    ):
        code, out = run_on_pty([args[0], "--db", str(db), *args[1:]])
        assert code == expected
        text = assert_terminal_safe(out)
        assert not any(line.startswith("FORGED") for line in text.splitlines())
    code, out = run_on_pty(["result", "--db", str(db), str(job_id)])
    text = assert_terminal_safe(out)
    assert "| Traceback (most recent call last):" in text  # the remote one, quoted
    assert "| ValueError: \\x1b]0;PWNED\\x07" in text


@pytest.mark.sqlite_only
def test_a_row_that_is_not_utf8_is_read_replaced_and_served(db, queue, cli, start_server) -> None:
    # Another program wrote bytes that are not UTF-8 into a text column: every reader
    # shows them replaced, and the server still claims and runs the job (it used to
    # exit in claim(), and again on every restart).
    done = plant(db, status="completed", ended_at=time.time(), result="[1]")
    queued = plant(db, task="cancelpool.demo_tasks:add", args="[1, 2]")
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE jobs SET name = CAST(X'ff41' AS TEXT) WHERE id IN (?, ?)", (done, queued)
        )
    conn.close()
    for argv in (["ls"], ["ls", "--json"], ["result", str(done)], ["stats"]):
        out = cli(*argv)
        assert out.returncode == 0, (argv, out)
        assert "Traceback" not in out.stderr, out
    names = {job["id"]: job["name"] for job in json.loads(cli("ls", "--json").stdout)}
    assert names[done] == names[queued] == "\ufffdA"
    start_server(allow=("cancelpool.demo_tasks:*",))
    wait_status(queue, queued, "completed")
    job = queue.get(queued)
    assert job is not None
    assert job.result == 3
    assert job.name == "\ufffdA"


def test_a_huge_value_is_cut_before_it_is_escaped_and_fitted() -> None:
    # A 10 MB progress message (or name, or result) is shown by its first
    # MAX_CELL_CHARS characters: escaping, folding and fitting all of it took seconds
    # per frame of watch.
    from cancelpool._visible import MAX_CELL_CHARS, one_line
    from cancelpool.queue._render import table

    huge = "\x1b[2J" + "word \n" * 2_000_000
    shown = one_line(huge)
    assert shown == one_line(huge[:MAX_CELL_CHARS]) + "…"
    assert shown.startswith("\\x1b[2Jword \\nword")
    assert len(shown) <= 10 * MAX_CELL_CHARS + 1  # an escape is at most 10 characters
    grid = table(["NAME"], [[huge]])
    assert grid.columns[0].max_width == len(shown)

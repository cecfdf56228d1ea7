"""What a queue path may be: refused files, read-only verbs, damaged rows, first opens.

Every refusal is one sentence on stderr, exit 3, no traceback, and nothing on disk
created or changed (compared before and after).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from qhelpers import BACKSTOP, DEMO, Runner, ServerProc, env, wait_for

from cancelpool.queue import Queue, QueueFileError

# About SQLite's files and rows read with sqlite3 itself: not run on PostgreSQL.
pytestmark = pytest.mark.sqlite_only

READ_ONLY = [
    ("ls",),
    ("ls", "--json"),
    ("result", "1"),
    ("stats",),
    ("watch",),
    ("cancel", "1"),
]


def _tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its type, mode and content hash."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        found[str(path.relative_to(root))] = f"{stat.filemode(info.st_mode)} {digest}"
    return found


def _refused(out: subprocess.CompletedProcess[str], words: str) -> None:
    assert out.returncode == 3, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert words in out.stderr, out.stderr


@pytest.mark.parametrize("verb", READ_ONLY)
def test_read_only_verbs_on_a_missing_directory_create_nothing(tmp_path: Path, verb) -> None:
    db = tmp_path / "missing" / "queue.db"
    _refused(Runner(db)(*verb), "no queue at")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("verb", READ_ONLY)
def test_read_only_verbs_on_a_missing_file_create_nothing(tmp_path: Path, verb) -> None:
    db = tmp_path / "queue.db"
    _refused(Runner(db)(*verb), "no queue at")
    assert list(tmp_path.iterdir()) == []


def test_a_character_device_is_refused_and_nothing_appears_beside_it() -> None:
    before = set(os.listdir("/dev"))
    for verb in (("ls",), ("submit", f"{DEMO}:add", "[1, 2]"), ("stats",)):
        _refused(Runner(Path("/dev/null"))(*verb), "not a regular file")
    assert set(os.listdir("/dev")) - before == set()


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, not a database\n" * 50, random.Random(8).randbytes(8192)],
    ids=["empty", "text", "noise"],
)
def test_a_file_that_is_not_a_queue_is_left_alone(tmp_path: Path, content: bytes) -> None:
    db = tmp_path / "data.db"
    db.write_bytes(content)
    db.chmod(0o600)
    before = _tree(tmp_path)
    for verb in (("ls",), ("stats",), ("result", "1")):
        _refused(Runner(db)(*verb), "queue")
    if content:  # an empty file of ours is a queue to be (for a verb that creates)
        out = Runner(db)("submit", f"{DEMO}:add", "[1, 2]")
        _refused(out, "cannot be read as a cancelpool queue")
    assert _tree(tmp_path) == before


def test_a_sqlite_database_of_something_else_is_not_touched(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ada')")
    conn.close()
    db.chmod(0o600)
    before = _tree(tmp_path)
    _refused(Runner(db)("submit", f"{DEMO}:add", "[1, 2]"), "something else")
    _refused(Runner(db)("ls"), "something else")
    with pytest.raises(QueueFileError, match="something else"):
        Queue(db)
    assert _tree(tmp_path) == before


def test_a_damaged_queue_fails_with_one_sentence(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    with Queue(db) as q:
        for n in range(200):
            q.submit(f"{DEMO}:echo", "x" * 500, name=f"j{n}")
    assert not (tmp_path / "queue.db-wal").exists()  # every page is in the file itself
    data = bytearray(db.read_bytes())
    data[4096:] = random.Random(6).randbytes(len(data) - 4096)  # all but the schema page
    db.write_bytes(bytes(data))
    out = Runner(db)("ls")
    assert out.returncode in (1, 3), out
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.parametrize("where", ["dir", "empty", "trailing"])
def test_queue_refuses_directories_and_empty_paths(tmp_path: Path, where: str) -> None:
    path = {"dir": str(tmp_path), "empty": "", "trailing": str(tmp_path / "q") + "/"}[where]
    before = _tree(tmp_path)
    with pytest.raises(QueueFileError) as caught:
        Queue(path)
    assert "\n" not in str(caught.value)
    assert _tree(tmp_path) == before
    if where == "dir":  # the command line refuses it as a usage error (exit 2)
        out = Runner(Path(path))("submit", f"{DEMO}:add", "[1]")
        assert out.returncode == 2, out
        assert "is a directory" in out.stderr
        assert "Traceback" not in out.stderr
        assert _tree(tmp_path) == before


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    db = shared / "queue.db"
    _refused(Runner(db)("submit", f"{DEMO}:add", "[1]"), "chmod go-w")
    assert list(shared.iterdir()) == []
    shared.chmod(0o1777)  # sticky does not help: others could plant a -wal file
    _refused(Runner(db)("submit", f"{DEMO}:add", "[1]"), "make a private one")
    shared.chmod(0o755)
    assert Runner(db)("submit", f"{DEMO}:add", "[1]").returncode == 0


def test_a_queue_file_others_can_write_is_refused_one_they_can_read_is_tightened(
    tmp_path: Path,
) -> None:
    db = tmp_path / "queue.db"
    Queue(db).close()
    db.chmod(0o666)
    before = _tree(tmp_path)
    _refused(Runner(db)("ls"), f"chmod 600 {db}")
    assert _tree(tmp_path) == before
    db.chmod(0o644)
    assert Runner(db)("ls").returncode == 0
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_a_planted_side_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    Queue(db).close()
    wal = tmp_path / "queue.db-wal"
    wal.write_bytes(b"")
    wal.chmod(0o666)
    _refused(Runner(db)("ls"), "queue.db-wal is writable by group or others")
    wal.unlink()
    wal.symlink_to(tmp_path / "elsewhere")
    _refused(Runner(db)("ls"), "symbolic link")


def test_a_planted_side_file_of_a_new_queue_leaves_nothing_created(tmp_path: Path) -> None:
    # submit creates a missing queue; a planted side file refuses it before it does.
    (tmp_path / "queue.db-wal").symlink_to(tmp_path / "elsewhere")
    before = _tree(tmp_path)
    out = Runner(tmp_path / "queue.db")("submit", f"{DEMO}:add", "[1]")
    _refused(out, "queue.db-wal is a symbolic link; remove the link")
    assert _tree(tmp_path) == before


def test_a_symlinked_database_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    Queue(real).close()
    link = tmp_path / "link.db"
    link.symlink_to(real)
    before = _tree(tmp_path)
    _refused(Runner(link)("ls"), "symbolic link")
    _refused(Runner(link)("submit", f"{DEMO}:add", "[1]"), "symbolic link")
    assert _tree(tmp_path) == before


def test_missing_directories_are_made_private_by_a_verb_that_creates(tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "queue.db"
    assert Runner(db)("submit", f"{DEMO}:add", "[1, 2]").returncode == 0
    for directory in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_one_bad_row_never_breaks_a_listing(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    with Queue(db) as q:
        good = [q.submit(f"{DEMO}:add", 1, n) for n in range(3)]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE jobs SET args = 'not json' WHERE id = ?", (good[1],))
        conn.execute("UPDATE jobs SET status = 'bogus' WHERE id = ?", (good[2],))
        conn.execute("UPDATE jobs SET result = x'00ff' WHERE id = ?", (good[0],))
    conn.close()
    out = Runner(db)("ls", "--json")
    assert out.returncode == 0, out.stderr
    jobs = {job["id"]: job for job in json.loads(out.stdout)}
    assert sorted(jobs) == good
    assert "args is not JSON" in jobs[good[1]]["error"]
    assert "unknown status 'bogus'" in jobs[good[2]]["error"]
    out = Runner(db)("ls")
    assert out.returncode == 0, out.stderr
    assert "damaged row" in out.stdout
    with Queue(db) as q:
        assert len(q.list()) == 3


def test_concurrent_first_opens_wait_for_each_other(tmp_path: Path) -> None:
    db = tmp_path / "new" / "queue.db"
    go = tmp_path / "go"
    code = (
        "import os, sys\n"
        "while not os.path.exists(sys.argv[1]):\n"
        "    pass  # the handshake: every process is past its imports before the first open\n"
        "from cancelpool.queue import Queue\n"
        "with Queue(sys.argv[2]) as q:\n"
        f"    q.submit('{DEMO}:add', 1, 2)\n"
    )
    ready = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import cancelpool.queue._store, sys; sys.stdout.write('r'); sys.stdout.flush();"
                + "exec(sys.argv[3])",
                str(go),
                str(db),
                code,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env(),
            text=True,
        )
        for _ in range(6)
    ]
    try:
        for proc in ready:
            assert proc.stdout is not None
            assert proc.stdout.read(1) == "r"  # imported, now spinning on the go file
        go.touch()
        results = [(proc.wait(BACKSTOP), proc.communicate()[1]) for proc in ready]
    finally:
        for proc in ready:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert results == [(0, "")] * 6
    with Queue(db) as q:
        assert len(q.list()) == 6


def test_a_server_starting_while_clients_submit(tmp_path: Path) -> None:
    db = tmp_path / "fresh" / "queue.db"
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "cancelpool.cli"]
    with open(log, "w") as out:
        server = ServerProc(
            subprocess.Popen(
                [*cmd, "serve", "--db", str(db), "--workers", "1", "--allow", f"{DEMO}:*"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env(),
            ),
            log,
        )
    clients = [
        subprocess.Popen(
            [*cmd, "submit", "--db", str(db), f"{DEMO}:add", f"[{n}, 1]"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env(),
            text=True,
        )
        for n in range(4)
    ]
    try:
        outs = [proc.communicate(timeout=BACKSTOP) for proc in clients]
        assert [proc.returncode for proc in clients] == [0] * 4, outs
        with Queue(db) as q:
            wait_for(lambda: q.live_servers(refresh=True), "the server to register")
            server.remember_children()
            results = [q.wait(int(stdout), timeout=BACKSTOP).result for stdout, _ in outs]
        assert sorted(results) == [1, 2, 3, 4]
        assert server.stop() == 0, server.output()
        assert "locked" not in server.output()
    finally:
        for proc in (*clients, server.proc):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    server.assert_family_gone()


@pytest.mark.parametrize("version", ["²", "abc", "-1", ""])
def test_a_queue_of_a_version_that_is_no_number_is_refused(tmp_path: Path, version: str) -> None:
    db = tmp_path / "queue.db"
    Queue(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (version,))
    conn.close()
    _refused(Runner(db)("ls"), "is a queue of schema version")

"""Another local user against the queue: a real second account (``useradd``), its steps
run with ``runuser -u``; the victim is the user running the tests (root here).

Skipped, with the reason, where the tests cannot create a user (not root, no useradd).
The attacker uses the system Python with ``sqlite3`` only: nothing of cancelpool runs as
the attacker, as it would not on a real machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from qhelpers import BACKSTOP, DEMO, Runner, ServerProc, env, wait_for

from cancelpool.queue import Queue
from cancelpool.queue._store import _SCHEMA

SYSTEM_PYTHON = "/usr/bin/python3"
RUNUSER = shutil.which("runuser") or "runuser"

pytestmark = [
    pytest.mark.sqlite_only,  # file ownership and modes: SQLite only
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0,
        reason="creating a second local user (useradd) needs root",
    ),
    pytest.mark.skipif(
        not (shutil.which("useradd") and shutil.which("runuser") and shutil.which("userdel")),
        reason="useradd, userdel and runuser are needed to act as a second user",
    ),
    pytest.mark.skipif(
        not os.access(SYSTEM_PYTHON, os.X_OK), reason=f"{SYSTEM_PYTHON} runs the attacker's steps"
    ),
]


@dataclass
class Attacker:
    name: str
    uid: int
    gid: int
    home: Path  #: a directory of the attacker's own, reachable by both users

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RUNUSER, "-u", self.name, "--", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )

    def python(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(SYSTEM_PYTHON, "-I", "-c", code, *args)


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory both users can reach (the tests' tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="cancelpool-other-user-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@contextmanager
def _user_database_lock() -> Iterator[None]:
    """One useradd/userdel at a time on this machine (parallel test processes, other
    test runs): concurrent ones were seen to leave /etc/passwd mode 0600, which broke
    every later user lookup (initdb among them)."""
    # A lock on /etc itself: /etc/passwd is replaced by each change, and a lock file
    # would be left behind.
    fd = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@pytest.fixture
def attacker(base: Path) -> Iterator[Attacker]:
    name = f"cpq{os.getpid() % 100_000}x{time.monotonic_ns() % 1000}"
    with _user_database_lock():
        subprocess.run(
            ["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
    try:
        import pwd

        entry = pwd.getpwnam(name)
        home = base / "attacker"
        home.mkdir()
        os.chown(home, entry.pw_uid, entry.pw_gid)
        yield Attacker(name, entry.pw_uid, entry.pw_gid, home)
    finally:
        with _user_database_lock():
            subprocess.run(["userdel", name], check=True, capture_output=True)


@pytest.fixture
def start_server_in() -> Iterator[Callable[[Path], ServerProc]]:
    """Start ``cancelpool serve`` on a database outside tmp_path; killed at the end."""
    started: list[ServerProc] = []

    def start(db: Path) -> ServerProc:
        Queue(db).close()  # the queue exists, so the wait below can read it
        log = Path(tempfile.mkstemp(prefix="cancelpool-serve-", suffix=".log")[1])
        with open(log, "w") as out:
            proc = subprocess.Popen(
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
                    f"{DEMO}:*",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env(),
            )
        server = ServerProc(proc, log)
        started.append(server)
        with Queue(db, create=False) as q:
            wait_for(lambda: q.live_servers(refresh=True), "the server to register")
        server.remember_children()
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(BACKSTOP)
        server.assert_family_gone()
        server.log.unlink()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


PLANT = """
import os, sqlite3, sys, time
db, schema, victim = sys.argv[1:4]
conn = sqlite3.connect(db)
conn.executescript(schema)
conn.execute("INSERT INTO meta VALUES ('schema', '1')")
conn.execute(
    "INSERT INTO servers (id, pid, proc_start, wake_path, allow, workers, started_at, heartbeat)"
    " VALUES ('abcdefabcdef', 1, 0, ?, '[\\"os:*\\"]', 1, ?, ?)",
    (victim, time.time(), time.time()),
)
conn.execute(
    "INSERT INTO jobs (task, args, kwargs, status, submitted_at)"
    " VALUES ('os:system', '[\\"id\\"]', '{}', 'queued', ?)", (time.time(),))
conn.commit()
conn.close()
os.chmod(db, 0o666)
"""


def test_a_queue_planted_by_another_user_is_refused(attacker: Attacker, base: Path) -> None:
    victim_file = base / "victim-file"
    victim_file.write_text("precious")
    db = attacker.home / "queue.db"
    planted = attacker.python(PLANT, str(db), _SCHEMA, str(victim_file))
    assert planted.returncode == 0, planted.stderr
    assert db.stat().st_uid == attacker.uid
    before = _digest(db)
    run = Runner(db)
    for verb in (
        ("submit", f"{DEMO}:add", "[1, 2]"),
        ("ls",),
        ("stats",),
        ("cancel", "1"),
        ("serve", "--allow", "os:system"),
    ):
        out = run(*verb)
        assert out.returncode in (2, 3), (verb, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "belongs to uid" in run("ls").stderr
    with pytest.raises(Exception, match="belongs to uid"):
        Queue(db)
    assert _digest(db) == before
    assert victim_file.read_text() == "precious"
    assert sorted(p.name for p in attacker.home.iterdir()) == ["queue.db"]


def test_a_database_file_of_another_user_in_our_directory_is_refused(
    attacker: Attacker, base: Path
) -> None:
    ours = base / "ours"
    ours.mkdir(mode=0o777)
    ours.chmod(0o777)  # for a moment, so the attacker can leave a file in it
    db = ours / "queue.db"
    planted = attacker.python(PLANT, str(db), _SCHEMA, str(base / "x"))
    assert planted.returncode == 0, planted.stderr
    ours.chmod(0o700)
    out = Runner(db)("submit", f"{DEMO}:add", "[1, 2]")
    assert out.returncode == 3, out
    assert f"belongs to uid {attacker.uid}" in out.stderr


def test_a_shared_directory_is_refused_before_anything_can_be_planted(
    attacker: Attacker, base: Path
) -> None:
    shared = base / "team"
    shared.mkdir()
    shared.chmod(0o1777)  # a team folder: everybody may create files
    plant = attacker.python(
        "import sys; open(sys.argv[1], 'wb').write(b'attacker WAL')", str(shared / "queue.db-wal")
    )
    assert plant.returncode == 0, plant.stderr
    out = Runner(shared / "queue.db")("submit", f"{DEMO}:add", "[1, 2]")
    assert out.returncode == 3, out
    assert "make a private one" in out.stderr
    assert sorted(p.name for p in shared.iterdir()) == ["queue.db-wal"]
    assert (shared / "queue.db-wal").read_bytes() == b"attacker WAL"


def test_a_directory_under_one_the_other_user_controls_is_refused(
    attacker: Attacker, base: Path
) -> None:
    inner = attacker.home / "inner"  # ours, but the attacker could rename it away
    inner.mkdir(mode=0o700)
    out = Runner(inner / "queue.db")("submit", f"{DEMO}:add", "[1, 2]")
    assert out.returncode == 3, out
    assert f"{attacker.home} (above the queue's directory) belongs to uid" in out.stderr
    assert list(inner.iterdir()) == []


def test_another_user_can_neither_read_nor_wake_a_private_queue(
    attacker: Attacker, base: Path, start_server_in
) -> None:
    db = base / "victim" / "state" / "queue.db"
    server = start_server_in(db)
    with Queue(db) as q:
        job = q.wait(q.submit(f"{DEMO}:echo", "the secret"), timeout=60)
        assert job.result == {"args": ["the secret"], "kwargs": {}}
        fifos = list(db.with_name(db.name + ".ctl").iterdir())
        assert len(fifos) == 1
        probe = attacker.python(
            "import os, sys\n"
            "for path in sys.argv[1:]:\n"
            "    for flags in (os.O_RDONLY, os.O_WRONLY | os.O_NONBLOCK):\n"
            "        try:\n"
            "            os.close(os.open(path, flags))\n"
            "            print('opened', path)\n"
            "        except OSError as exc:\n"
            "            print('refused', exc.errno)\n",
            str(db),
            str(db.with_name(db.name + "-wal")),
            str(fifos[0]),
        )
        assert probe.returncode == 0, probe.stderr
        assert "opened" not in probe.stdout, probe.stdout
        assert probe.stdout.count("refused") == 6
        listing = attacker.run("/bin/ls", str(db.parent))
        assert listing.returncode != 0
    assert server.stop() == 0
    server.assert_family_gone()

"""A private PostgreSQL 15 server for the queue tests: started from the machine's
binaries in a fresh temporary directory, listening on 127.0.0.1 only, removed at the end.

initdb and postgres refuse to run as root; as root they run as the ``postgres`` user
(``Popen(user=...)``, so that the process the tests hold and signal *is* the server,
not a ``runuser`` in front of it that may not pass the signal on) in a directory
chowned to it. Nothing is shared with other runs: a free
port, a fresh data directory, a socket directory of its own.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _leaks import session_helper

PASSWORD = "s3cret-pw"  # trust auth ignores it; tests check it is never printed
USER = "cancelpool"
ENABLE = (
    "install the PostgreSQL 15 server binaries (Debian/Ubuntu: apt-get install "
    "postgresql-15; they are looked for under /usr/lib/postgresql/*/bin, or set "
    "CANCELPOOL_PG_BIN) and the driver (pip install 'cancelpool[postgres]')"
)


def find_bin() -> Path | None:
    """The directory with initdb and postgres, or None."""
    env = os.environ.get("CANCELPOOL_PG_BIN")
    candidates = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "postgres").is_file():
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One running server; :meth:`url` of a fresh database per call of :meth:`new_db`."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="cancelpool-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.sock.mkdir()
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
            self._as = {"user": "postgres", "group": "postgres", "extra_groups": []}
        self._count = 0
        self._log: Any = None

    def _run(self, *cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True, timeout=120, cwd=self.root, **self._as)

    def start(self) -> None:
        if not self.data.exists():
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            )
        self._log = open(self.root / "log.txt", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.sock),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
            **self._as,
        )
        session_helper(self.proc.pid)  # the session's server, not a test's leftover
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.admin_url(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "PostgreSQL did not start: " + (self.root / "log.txt").read_text()
                    ) from None
                time.sleep(0.05)
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (USER,)).fetchone()
            if not exists:
                conn.execute(f"CREATE ROLE {USER} LOGIN CREATEDB PASSWORD '{PASSWORD}'")

    def admin_url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_db(self) -> str:
        """A fresh empty database, as a URL with a password in it."""
        import psycopg

        self._count += 1
        name = f"t{os.getpid()}_{self._count}"
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {USER} TEMPLATE template0")
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{name}"

    def drop_db(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def kill_connections(self, url: str, application_name: str | None = None) -> int:
        """Terminate the backends on ``url``'s database (optionally those whose
        application name starts with ``application_name``)."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        query = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
        params: list[str] = [name]
        if application_name is not None:
            query += " AND application_name LIKE %s"
            params.append(application_name + "%")
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            return len(conn.execute(query, params).fetchall())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: smart would wait on clients
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

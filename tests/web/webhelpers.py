"""Real processes of the dashboard tests: ``cancelpool serve`` and ``cancelpool web``."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).parent
TOKEN = "test-token-0123456789abcdef"
#: Backstops against a hang, not expectations: both processes start in about a second;
#: a loaded CI machine can be far slower.
BACKSTOP = 60.0


def env() -> dict[str, str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [environ.get("PYTHONPATH")])])
    environ["NO_COLOR"] = "1"
    environ.pop("CANCELPOOL_DB", None)
    environ.pop("CANCELPOOL_WEB_TOKEN", None)
    return environ


def cli(*args: str, timeout: float = BACKSTOP) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cancelpool.cli", *args],
        capture_output=True,
        text=True,
        env=env(),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = BACKSTOP) -> Any:
    """Poll ``predicate`` until it returns something truthy (the handshake)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Proc:
    """A started CLI process whose whole family must be gone at the end."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cancelpool.cli", *args],
                stdout=subprocess.PIPE,
                stderr=out,
                stdin=subprocess.DEVNULL,
                env=env(),
                text=True,
            )
        self.family: list[psutil.Process] = []

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def first_line(self) -> str:
        """The first stdout line, within the backstop (the process's handshake)."""
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(BACKSTOP):
                raise AssertionError(f"no output from {self.proc.args}:\n{self.output()}")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"{self.proc.args} exited {self.proc.wait()}:\n{self.output()}")
        return line.strip()

    def remember_family(self) -> None:
        try:
            self.family = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(BACKSTOP)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(BACKSTOP)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        _, alive = psutil.wait_procs(self.family, timeout=BACKSTOP)
        assert not alive, f"processes left behind: {alive}"
        return code


def url_of(line: str) -> str:
    found = re.search(r"http://[^ ?]+/", line)
    assert found, f"no address in {line!r}"
    return found.group(0)

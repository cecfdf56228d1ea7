"""The ``cancelpool`` command: argument handling in process (CliRunner), and the
installed entry point plus ``cancelpool demo`` as real processes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import psutil
import pytest
from click.testing import CliRunner

import cancelpool
from cancelpool.cli import cli

#: A backstop for the demo (it takes a few seconds): well under the minute it promises.
DEMO_BACKSTOP = 55.0


@pytest.fixture
def run(tmp_path: Path):
    runner = CliRunner()
    db = str(tmp_path / "q" / "queue.db")

    def invoke(*args: str, input: str | None = None):
        verb, *rest = args
        extra = ["--db", db] if verb not in ("--version", "--help", "-V", "-h") else []
        return runner.invoke(cli, [verb, *extra, *rest], input=input)

    return invoke


def test_version(run) -> None:
    for flag in ("--version", "-V"):
        result = run(flag)
        assert result.exit_code == 0
        assert result.output.strip() == f"cancelpool, version {cancelpool.__version__}"


def test_help_lists_every_verb(run) -> None:
    result = run("--help")
    assert result.exit_code == 0
    for verb in ("serve", "submit", "cancel", "ls", "watch", "result", "stats", "demo"):
        assert verb in result.output


def test_serve_needs_an_allow_pattern(run) -> None:
    result = run("serve")
    assert result.exit_code == 2
    assert "--allow" in result.output


def test_cancel_needs_ids_or_a_pattern(run) -> None:
    result = run("cancel")
    assert result.exit_code == 2
    assert "give job ids or --pattern" in result.output


def test_submit_and_ls_in_process(run) -> None:
    result = run("submit", "cancelpool.demo_tasks:add", "[1, 2]", "--name", "n1")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "1"
    result = run("ls")
    assert "n1" in result.output
    assert "queued" in result.output
    assert "\x1b[" not in result.output  # no colours when not a terminal


def test_bad_json_exits_2(run) -> None:
    result = run("submit", "cancelpool.demo_tasks:add", "[1,")
    assert result.exit_code == 2
    assert "not valid JSON" in result.output
    assert run("ls").output.strip() == "no jobs"


def test_result_of_an_unknown_job_exits_1(run) -> None:
    run("submit", "cancelpool.demo_tasks:add", "[1, 2]")  # a queue, without job 7
    result = run("result", "7")
    assert result.exit_code == 1
    assert "no job with id 7" in result.output


def test_result_of_a_queued_job_exits_7(run) -> None:
    run("submit", "cancelpool.demo_tasks:add", "[1, 2]")
    assert run("result", "1").exit_code == 7


def test_stats_without_a_server(run) -> None:
    run("submit", "cancelpool.demo_tasks:add", "[1, 2]")  # stats reads an existing queue
    result = run("stats")
    assert result.exit_code == 0
    assert "no server running" in result.output


def test_watch_with_nothing_to_watch(run) -> None:
    run("submit", "cancelpool.demo_tasks:add", "[1, 2]")
    run("cancel", "1")  # a queue with nothing unfinished in it
    result = run("watch")
    assert result.exit_code == 0
    assert "no unfinished job" in result.output


def test_installed_entry_point() -> None:
    script = shutil.which("cancelpool")
    assert script is not None, "the cancelpool console script is not installed"
    out = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert cancelpool.__version__ in out.stdout


def test_demo_runs_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path), NO_COLOR="1")
    env.pop("COLUMNS", None)  # pytest-xdist sets 80; on a pipe, cells are then uncut
    out = subprocess.run(
        [sys.executable, "-m", "cancelpool.cli", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=DEMO_BACKSTOP,
    )
    assert out.returncode == 0, out.stderr
    assert "cancelpool cancel --pattern 'user_42_*'" in out.stdout
    for expected in ("completed", "cancelled", "failed", "timeout", "parent", "partial="):
        assert expected in out.stdout
    # The stop times it measured, not a promise.
    assert "within milliseconds" not in out.stdout
    assert re.search(
        r"running jobs stopped, cancel to outcome stored: .*user_42_report_\d+ \d+ ms", out.stdout
    )
    assert re.search(
        r"timeout: slow_download stopped -?\d+ ms after its 1\.5 s deadline", out.stdout
    )
    assert list(tmp_path.iterdir()) == []  # the temporary queue is gone
    leftovers = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(tmp_path) in part for part in proc.info["cmdline"] or ()):
            leftovers.append(proc)
    assert leftovers == []


@pytest.mark.parametrize("kind", [click.UsageError, click.ClickException], ids=["usage", "error"])
def test_an_error_message_is_shown_escaped(
    kind: type[click.ClickException], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Whatever text an error carries (a task name, a value from the database) reaches
    the terminal escaped: main() renders click's message, then makes it visible."""
    import cancelpool.cli as cli_module

    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise kind("bad \x1b]0;PWNED\x07 value \u202eevil")

    monkeypatch.setattr(cli_module.cli, "main", fail)
    with pytest.raises(SystemExit) as exit_info:
        cli_module.main()
    assert exit_info.value.code == (2 if kind is click.UsageError else 1)
    err = capsys.readouterr().err
    assert "Error: bad " in err
    assert "\x1b" not in err
    assert "\x07" not in err
    assert "\u202e" not in err

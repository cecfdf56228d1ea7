"""Running ``cancelpool serve`` as a service (issue 13 items 7 and 8): settings from
``CANCELPOOL_*`` and a TOML file, logs as text or JSON lines, systemd's readiness
protocol on a real datagram socket, ``cancelpool health``, default paths."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from qhelpers import BACKSTOP, TASKS, env, wait_status
from qtasks_more import EVIL
from test_queue_output import assert_terminal_safe, plant

from cancelpool.queue import Queue

MORE = "qtasks_more"


def serve(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``cancelpool serve ARGS`` that is expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "cancelpool.cli", "serve", *args],
        capture_output=True,
        text=True,
        env={**env(), **(extra_env or {})},
        timeout=BACKSTOP,
        stdin=subprocess.DEVNULL,
    )


def write_config(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


# -- configuration ------------------------------------------------------------------------------
def test_a_bad_value_names_its_source_and_the_precedence_shows(tmp_path: Path) -> None:
    db = str(tmp_path / "q" / "queue.db")
    config = write_config(tmp_path / "serve.toml", 'allow = ["x:*"]\nworkers = "from-file"\n')
    # File only: the file and key are named.
    out = serve("--db", db, "--config", str(config))
    assert out.returncode == 2
    line = one_line_error(out)
    assert line.startswith(f"Error: {config}: workers: invalid value for --workers:")
    assert "'from-file'" in line
    # The environment beats the file: its value is the one checked (and named).
    out = serve("--db", db, "--config", str(config), extra_env={"CANCELPOOL_WORKERS": "from-env"})
    assert out.returncode == 2
    line = one_line_error(out)
    assert line.startswith("Error: $CANCELPOOL_WORKERS: invalid value for --workers:")
    assert "'from-env'" in line
    # The command line beats both.
    out = serve(
        "--db",
        db,
        "--config",
        str(config),
        "--workers",
        "from-cli",
        extra_env={"CANCELPOOL_WORKERS": "from-env"},
    )
    assert out.returncode == 2
    assert "'from-cli'" in out.stderr
    assert "from-env" not in out.stderr
    assert not (tmp_path / "q").exists()  # nothing was created


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("workers = 2.5\nallow = 'x:*'\n", "workers: invalid value for --workers: '2.5'"),
        ("workers = true\nallow = 'x:*'\n", "workers: invalid value for --workers: 'true'"),
        ("wrokers = 2\n", "unknown setting 'wrokers' (known: allow, "),
        ("allow = 'x:*'\ngrace = [1, 2]\n", "grace: expected one value, not a list"),
        ("allow = 'x:*'\n[grace]\nx = 1\n", "grace: expected a string, number or boolean"),
        ("allow = 'x:*\n", "not valid TOML: "),
        ("allow = ['bad pattern!']\n", "allow: invalid value for --allow: "),
        ("allow = 'x:*'\non-shutdown = 'never'\n", "on_shutdown: invalid value for --on-shutdown"),
        ('allow = "x:*"\nnode_name = "\\u001b]0;PWNED\\u0007"\n', "node_name: invalid value"),
    ],
    ids=["float", "bool", "unknown", "list", "table", "syntax", "allow", "choice", "evil"],
)
def test_bad_config_files_are_one_line_usage_errors(
    tmp_path: Path, text: str, expected: str
) -> None:
    config = write_config(tmp_path / "serve.toml", text)
    out = serve("--db", str(tmp_path / "q.db"), "--config", str(config))
    assert out.returncode == 2, out.stderr
    line = one_line_error(out)
    assert line.startswith(f"Error: {config}: ")
    assert expected in line
    assert_terminal_safe(out.stderr.encode())  # a hostile value is shown escaped


def test_a_config_file_with_a_huge_number_is_a_usage_error(tmp_path: Path) -> None:
    # tomllib reads an integer with int(), which refuses more than 4300 digits with a
    # plain ValueError, not a TOMLDecodeError: a one-line error, not a traceback.
    config = write_config(tmp_path / "serve.toml", "allow = 'x:*'\nworkers = " + "9" * 5000)
    out = serve("--db", str(tmp_path / "q.db"), "--config", str(config))
    assert out.returncode == 2, out.stderr
    assert one_line_error(out).startswith(f"Error: {config}: not valid TOML: ")


def test_a_fifo_as_config_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "serve.toml"
    os.mkfifo(fifo, 0o600)  # nobody ever writes to it: opening it must not wait
    out = serve("--db", str(tmp_path / "q.db"), "--config", str(fifo))
    assert out.returncode == 2, out.stderr
    assert one_line_error(out) == f"Error: {fifo}: not a regular file"


def test_a_config_file_over_the_size_limit_is_refused_not_cut(tmp_path: Path) -> None:
    # A bad setting past the first MiB: reading only that much and parsing it would
    # drop the setting silently (a comment cut in half is still valid TOML).
    padding = ("# " + "x" * 1000 + "\n") * 1100
    text = f"allow = 'x:*'\n{padding}workers = 'not a number'\n"
    config = write_config(tmp_path / "serve.toml", text)
    out = serve("--db", str(tmp_path / "q.db"), "--config", str(config))
    assert out.returncode == 2, out.stderr
    assert one_line_error(out) == f"Error: {config}: larger than 1 MiB: not a config file"


def test_a_config_file_others_can_write_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "serve.toml", "allow = 'x:*'\n", mode=0o620)
    out = serve("--db", str(tmp_path / "q.db"), "--config", str(config))
    assert out.returncode == 3
    assert "chmod go-w" in one_line_error(out)
    link = tmp_path / "link.toml"
    link.symlink_to(write_config(tmp_path / "real.toml", "allow = 'x:*'\n"))
    out = serve("--db", str(tmp_path / "q.db"), "--config", str(link))
    assert out.returncode == 2
    assert "cannot read the config file" in one_line_error(out)
    out = serve("--db", str(tmp_path / "q.db"), "--config", str(tmp_path / "missing.toml"))
    assert out.returncode == 2
    assert "cannot read the config file" in one_line_error(out)


def test_settings_from_file_env_and_command_line_reach_the_server(
    db, cli, queue, start_server, tmp_path
) -> None:
    config = write_config(
        tmp_path / "serve.toml",
        f'allow = ["{MORE}:*"]\nworkers = 1\nnode-name = "from-file"\nmax_attempts = 7\n',
    )
    server = start_server(
        "--config",
        str(config),
        allow=(),
        workers=False,
        extra_env={"CANCELPOOL_NODE_NAME": "from-env", "CANCELPOOL_LOG_LEVEL": "debug"},
    )
    nodes = json.loads(cli("nodes", "--json").stdout)["nodes"]
    assert [(n["workers"], n["allow"]) for n in nodes] == [(1, [f"{MORE}:*"])]
    if queue.store.kind != "sqlite":  # SQLite nodes do not record their label
        assert [n["label"] for n in nodes] == ["from-env"]
    job = queue.submit(f"{MORE}:shout_result")
    wait_status(queue, job, "completed")
    assert server.stop() == 0
    assert f"job {job} (-) started" in server.output()  # the level came from the env


# -- logs -----------------------------------------------------------------------------------
@pytest.mark.sqlite_only  # plants a job row with a name no submit accepts
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_lines_carry_the_job_and_node_and_survive_hostile_names(
    db, queue, start_server, fmt
) -> None:
    job = plant(db, status="queued", name=EVIL, task=f"{MORE}:shout_result")
    unnamed = plant(db, status="queued", task=f"{MORE}:shout_result")
    server = start_server("--log-format", fmt, "--log-level", "debug", allow=(f"{MORE}:*",))
    wait_status(queue, job, "completed")
    wait_status(queue, unnamed, "completed")
    assert server.stop() == 0
    raw = server.log.read_bytes()
    assert_terminal_safe(raw)
    lines = raw.decode().splitlines()
    if fmt == "text":
        started = [line for line in lines if f"job {job} (" in line and "started" in line]
        assert len(started) == 1  # the newline in the name did not forge a line
        assert "\\x1b]0;PWNED\\x07" in started[0]
        assert not any(line.startswith("FORGED") for line in lines)
        return
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert raw.isascii()
    node = records[0]["node"]
    assert all(r["node"] == node for r in records)
    mine = [r for r in records if r.get("job") == job]
    assert {r["message"].split(")")[-1].split(":")[0].strip() for r in mine} == {
        "started",
        "completed",
    }
    assert all(r["name"] == EVIL for r in mine)  # exact, not escaped, in JSON
    # An unnamed job has no name, at its start and at its end (not its task).
    other = [r for r in records if r.get("job") == unnamed]
    assert len(other) == 2
    assert all(r.get("name") is None for r in other), other
    assert all(f"job {unnamed} (-) " in r["message"] for r in other), other
    assert all(r["level"] == "debug" for r in mine)
    assert records[0]["level"] == "info"
    assert records[0]["message"].startswith("serving ")


def test_quiet_and_log_level_filter(db, queue, start_server) -> None:
    server = start_server("--log-level", "warning")
    assert server.stop() == 0
    assert server.output() == ""  # serving / stopped are info


# -- systemd readiness --------------------------------------------------------------------------
@pytest.fixture
def notify_socket(tmp_path: Path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(BACKSTOP)
    yield sock, str(path)
    sock.close()


def test_serve_tells_systemd_when_it_serves_and_when_it_stops(
    db, cli, queue, start_server, notify_socket
) -> None:
    sock, address = notify_socket
    server = start_server(allow=(f"{MORE}:*",), extra_env={"NOTIFY_SOCKET": address})
    ready = sock.recv(4096).decode().split("\n")
    assert ready[0] == "READY=1"
    assert ready[1].startswith("STATUS=serving ")
    # READY came after the node registered: a health probe right then passes.
    assert cli("health").returncode == 0
    # Workers (and so jobs) do not inherit the socket.
    job = queue.submit(f"{MORE}:environment_of", "NOTIFY_SOCKET")
    assert wait_status(queue, job, "completed").result is None
    server.proc.send_signal(signal.SIGTERM)
    stopping = sock.recv(4096).decode().split("\n")
    assert stopping[0] == "STOPPING=1"
    assert stopping[1] == "STATUS=stopping (SIGTERM): requeue running jobs"
    assert server.proc.wait(BACKSTOP) == 0


def test_a_notify_socket_nobody_reads_does_not_stall_the_server(notify_socket) -> None:
    import threading

    from cancelpool.queue._sd_notify import Notifier

    sock, address = notify_socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler:
        filler.connect(address)
        try:  # fill the receiver's queue (a few datagrams: net.unix.max_dgram_qlen)
            while True:
                filler.send(b"x", socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        said: list[str | None] = []
        sender = threading.Thread(
            target=lambda: said.append(Notifier(address, timeout=0.2).ready("serving")),
            daemon=True,
        )
        sender.start()
        sender.join(BACKSTOP)
        alive = sender.is_alive()
        sock.close()  # unblocks a sender stuck in send(): the test never hangs
        sender.join(BACKSTOP)
    assert not alive, "READY=1 blocked on a full notify socket"
    assert said == [f"could not notify systemd at {address}: no room in its queue for 0.2s"]
    too_long = "/" + "x" * 200  # longer than a unix socket address can be
    assert Notifier(too_long).ready("serving") == (
        f"could not notify systemd at {too_long}: AF_UNIX path too long"
    )


def test_an_abstract_notify_socket_and_a_missing_one(db, start_server) -> None:
    name = f"cancelpool-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name)
        sock.settimeout(BACKSTOP)
        server = start_server(extra_env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096).startswith(b"READY=1\n")
        assert server.stop() == 0
    finally:
        sock.close()
    # A socket that is gone: a warning, and the server serves anyway.
    server = start_server(extra_env={"NOTIFY_SOCKET": "/nonexistent/notify.sock"})
    assert server.stop() == 0
    assert "warning: could not notify systemd at /nonexistent/notify.sock" in server.output()


# -- health ---------------------------------------------------------------------------------
def test_health_says_whether_a_live_server_serves_the_queue(db, cli, queue, start_server) -> None:
    out = cli("health")
    assert out.returncode == 1
    assert out.stderr.startswith("unhealthy: no live node serves ")
    server = start_server("--node-name", "web-1")
    out = cli("health")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: 1 live node(s) serve ")
    report = json.loads(cli("health", "--json").stdout)
    assert report["healthy"] is True
    assert [n["pid"] for n in report["nodes"]] == [server.pid]
    if queue.store.kind == "sqlite":
        refused = cli("health", "--node-name", "web-1")
        assert refused.returncode == 2
        assert "needs a PostgreSQL queue" in refused.stderr
    else:
        assert cli("health", "--node-name", "web-1").returncode == 0
        other = cli("health", "--node-name", "web-2")
        assert other.returncode == 1
        assert "no live node named web-2" in other.stderr
    assert server.stop() == 0
    out = cli("health")
    assert out.returncode == 1
    assert json.loads(cli("health", "--json").stdout)["healthy"] is False


def test_health_without_a_queue(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cancelpool.cli", "health", "--db", str(tmp_path / "none.db")],
        capture_output=True,
        text=True,
        env=env(),
        timeout=BACKSTOP,
    )
    assert out.returncode == 3
    assert not (tmp_path / "none.db").exists()


# -- default paths ------------------------------------------------------------------------------
def test_the_default_queue_is_in_the_user_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    environ = {**env(), "XDG_STATE_HOME": str(state)}
    out = subprocess.run(
        [sys.executable, "-m", "cancelpool.cli", "submit", f"{TASKS}:record", '["a", "b"]'],
        capture_output=True,
        text=True,
        env=environ,
        timeout=BACKSTOP,
    )
    assert out.returncode == 0, out.stderr
    made = state / "cancelpool" / "queue.db"
    assert made.exists()
    with Queue(made) as queue:
        assert queue.get(int(out.stdout.strip())) is not None
    assert os.stat(made).st_mode & 0o077 == 0

"""Bad input from the command line: a clear error, exit 2, and nothing written."""

from __future__ import annotations

import json

import pytest
from qhelpers import DEMO


def _jobs(cli) -> list[dict]:
    """The queue's jobs; none when a refused submit did not even create the queue."""
    out = cli("ls", "--json")
    if out.returncode == 3 and "no queue at" in out.stderr:
        return []
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_task_no_running_server_allows_is_refused_at_submit(cli, start_server) -> None:
    start_server()
    out = cli("submit", "os:system", '["echo hi"]')
    assert out.returncode == 2
    assert "matches none of the running servers' --allow patterns" in out.stderr
    assert _jobs(cli) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["os.system"], "is not an import path"),
        (["os:system; rm -rf /"], "is not an import path"),
        ([f"{DEMO}:add", "[1,"], "not valid JSON"),
        ([f"{DEMO}:add", "{'a': 1}"], "not valid JSON"),
        ([f"{DEMO}:add", '"\\ud800"'], "lone surrogate"),
        ([f"{DEMO}:add", '["\\ude00\\ud83d"]'], "lone surrogate"),
        ([f"{DEMO}:add", '["\\ud83d\\ude00", 1'], "not valid JSON (Input data was truncated)"),
        ([f"{DEMO}:add", "[1]", "--name", "two words"], "characters other than"),
        ([f"{DEMO}:add", "[1]", "--name", "user_*"], "characters other than"),
        ([f"{DEMO}:add", "[1]", "--name", "$(reboot)"], "characters other than"),
        ([f"{DEMO}:add", "[1]", "--name", "tab\there"], "characters other than"),
        ([f"{DEMO}:add", "[1]", "--name", "x" * 201], "the limit is 200"),
        ([f"{DEMO}:add", "[1]", "--name", ""], "non-empty"),
        ([f"{DEMO}:add", "[1]", "--timeout", "-1"], "timeout must be"),
        ([f"{DEMO}:add", "[1]", "--timeout", "nan"], "timeout must be"),
        ([f"{DEMO}:add", "[1]", "--parent", "12345"], "parent job 12345 does not exist"),
        ([f"{DEMO}:add", "[1]", "--priority", str(2**40)], "out of range"),
    ],
)
def test_bad_submit_changes_nothing(cli, args, message) -> None:
    out = cli("submit", *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert _jobs(cli) == []


def test_huge_payload_is_refused(cli) -> None:
    payload = json.dumps(["x" * (2 << 20)])
    out = cli("submit", f"{DEMO}:echo", "-", input=payload)
    assert out.returncode == 2
    assert "over the limit of 1048576 bytes" in out.stderr
    assert _jobs(cli) == []


def test_cancel_with_an_unknown_id_cancels_nothing(cli) -> None:
    job_id = cli("submit", f"{DEMO}:add", "[1, 2]").stdout.strip()
    out = cli("cancel", job_id, "999999")
    assert out.returncode == 1
    assert "no job with id 999999" in out.stderr
    assert [job["status"] for job in _jobs(cli)] == ["queued"]
    out = cli("cancel", job_id)
    assert out.returncode == 0
    assert "cancelled 1 job(s): 1 queued" in out.stdout
    assert [job["status"] for job in _jobs(cli)] == ["cancelled"]


def test_arguments_round_trip_as_json(cli) -> None:
    cli("submit", f"{DEMO}:echo", '{"a": [1, 2.5, null, true], "b": "ü"}', "--name", "k")
    cli("submit", f"{DEMO}:echo", "7")
    first, second = _jobs(cli)
    assert (first["args"], first["kwargs"]) == ([], {"a": [1, 2.5, None, True], "b": "ü"})
    assert (second["args"], second["kwargs"]) == ([7], {})

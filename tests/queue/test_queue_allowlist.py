"""The allow-list is a list of names: attacks with real ``serve`` and ``submit`` processes.

A marker file proves nothing ran: every payload that could execute writes it (a shell
``touch``, a Python ``open``), and the modules that must never be imported write it at
import time (``CANCELPOOL_TEST_MARKER``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st
from qhelpers import DEMO

from cancelpool.cli import cli as cli_group
from cancelpool.queue import InvalidJob
from cancelpool.queue._taskref import (
    allow_regex,
    check_allow_pattern,
    parse_task_ref,
    task_allowed,
)

VICTIM = "qallow_victim"
ALLOW = (f"{DEMO}:*", f"{VICTIM}:*", "qallow_pkg:*")

# -- the names themselves ---------------------------------------------------------------


@pytest.mark.parametrize(
    "task",
    [
        "myapp.tasks:resize",
        "a:b",
        "myapp._impl.tasks:run_2",  # private module segments are fine; the function is not
    ],
)
def test_valid_references(task: str) -> None:
    assert str(parse_task_ref(task)) == task


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("os.system", "not an import path"),
        ("myapp.tasks:a.b", "attribute chain"),
        (f"{DEMO}:anyio.run_process", "attribute chain"),
        (f"{DEMO}:__spec__.loader.get_data", "attribute chain"),
        (f"{DEMO}:crunch.__builtins__.__setitem__", "attribute chain"),
        (f"{DEMO}:__builtins__", "private name"),
        (f"{DEMO}:_op", "private name"),
        ("__main__:main", "dunders"),
        ("qallow_pkg.__init__:ping", "dunders"),
        ("myapp.class:run", "not an import path"),
        ("myapp.tasks:lambda", "not an import path"),
        ("myapp..tasks:run", "not an import path"),
        ("myapp.tasks.:run", "not an import path"),
        (":run", "not an import path"),
        ("myapp.tasks:", "not an import path"),
        ("myapp.tasks:run:x", "not an import path"),
        ("myapp.tasks :run", "not an import path"),
        ("myapp.tasks:ｓystem", "not an import path"),  # no Unicode look-alikes
        ("m" * 300 + ":f", "not an import path"),
        ("myapp.tasks:run\n", "not an import path"),
    ],
)
def test_invalid_references(task: str, message: str) -> None:
    with pytest.raises(InvalidJob, match=message):
        parse_task_ref(task)


@pytest.mark.parametrize(
    ("pattern", "task", "admitted"),
    [
        ("myapp.tasks:*", "myapp.tasks:resize", True),
        ("myapp.tasks:*", "myapp.tasks.sub:resize", False),  # * never crosses a dot
        ("myapp.tasks:*", "myapp.tasks_old:resize", False),
        ("myapp.tasks:*", "myapp:tasks", False),
        ("myapp.tasks:*", "myapp.tasks:_private", False),
        ("myapp.tasks:*", "myapp.tasks:os.system", False),
        ("myapp.*:*", "myapp.tasks:resize", True),
        ("myapp.*:*", "myapp.tasks.sub:resize", False),
        ("myapp.*:*", "myapp:resize", False),
        ("myapp.tasks:resize_*", "myapp.tasks:resize_big", True),
        ("myapp.tasks:resize_*", "myapp.tasks:crop", False),
        ("myapp.t?sks:*", "myapp.tasks:x", True),
        ("myapp.t?sks:*", "myapp.t.sks:x", False),  # ? never matches a dot
        ("myapp*:*", "myapp_evil:x", False),  # the first segment is a literal name
        ("myapp.tasks:resize", "myapp.tasks:resize", True),
        ("myapp.tasks:resize", "myapp.tasks:resizer", False),
    ],
)
def test_patterns_match_per_segment(pattern: str, task: str, admitted: bool) -> None:
    assert task_allowed(task, [pattern]) is admitted


@pytest.mark.parametrize(
    "pattern",
    [
        "*:*",
        "*",
        "*.tasks:*",
        "?yapp.tasks:*",
        "myapp.tasks",
        "myapp.tasks:*.*",
        "myapp.*",
        "myapp.[a-z]*:*",
        "myapp.tasks:**:x",
        "",
        "myapp.tasks: *",
        "myapp.tasks:*\n",
    ],
)
def test_patterns_that_could_walk_around_are_refused(pattern: str) -> None:
    with pytest.raises(InvalidJob):
        check_allow_pattern(pattern)
    assert not task_allowed("myapp.tasks:run", [pattern])  # and never admit anything


@pytest.mark.parametrize("pattern", ["*:*", "*.demo_tasks:*", "cancelpool.demo_tasks", ""])
def test_serve_refuses_such_patterns_before_opening_anything(tmp_path: Path, pattern) -> None:
    db = tmp_path / "never" / "queue.db"
    result = CliRunner().invoke(cli_group, ["serve", "--db", str(db), "--allow", pattern])
    assert result.exit_code == 2, result.output
    assert "--allow" in result.output
    assert "Traceback" not in result.output
    assert not db.parent.exists()


# -- the attack suite: real processes ------------------------------------------------------

#: Refused by `cancelpool submit` itself (exit 2): malformed names, or names no pattern
#: of the running server admits. The same strings written straight into the database
#: are refused by the server. ``@M`` is replaced with the marker's path, ``@P`` with a
#: directory the attacks would like to delete.
REFUSED = [
    (f"{DEMO}:anyio.run_process", '["touch @M"]'),
    (f"{DEMO}:__spec__.loader.get_data", '["/etc/hostname"]'),
    (f"{DEMO}:crunch.__builtins__.__setitem__", '["len", 1]'),
    (f"{DEMO}:__builtins__", "[]"),
    (f"{DEMO}:__loader__", "[]"),
    (f"{DEMO}:_op", "[]"),
    (f"{VICTIM}:os.system", '["touch @M"]'),
    (f"{VICTIM}:_private_helper", '["@M"]'),
    (f"{VICTIM}:NOT_A_FUNCTION.system", '["touch @M"]'),
    ("cancelpool.cli:main", "[]"),  # a sibling of the allowed module
    ("cancelpool:Queue", "[]"),  # its parent package
    ("qallow_sibling:boom", "[]"),  # a sibling with an import-time side effect
    ("qallow_pkg.evil:boom", "[]"),  # a submodule of an allowed package
    ("qallow_pkg.__init__:ping", "[]"),
    ("__main__:main", "[]"),
    ("builtins:exec", "[\"open('@M', 'w')\"]"),
    ("os:system", '["touch @M"]'),
    ("subprocess:run", '[["touch", "@M"]]'),
]

#: Well-formed names an allowed pattern admits, which only the worker can resolve (the
#: client does not import tasks): each fails at run time, naming why, and runs nothing.
FAIL_AT_RUN = [
    (f"{VICTIM}:system", '["touch @M"]', "builtin_function_or_method"),  # os.system re-export
    (f"{VICTIM}:run", '[["touch", "@M"]]', "imported into"),  # subprocess.run
    (f"{VICTIM}:rmtree", '["@P"]', "imported into"),
    (f"{VICTIM}:record", '["@M", "x"]', "imported into"),  # a neighbour's function
    (f"{VICTIM}:subprocess", "[]", "it is a module"),
    (f"{VICTIM}:Shell", '["touch @M"]', "it is a type"),
    (f"{VICTIM}:NOT_A_FUNCTION", "[]", "it is a dict"),
    (f"{DEMO}:anyio", "[]", "it is a module"),
    (f"{DEMO}:current_operation", "[]", "imported into"),
    (f"{DEMO}:Cancelable", "[]", "it is a type"),
    (f"{DEMO}:eval", "[\"open('@M', 'w')\"]", "has no 'eval'"),  # builtins are not names
    (f"{DEMO}:time", "[]", "it is a module"),
    ("qallow_pkg:evil", "[]", "has no 'evil'"),  # the submodule, before it is imported
]


def _fill(text: str, marker: Path, precious: Path) -> str:
    return text.replace("@M", str(marker)).replace("@P", str(precious))


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "marker"
    monkeypatch.setenv("CANCELPOOL_TEST_MARKER", str(path))  # the servers inherit it
    return path


@pytest.mark.sqlite_only  # writes or reads SQLite rows/files directly
def test_no_attack_runs_anything(cli, queue, start_server, db, tmp_path, marker) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("keep me")
    start_server(allow=ALLOW)

    for task, args in REFUSED:
        out = cli("submit", task, _fill(args, marker, precious))
        assert out.returncode == 2, (task, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert queue.list() == []  # nothing was queued

    failing = {}
    for task, args, why in FAIL_AT_RUN:
        out = cli("submit", task, _fill(args, marker, precious))
        assert out.returncode == 0, (task, out.stderr)
        failing[int(out.stdout)] = (task, why)
    for job_id, (task, why) in failing.items():
        job = queue.wait(job_id, timeout=60)
        assert job.status == "failed", (task, job)
        assert why in (job.error or ""), (task, job.error)
        assert job.result is None

    # The same refused names written straight into the database, bypassing the client.
    with sqlite3.connect(db) as conn:
        ids = [
            conn.execute(
                "INSERT INTO jobs (task, args, kwargs, status, submitted_at) "
                "VALUES (?, ?, '{}', 'queued', ?)",
                (task, _fill(args, marker, precious), time.time()),
            ).lastrowid
            for task, args in REFUSED
        ]
    conn.close()
    queue._wake()

    # The worker is intact, the module's own functions and its exports still run. These
    # jobs come after the rows above (claims go by priority, then id): the server has
    # passed over every one of those rows once they have run.
    out = cli("submit", f"{DEMO}:add", "[2, 3]", "--wait")
    assert (out.returncode, out.stdout.strip()) == (0, "5"), out.stderr
    for job_id, (task, _args) in zip(ids, REFUSED, strict=True):
        job = queue.get(job_id)
        assert job is not None
        assert job.attempts == 0, (task, job)  # never sent to a worker
        if job.status == "failed":  # it looked allowed, but is no task: refused at the claim
            assert "TaskNotAllowed" in (job.error or ""), (task, job.error)
        else:  # no pattern of this server admits it: left for a server that may run it
            assert job.status == "queued", (task, job)
    assert queue.get(ids[REFUSED.index(("os:system", '["touch @M"]'))]).status == "queued"
    assert queue.wait(queue.submit(f"{VICTIM}:hello", "you"), timeout=60).result == "hello you"
    legit = tmp_path / "legit"
    job = queue.wait(queue.submit(f"{VICTIM}:exported_record", str(legit), "ok"), timeout=60)
    assert (job.status, legit.read_text()) == ("completed", "ok\n")

    assert not marker.exists(), marker.read_text()
    assert (precious / "data").read_text() == "keep me"


def test_jobs_queued_before_any_server_are_checked_by_the_server(
    cli, queue, start_server, tmp_path, marker
) -> None:
    # No server runs, so the client cannot know the allow-list: only the syntax is checked.
    out = cli("submit", f"{DEMO}:anyio.run_process", json.dumps([f"touch {marker}"]))
    assert out.returncode == 2
    ids = [
        queue.submit(f"{VICTIM}:system", f"touch {marker}"),
        queue.submit("qallow_sibling:boom"),
        queue.submit("qallow_pkg.evil:boom"),
        queue.submit(f"{DEMO}:add", 1, 2),
    ]
    start_server(allow=(f"{DEMO}:*", f"{VICTIM}:*", "qallow_pkg:*"))
    assert queue.wait(ids[3], timeout=60).result == 3  # claimed after the others
    jobs = [queue.get(job_id) for job_id in ids[:3]]
    # The re-export fails when the worker loads it; the names no pattern admits are not
    # this server's to run or fail: they wait for one that may (none will).
    assert [job.status.value for job in jobs if job] == ["failed", "queued", "queued"]
    assert "imported into" in (jobs[0].error or "") or "builtin" in (jobs[0].error or "")
    assert not marker.exists(), marker.read_text()


def test_the_worker_checks_again_before_each_run(marker) -> None:
    """A reference that reaches the worker without a matching pattern is refused there,
    before its module is imported (the server's claim is not the only gate)."""
    import anyio

    from cancelpool.queue import TaskNotAllowed
    from cancelpool.queue._task import run_task

    async def attempt() -> None:
        await run_task("qallow_sibling:boom", [], {}, ("qallow_pkg:*",))

    with pytest.raises(TaskNotAllowed):
        anyio.run(attempt)
    assert not marker.exists()


# -- the claim's filter: one regex, the same answers as task_allowed --------------------
_SEGMENT = st.text(alphabet="ab_1*?", min_size=1, max_size=4)
_NAME = st.text(alphabet="ab_", min_size=1, max_size=4)


@given(
    patterns=st.lists(
        st.tuples(st.lists(_SEGMENT, min_size=0, max_size=2), _SEGMENT).map(
            lambda p: ".".join(["pkg", *p[0]]) + ":" + p[1]
        ),
        max_size=3,
    ),
    task=st.tuples(st.lists(_NAME, min_size=0, max_size=3), _NAME).map(
        lambda t: ".".join(["pkg", *t[0]]) + ":" + t[1]
    ),
)
@example(patterns=["pkg.*:f"], task="pkg.a.b:f")  # * never crosses a dot
@example(patterns=["pkg.a:*"], task="pkg.a:b")
@example(patterns=["pkg:f?"], task="pkg:f")
@example(patterns=[], task="pkg:f")
@settings(max_examples=300)
def test_the_claim_filter_admits_exactly_what_task_allowed_admits(
    patterns: list[str], task: str
) -> None:
    regex = re.compile(allow_regex(patterns))
    try:
        parse_task_ref(task)
    except InvalidJob:
        return  # a reference submit refuses; load_task refuses it if a row holds it
    assert bool(regex.search(task)) == task_allowed(task, patterns)

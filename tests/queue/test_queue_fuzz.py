"""Hypothesis fuzzing of every verb's arguments (the real CLI in a subprocess) and of
every ``Queue`` method: a documented exit code or a ``QueueError``, never a traceback,
and a database left exactly as it was when the call failed (compared as a dump).

The CLI examples are few per verb (each is a process start); the in-process ``Queue``
ones are many.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qhelpers import BACKSTOP, DEMO, TASKS, env

from cancelpool.queue import Queue, QueueError

# About SQLite's files and rows read with sqlite3 itself: not run on PostgreSQL.
pytestmark = pytest.mark.sqlite_only

# Hypothesis imports its patch writer (libcst) only to report a failure, and libcst
# warns on import, which filterwarnings=error turns into an internal error that hides
# the falsifying example. Import it here, quietly, so a failure reads as one.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:  # no libcst: hypothesis reports without a patch
        pass

#: Each CLI example starts a Python process (about a second on a loaded CI machine).
CLI_SETTINGS = settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
API_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- what a user can type ----------------------------------------------------------------------
_EDGES = [
    "99999999999999999999999",
    "9223372036854775808",
    "-1",
    "0",
    "1",
    "2",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e999",
    "1e-999",
    "0x10",
    " 3 ",
    "1.5",
    "",
    "*",
    "user_*",
    "\x1b]0;PWNED\x07\x1b[2J",
    "a\nb",
    "\u202eevil",
    "\x9b31m",
    "[",
    "{",
    "[1, 2]",
    '{"a": 1}',
    "-",
    "--json",
    "queued",
    "x" * 5000,
]
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=30,
)
TOKEN = st.one_of(
    st.sampled_from(_EDGES),
    _TEXT,
    st.integers().map(str),
    st.floats().map(repr),
)
_DEEP = "[" * 100_000 + "]" * 100_000
STDIN = st.sampled_from(
    [_DEEP, json.dumps(["x" * (2 << 20)]), "[1e999]", "[NaN]", "\udcff", '{"a": [1]}', "[1,"]
)


def options(*names: str) -> st.SearchStrategy[list[str]]:
    """Some of ``names``, each with a fuzzed value (or none, when it is a flag)."""
    return st.lists(st.tuples(st.sampled_from(names), TOKEN), max_size=4).map(
        lambda pairs: [part for name, value in pairs for part in (name, value)]
    )


def _dump(db: Path) -> list[Any]:
    conn = sqlite3.connect(db)
    try:
        return [
            conn.execute("SELECT * FROM jobs ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM servers ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM meta ORDER BY key").fetchall(),
        ]
    finally:
        conn.close()


@pytest.fixture
def finished_db(db: Path) -> Path:
    """A queue whose jobs have all finished (so no waiting verb can wait)."""
    with Queue(db) as q:
        ids = [q.submit(f"{DEMO}:add", n, n, name=f"job_{n}") for n in range(3)]
        q.cancel(*ids)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "INSERT INTO jobs (task, args, kwargs, status, submitted_at, result) "
            "VALUES (?, '[]', '{}', 'completed', ?, '42')",
            (f"{DEMO}:add", time.time()),
        )
    conn.close()
    return db


def run_cli(
    db: Path, argv: list[str], stdin: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "cancelpool.cli", *argv[:1], "--db", str(db), *argv[1:]],
        input=None if stdin is None else stdin.encode("utf-8", "surrogateescape"),
        capture_output=True,
        env=env(),
        timeout=BACKSTOP,
    )


# ESC, BEL, CSI, and the right-to-left override that reorders what follows it.
TERMINAL_CONTROLS = {"\x1b", "\x07", "\x9b", "\u202e"}


def check_run(db: Path, argv: list[str], allowed: set[int], stdin: str | None = None) -> int:
    before = _dump(db)
    out = run_cli(db, argv, stdin)
    err = out.stderr.decode(errors="replace")
    assert out.returncode in allowed, (argv, out.returncode, err)
    assert "Traceback" not in err, (argv, err)
    # What a submitter typed is echoed escaped: no terminal control reaches the screen.
    shown = err + out.stdout.decode(errors="replace")
    assert not set(shown) & TERMINAL_CONTROLS, (argv, shown)
    if out.returncode in (1, 2, 3):
        assert "Error: " in err, (argv, err)  # a sentence, not silence
    if out.returncode != 0:  # an error, or result's report of a job that did not complete
        assert _dump(db) == before, f"{argv} exited {out.returncode} but changed the db"
    return out.returncode


# Exit codes (docs/cli.md): 0 ok, 1 runtime error, 2 usage, 3 no queue; result adds the
# job's outcome: 4 failed, 5 cancelled, 6 interrupted, 7 not finished.
READ = {0, 1, 2, 3}
RESULT = {0, 1, 2, 3, 4, 5, 6, 7}


@CLI_SETTINGS
@given(ids=st.lists(TOKEN, max_size=3), opts=options("--status", "--pattern", "--limit"))
def test_fuzz_ls(finished_db, ids, opts) -> None:
    check_run(finished_db, ["ls", *opts, *(["--json"] if len(ids) % 2 else [])], READ)


@CLI_SETTINGS
@given(job_id=TOKEN, opts=options("--timeout"), wait=st.booleans())
def test_fuzz_result(finished_db, job_id, opts, wait) -> None:
    check_run(finished_db, ["result", *opts, *(["--wait"] if wait else []), "--", job_id], RESULT)


@CLI_SETTINGS
@given(ids=st.lists(TOKEN, max_size=3), opts=options("--pattern", "--message"))
def test_fuzz_cancel(finished_db, ids, opts) -> None:
    before = _dump(finished_db)
    check_run(finished_db, ["cancel", *opts, "--", *ids], READ)
    assert _dump(finished_db) == before  # every job had finished: nothing to change


@CLI_SETTINGS
@given(ids=st.lists(TOKEN, max_size=3), opts=options("--pattern", "--timeout"))
def test_fuzz_watch(finished_db, ids, opts) -> None:
    check_run(finished_db, ["watch", *opts, "--", *ids], READ)


@CLI_SETTINGS
@given(opts=options("--json"))
def test_fuzz_stats(finished_db, opts) -> None:
    check_run(finished_db, ["stats", *opts], READ)


@CLI_SETTINGS
@given(
    task=st.one_of(st.just(f"{DEMO}:add"), TOKEN),
    args=st.one_of(TOKEN, st.just("-")),
    stdin=STDIN,
    opts=options("--name", "--timeout", "--priority", "--parent"),
)
def test_fuzz_submit(finished_db, task, args, stdin, opts) -> None:
    before = len(_dump(finished_db)[0])
    code = check_run(
        finished_db,
        ["submit", *opts, "--", task, args],
        {0, 1, 2, 3},
        stdin if args == "-" else None,
    )
    assert len(_dump(finished_db)[0]) == before + (1 if code == 0 else 0)


_BAD_SECONDS = st.sampled_from(["nan", "inf", "-inf", "-1", "1e999", "x", "", "99999999999"])


@CLI_SETTINGS
@given(
    option=st.sampled_from(["--grace", "--cancel-grace"]),
    bad=_BAD_SECONDS,
    opts=options("--workers", "--concurrency", "--max-attempts", "--on-shutdown"),
)
def test_fuzz_serve_refuses_bad_values_before_it_starts(finished_db, option, bad, opts) -> None:
    # The bad value comes last, so no fuzzed option can override it.
    check_run(finished_db, ["serve", "--allow", f"{TASKS}:*", *opts, option, bad], {2})


# -- the Python API -------------------------------------------------------------------------
def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.just(10**30),
    st.just(-(2**63)),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=3),
    st.frozensets(st.integers(), max_size=2),
    st.sampled_from([0, -1, 2**63, 2**31, 1e300, "queued", "*", "user_*", "\x1b[2J"]),
)
JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=10),
        st.binary(max_size=3),
        st.just(_deep(200)),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.sets(st.integers(), max_size=2),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), inner, max_size=3),
    ),
    max_leaves=8,
)


def _as_json(value: Any) -> Any:
    """What a value comes back as: tuples as lists, the rest unchanged."""
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    return value


def call_api(db: Path, method: str, *args: Any, **kwargs: Any) -> Any:
    before = _dump(db)
    with Queue(db) as q:
        try:
            return getattr(q, method)(*args, **kwargs)
        except QueueError:
            assert _dump(db) == before, f"{method} raised but changed the db"
            return None


@API_SETTINGS
@given(
    task=st.one_of(st.just(f"{TASKS}:record"), st.text(max_size=20), ANYTHING),
    args=st.lists(JSONISH, max_size=3),
    kwargs=st.dictionaries(st.sampled_from(["a", "b", "x"]), JSONISH, max_size=2),
    name=ANYTHING,
    timeout=ANYTHING,
    priority=ANYTHING,
    parent=ANYTHING,
)
def test_fuzz_queue_submit(
    finished_db, task, args, kwargs, name, timeout, priority, parent
) -> None:
    job_id = call_api(
        finished_db,
        "submit",
        task,
        *args,
        name=name,
        timeout=timeout,
        priority=priority,
        parent=parent,
        **kwargs,
    )
    if job_id is None:
        return
    with Queue(finished_db) as q:
        job = q.get(job_id)
    assert job is not None
    assert job.args == _as_json(args)  # exactly what was sent, tuples as lists
    assert job.kwargs == _as_json(kwargs)


@API_SETTINGS
@given(
    method=st.sampled_from(["get", "wait", "cancel", "cancel_all", "list", "cancel_jobs"]),
    a=ANYTHING,
    b=ANYTHING,
    c=ANYTHING,
)
def test_fuzz_queue_methods(finished_db, method, a, b, c) -> None:
    calls = {
        "get": ((a,), {}),
        "wait": ((a,), {"timeout": b}),
        "cancel": ((a, b), {"message": c}),
        "cancel_all": ((a,), {"message": b}),
        "list": ((a, b), {"limit": c}),
        "cancel_jobs": (
            ([a] if not isinstance(a, list) else a,),
            {"name_pattern": b, "message": c},
        ),
    }
    args, kwargs = calls[method]
    before = _dump(finished_db)
    call_api(finished_db, method, *args, **kwargs)
    assert _dump(finished_db) == before  # every job had finished: nothing to change


def test_values_json_would_change_are_refused_where_they_are(queue) -> None:
    from cancelpool.queue import InvalidJob

    cases = [
        ((1, float("nan")), {}, "args[1] is nan"),
        ((), {"x": [float("inf")]}, "kwargs['x'][0] is inf"),
        ((b"raw",), {}, "args[0] is of type bytes"),
        (({1, 2},), {}, "args[0] is of type set"),
        (({1: "a"},), {}, "args[0] has the key 1 (int)"),
        ((_deep(100),), {}, "nested deeper than 64 levels"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(
            InvalidJob, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
        ):
            queue.submit(f"{TASKS}:record", *args, **kwargs)
    assert queue.list() == []
    job = queue.get(queue.submit(f"{TASKS}:record", (1, 2), {"k": (3,)}))
    assert job.args == [[1, 2], {"k": [3]}]  # tuples come back as lists (documented)

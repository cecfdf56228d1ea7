"""The HTTP API over real HTTP: a real ``cancelpool web`` and ``cancelpool serve`` process
on a real SQLite queue."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from webhelpers import BACKSTOP, TOKEN, cli, wait_for
from webtasks import INJECTION

from cancelpool.queue import Queue

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(web: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web, headers=AUTH, trust_env=False, timeout=BACKSTOP) as c:
        yield c


def job(client: httpx.Client, job_id: int) -> dict[str, Any]:
    response = client.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def status_is(client: httpx.Client, job_id: int, *statuses: str) -> dict[str, Any] | None:
    data = job(client, job_id)
    return data if data["status"] in statuses else None


# -- the gate ---------------------------------------------------------------------------------
def test_every_request_needs_the_token(web: str) -> None:
    with httpx.Client(base_url=web, trust_env=False, timeout=BACKSTOP) as anon:
        for path in ("/", "/app.js", "/api/jobs", "/api/stats", "/api/events", "/api/openapi.json"):
            response = anon.get(path)
            assert response.status_code == 401, path
            assert "token" in response.text
        wrong = anon.get("/api/jobs", headers={"Authorization": "Bearer " + "x" * len(TOKEN)})
        assert wrong.status_code == 401
        assert anon.get("/api/jobs", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        assert anon.get("/?token=wrong-token-wrong-token").status_code == 401
        assert anon.post("/api/cancel", json={"pattern": "*"}).status_code == 401


def test_opening_the_token_address_sets_a_strict_cookie(web: str) -> None:
    with httpx.Client(base_url=web, trust_env=False, timeout=BACKSTOP) as browser:
        response = browser.get(f"/?token={TOKEN}")
        assert response.status_code == 303
        assert response.headers["location"] == "/"  # the token leaves the address bar
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        page = browser.get("/")
        assert page.status_code == 200
        assert '<script src="/app.js"' in page.text
        assert browser.get("/api/jobs").status_code == 200


def test_every_response_forbids_inline_script_and_framing(client: httpx.Client) -> None:
    for path in ("/", "/app.js", "/api/jobs", "/api/nope"):
        response = client.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
    page = client.get("/").text
    assert "<script>" not in page  # no inline script for the CSP to block
    assert "http" not in page.replace("http-equiv", "")  # nothing from a CDN


def test_another_origin_is_refused(client: httpx.Client, server: object, queue: Queue) -> None:
    job_id = queue.submit("webtasks:steps", name="victim")
    wait_for(lambda: status_is(client, job_id, "running"), "the job to run")
    evil = {"Origin": "http://evil.example"}
    for response in (
        client.get("/api/jobs", headers=evil),
        client.post(f"/api/jobs/{job_id}/cancel", headers=evil),
        client.post("/api/cancel", json={"pattern": "*"}, headers=evil),
        client.post("/api/jobs", json={"task": "webtasks:steps"}, headers=evil),
        client.get("/api/jobs", headers={"Sec-Fetch-Site": "cross-site"}),
    ):
        assert response.status_code == 403
        assert "refused" in response.json()["error"]
    port = client.base_url.port
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    assert client.get("/api/jobs", headers=rebound).status_code == 403  # DNS rebinding
    assert client.get("/api/jobs", headers={"Host": f"localhost:{port}"}).status_code == 200
    same = {"Origin": str(client.base_url).rstrip("/")}
    assert client.get("/api/jobs", headers=same).status_code == 200
    record = queue.get(job_id)
    assert record is not None
    assert record.status.value == "running"
    assert not record.cancel_requested
    assert queue.statistics().total == 1  # the foreign submit queued nothing
    queue.cancel(job_id)


def test_get_never_changes_state(client: httpx.Client, server: object, queue: Queue) -> None:
    job_id = queue.submit("webtasks:steps", name="keep")
    wait_for(lambda: status_is(client, job_id, "running"), "the job to run")
    assert client.get(f"/api/jobs/{job_id}/cancel").status_code == 405
    assert client.get("/api/cancel", params={"pattern": "*"}).status_code == 405
    assert client.get("/api/jobs", params={"task": "webtasks:steps"}).status_code == 200
    assert client.head("/api/jobs").status_code in (200, 405)
    assert queue.statistics().total == 1
    record = queue.get(job_id)
    assert record is not None
    assert not record.cancel_requested
    queue.cancel(job_id)


# -- jobs -------------------------------------------------------------------------------------
def test_submit_watch_cancel_keeps_the_partial_result(
    client: httpx.Client, server: object, queue: Queue
) -> None:
    response = client.post("/api/jobs", json={"task": "webtasks:steps", "name": "user_7_a"})
    assert response.status_code == 201, response.text
    parent = response.json()["id"]
    child = client.post(
        "/api/jobs", json={"task": "webtasks:steps", "name": "user_7_b", "parent": parent}
    ).json()["id"]

    def advanced() -> dict[str, Any] | None:
        data = job(client, parent)
        # The history is what the dashboard's polls saw: two points, two polls.
        if (data["progress"] or {}).get("done", 0) >= 3 and len(data["progress_history"]) >= 2:
            return data
        return None

    running = wait_for(advanced, "the job to report three steps, seen twice")
    assert running["status"] == "running"
    history = running["progress_history"]
    assert history[0]["done"] < history[-1]["done"] <= running["progress"]["done"]
    assert running["children"][0]["id"] == child
    assert running["args"] == []
    assert running["kwargs"] == {}

    out = client.post(f"/api/jobs/{parent}/cancel", json={"message": "from the test"})
    assert out.status_code == 200, out.text
    assert parent in out.json()["requested"]
    done = wait_for(lambda: status_is(client, parent, "cancelled"), "the job to stop")
    assert done["partial_result"]["steps_done"] >= 3
    assert done["cancel_message"] == "from the test"
    wait_for(lambda: status_is(client, child, "cancelled"), "the child to stop too")

    def charted() -> list[dict[str, Any]]:
        finished = client.get("/api/stats").json()["finished"]
        return [p for p in finished if p["status"] == "cancelled"]

    points = wait_for(lambda: len(charted()) == 2 and charted(), "both cancels in the stats")
    assert all(p["cancel_latency"] is not None and p["cancel_latency"] >= 0 for p in points)

    again = client.post(f"/api/jobs/{parent}/cancel").json()
    assert again == {"cancelled": [], "requested": [], "already_finished": [parent]}
    listed = client.get("/api/jobs", params={"status": "cancelled"}).json()["jobs"]
    assert [row["id"] for row in listed] == [child, parent]
    assert listed[1]["summary"].startswith("partial: ")


def test_cancel_by_pattern(client: httpx.Client, queue: Queue) -> None:
    ids = [queue.submit("webtasks:steps", name=f"user_{n}_job") for n in (1, 2, 2)]
    out = client.post("/api/cancel", json={"pattern": "user_2_*"}).json()
    assert sorted(out["cancelled"]) == ids[1:]  # queued (no server): cancelled at once
    statuses = [queue.get(i).status.value for i in ids]  # type: ignore[union-attr]
    assert statuses == ["queued", "cancelled", "cancelled"]


def test_job_text_is_exact_json(client: httpx.Client, server: object, queue: Queue) -> None:
    job_id = queue.submit("webtasks:hostile", True)
    failed = wait_for(lambda: status_is(client, job_id, "failed"), "the job to fail")
    assert failed["progress_message"] == INJECTION
    assert INJECTION in failed["error"]
    row = client.get("/api/jobs").json()["jobs"][0]
    assert row["progress_message"] == INJECTION
    assert INJECTION in row["summary"]


def test_the_allow_list_applies_to_submits(client: httpx.Client, server: object) -> None:
    response = client.post("/api/jobs", json={"task": "os:system", "args": ["id"]})
    assert response.status_code == 403
    assert "--allow" in response.json()["error"]
    assert client.get("/api/jobs").json()["jobs"] == []


def raw(body: bytes, kind: str = "application/json") -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": kind}}


BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int]] = [
    ("POST", "/api/jobs", raw(b"not json"), 400),
    ("POST", "/api/jobs", {"json": [1, 2]}, 400),
    ("POST", "/api/jobs", raw(b'{"task": "a:b"}', "text/plain"), 415),
    ("POST", "/api/jobs", raw(b"[" * 100_000), 400),
    ("POST", "/api/jobs", raw(b"x" * (2 << 20)), 413),
    ("POST", "/api/jobs", {"json": {}}, 400),
    ("POST", "/api/jobs", {"json": {"task": "no-colon"}}, 400),
    ("POST", "/api/jobs", {"json": {"task": "webtasks:steps", "name": INJECTION}}, 400),
    ("POST", "/api/jobs", {"json": {"task": "webtasks:steps", "args": {"a": 1}}}, 400),
    ("POST", "/api/jobs", {"json": {"task": "webtasks:steps", "kwargs": {"timeout": 1}}}, 400),
    ("POST", "/api/jobs", {"json": {"task": "webtasks:steps", "timeout": -1}}, 400),
    ("POST", "/api/jobs", {"json": {"task": "webtasks:steps", "priority": 2**40}}, 400),
    ("POST", "/api/jobs", {"json": {"task": "webtasks:steps", "parent": 999}}, 400),
    ("POST", "/api/jobs", {"json": {"task": "webtasks:steps", "evil": 1}}, 400),
    ("POST", "/api/jobs", raw(b'{"task": "webtasks:steps", "args": [NaN]}'), 400),
    ("POST", "/api/jobs", raw(b'{"task": "webtasks:steps", "args": ["\\ud800"]}'), 400),
    ("POST", "/api/cancel", {"json": {}}, 400),
    ("POST", "/api/cancel", {"json": {"pattern": ""}}, 400),
    ("POST", "/api/cancel", {"json": {"pattern": "a\x01"}}, 400),
    ("POST", "/api/cancel", {"json": {"pattern": "*", "message": 5}}, 400),
    ("POST", "/api/cancel", {"json": {"pattern": "*", "message": "two\nlines"}}, 400),
    ("POST", "/api/jobs/999/cancel", {}, 404),
    ("POST", "/api/jobs/0/cancel", {}, 400),
    ("GET", "/api/jobs/abc", {}, 400),
    ("GET", "/api/jobs/-1", {}, 400),
    ("GET", f"/api/jobs/{2**64}", {}, 400),
    ("GET", "/api/jobs/999", {}, 404),
    ("GET", "/api/jobs?status=bogus", {}, 400),
    ("GET", "/api/jobs?limit=0", {}, 400),
    ("GET", "/api/jobs?limit=abc", {}, 400),
    ("GET", "/api/jobs?limit=100000000000000000000000", {}, 400),
    ("GET", "/api/jobs?limit=501", {}, 400),
    ("GET", "/api/jobs?cursor=-5", {}, 400),
    ("GET", "/api/jobs?pattern=%01", {}, 400),
    ("GET", "/api/nothing-here", {}, 404),
    ("DELETE", "/api/jobs", {}, 405),
]


def test_bad_input_gets_a_4xx_and_a_sentence(client: httpx.Client, queue: Queue) -> None:
    for method, path, options, expected in BAD_REQUESTS:
        response = client.request(method, path, **options)
        assert response.status_code == expected, (method, path, response.text)
        error = response.json()["error"]
        assert isinstance(error, str), error
        assert len(error) > 10, error
        assert "Traceback" not in error
    assert queue.statistics().total == 0  # nothing bad was queued


def test_pages_through_ten_thousand_jobs(client: httpx.Client, queue: Queue) -> None:
    with queue.store.transaction() as conn:  # 10,000 submits in one transaction
        now = time.time()
        conn.executemany(
            "INSERT INTO jobs (task, args, kwargs, name, submitted_at) "
            "VALUES (?, '[]', '{}', ?, ?)",
            [("webtasks:steps", f"user_{n % 100}_job", now) for n in range(10_000)],
        )
    seen: list[int] = []
    cursor: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if cursor is not None:
            params["cursor"] = cursor
        page = client.get("/api/jobs", params=params).json()
        seen.extend(row["id"] for row in page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(10_000, 0, -1))
    filtered = client.get("/api/jobs", params={"pattern": "user_7_*", "limit": 50}).json()
    assert len(filtered["jobs"]) == 50
    assert {row["name"] for row in filtered["jobs"]} == {"user_7_job"}
    rest = client.get(
        "/api/jobs",
        params={"pattern": "user_7_*", "limit": 500, "cursor": filtered["next_cursor"]},
    ).json()
    assert len(rest["jobs"]) == 50
    assert rest["next_cursor"] is None
    assert client.get("/api/stats").json()["jobs"]["queued"] == 10_000


def test_openapi_lists_every_endpoint(client: httpx.Client) -> None:
    doc = client.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/cancel",
        "/api/cancel",
        "/api/stats",
        "/api/events",
    }


def test_events_stream_job_changes(client: httpx.Client, server: object, queue: Queue) -> None:
    seen: dict[str, set[Any]] = {"status": set(), "done": set()}
    with client.stream("GET", "/api/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        job_id = queue.submit("webtasks:steps", name="streamed")
        lines = stream.iter_lines()
        deadline = time.monotonic() + BACKSTOP
        cancelled = False
        while "cancelled" not in seen["status"]:
            assert time.monotonic() < deadline, f"the stream showed only {seen}"
            line = next(lines)
            if not line.startswith("data: "):
                continue
            for row in json.loads(line[6:])["jobs"]:
                if row["id"] == job_id:
                    seen["status"].add(row["status"])
                    seen["done"].add(row["done"])
            if len(seen["done"] - {None}) >= 3 and not cancelled:
                queue.cancel(job_id)  # the bar moved three times: now stop it
                cancelled = True
    assert "running" in seen["status"]


def test_cli_refuses_bad_options(db: object, queue: Queue) -> None:
    bad_bind = cli("web", "--db", str(db), "--bind", "nonsense")
    assert bad_bind.returncode == 2
    assert "HOST:PORT" in bad_bind.stderr
    short = cli("web", "--db", str(db), "--token", "short")
    assert short.returncode == 2
    assert "token" in short.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        busy = cli("web", "--db", str(db), "--bind", f"127.0.0.1:{port}")
    assert busy.returncode == 2
    assert "cannot listen" in busy.stderr
    for result in (bad_bind, short, busy):
        assert "Traceback" not in result.stderr


def test_cli_needs_an_existing_queue(tmp_path: Any) -> None:
    missing = tmp_path / "private" / "none.db"
    result = cli("web", "--db", str(missing), "--bind", "127.0.0.1:0")
    assert result.returncode == 3
    assert not missing.parent.exists()


def first_counts(lines: Iterator[str], *, queued: int) -> None:
    """Read the feed until its counts show ``queued`` queued jobs."""
    for line in lines:
        if line.startswith("data: ") and json.loads(line[6:])["stats"].get("queued") == queued:
            return


def test_a_feed_opened_later_starts_with_the_counts(web: str, queue: Queue) -> None:
    for n in range(2):
        queue.submit("webtasks:steps", name=f"waiting_{n}")
    with httpx.Client(base_url=web, headers=AUTH, trust_env=False, timeout=5.0) as client:
        with client.stream("GET", "/api/events") as early:
            first_counts(early.iter_lines(), queued=2)  # the hub has polled and published
        # Nothing changes now: a feed that waited for a change would time out here.
        with client.stream("GET", "/api/events") as late:
            first_counts(late.iter_lines(), queued=2)


def test_events_show_a_queued_job_cancelled_elsewhere(client: httpx.Client, queue: Queue) -> None:
    ids = [queue.submit("webtasks:steps", name=f"waiting_{n}") for n in range(3)]
    with client.stream("GET", "/api/events") as stream:
        lines = stream.iter_lines()
        first_counts(lines, queued=3)  # the last poll's counts, then the next poll's
        queue.cancel(ids[1])  # not through the dashboard: its polls must notice
        deadline = time.monotonic() + BACKSTOP
        while True:
            assert time.monotonic() < deadline, "the cancel never showed"
            line = next(lines)
            if not line.startswith("data: "):
                continue
            rows = {row["id"]: row for row in json.loads(line[6:])["jobs"]}
            if ids[1] in rows:
                assert rows[ids[1]]["status"] == "cancelled"
                break

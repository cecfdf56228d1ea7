"""``start_dashboard``: the dashboard as a thread of another process (``serve --http``)."""

from __future__ import annotations

import threading

import httpx
import pytest

from cancelpool.queue import Queue
from cancelpool.web import WebError, parse_bind, start_dashboard


def test_dashboard_in_a_thread_serves_and_stops(queue: Queue) -> None:
    job_id = queue.submit("webtasks:steps", name="in_thread")
    dashboard = start_dashboard(queue, "127.0.0.1:0")
    try:
        assert dashboard.token  # a random one, since none was given
        headers = {"Authorization": f"Bearer {dashboard.token}"}
        with httpx.Client(base_url=dashboard.url, headers=headers, trust_env=False) as client:
            rows = client.get("/api/jobs").json()["jobs"]
            assert [row["id"] for row in rows] == [job_id]
            out = client.post(f"/api/jobs/{job_id}/cancel").json()
            assert out["cancelled"] == [job_id]
    finally:
        dashboard.stop()
    assert not any(t.name == "cancelpool-web" for t in threading.enumerate())
    record = queue.get(job_id)
    assert record is not None
    assert record.status.value == "cancelled"
    with pytest.raises(httpx.ConnectError):
        httpx.get(dashboard.url, trust_env=False)


@pytest.mark.parametrize("bind", ["", "8765", "host:", "127.0.0.1:70000", "127.0.0.1:x"])
def test_a_bad_bind_is_a_sentence(bind: str) -> None:
    with pytest.raises(WebError, match="HOST:PORT"):
        parse_bind(bind)


def test_ipv6_bind_parses() -> None:
    address = parse_bind("[::1]:0")
    assert address.host == "::1"
    assert address.loopback
    assert not parse_bind("0.0.0.0:80").loopback


def test_a_weak_token_is_refused(queue: Queue) -> None:
    for token in ("short", "x" * 300, "spaces are not ok here", "semi;colon-0123456789"):
        with pytest.raises(WebError, match="token"):
            start_dashboard(queue, "127.0.0.1:0", token)

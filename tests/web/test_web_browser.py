"""The page in a real browser: Playwright driving Debian's Chromium against real
``cancelpool web`` and ``cancelpool serve`` processes.

Without Chromium these tests skip with a sentence, except under CI (``CI=true``), where
a missing browser is a failure: ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from webhelpers import BACKSTOP, TOKEN
from webtasks import INJECTION

from cancelpool.queue import Queue

CHROMIUM = "/usr/bin/chromium"
#: Where the screenshot goes: README's (docs/img/dashboard.png) when
#: CANCELPOOL_SCREENSHOT=1, so that a plain test run leaves the checkout unchanged.
README_SCREENSHOT = Path(__file__).parents[2] / "docs" / "img" / "dashboard.png"
#: Milliseconds: the backstop of every wait on the page (Playwright's unit).
WAIT_MS = BACKSTOP * 1000


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install 'cancelpool[test]')"
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests must run under CI: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
            # Root in a container has no user namespace for Chromium's sandbox.
            args=["--no-sandbox"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, web: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    dialogs: list[str] = []

    def answer(dialog: Any) -> None:
        dialogs.append(dialog.message)
        if page.accept_dialogs:
            dialog.accept()
        else:
            dialog.dismiss()

    page.accept_dialogs = False
    page.on("dialog", answer)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.dialogs = dialogs
    page.errors = errors
    page.goto(f"{web}?token={TOKEN}")
    page.wait_for_selector("#live.on")  # the event stream is connected
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors  # no script error, no CSP violation


@contextmanager
def evil_site(html: str) -> Iterator[str]:
    """Serve ``html`` from another origin on this host (a real server on another port,
    stopped at the end); yields its origin."""
    body = html.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="evil-site")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(BACKSTOP)


def row(page: Any, job_id: int) -> Any:
    return page.locator(f'#jobs tr[data-job-id="{job_id}"]')


def progress_value(page: Any, job_id: int) -> float:
    value = row(page, job_id).locator("progress").get_attribute("value")
    return float(value or 0)


def test_watch_a_running_job_and_cancel_it(
    server: object, page: Any, queue: Queue, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # Some history for the screenshot: finished, failed and cancelled jobs.
    done = [queue.submit("cancelpool.demo_tasks:add", n, 1, name=f"batch_{n}") for n in range(4)]
    failed = queue.submit("cancelpool.demo_tasks:fail", name="user_7_import")
    for job in (*done, failed):
        expect(row(page, job).locator("td.status")).to_have_text(
            ["completed", "failed"][job == failed]
        )
    job_id = queue.submit("webtasks:steps", 60, 0.1, name="user_42_report")
    target = row(page, job_id)
    expect(target).to_be_visible()  # it arrived through the event stream
    expect(target.locator("td.status")).to_have_text("running")
    page.wait_for_function(
        'id => Number(document.querySelector(`tr[data-job-id="${id}"] progress`)'
        "?.getAttribute('value') || 0) >= 2",
        arg=job_id,
    )
    first = progress_value(page, job_id)
    page.wait_for_function(
        '([id, v]) => Number(document.querySelector(`tr[data-job-id="${id}"] progress`)'
        "?.getAttribute('value') || 0) > v",
        arg=[job_id, first],
    )
    assert progress_value(page, job_id) > first  # the bar advanced, with no reload
    page.wait_for_function(  # the chart shows the finished jobs
        "() => [...document.querySelectorAll('#chart rect')]"
        ".some(r => Number(r.getAttribute('height')) > 0)"
    )
    screenshot = (
        README_SCREENSHOT if os.environ.get("CANCELPOOL_SCREENSHOT") else tmp_path / "page.png"
    )
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 0

    target.get_by_role("button", name="Cancel").click()
    expect(target.locator("td.status")).to_have_text("cancelled")
    expect(target.locator("td.outcome")).to_contain_text('partial: {"steps_done":')
    expect(target.get_by_role("button", name="Cancel")).to_have_count(0)
    record = queue.get(job_id)
    assert record is not None
    assert record.status.value == "cancelled"
    assert record.partial_result["steps_done"] >= 2

    target.locator("a.job").click()
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    expect(detail).to_contain_text("partial result")
    expect(detail).to_contain_text(f'"steps_done": {record.partial_result["steps_done"]}')


def test_job_text_shows_as_text(server: object, page: Any, queue: Queue) -> None:
    from playwright.sync_api import expect

    waiting = queue.submit("webtasks:hostile", name="hostile_wait")
    failed = queue.submit("webtasks:hostile", True, name="hostile_fail")
    expect(row(page, waiting).locator("td.msg")).to_have_text(INJECTION)
    expect(row(page, failed).locator("td.status")).to_have_text("failed")
    expect(row(page, failed).locator("td.outcome")).to_contain_text(INJECTION)
    row(page, failed).locator("a.job").click()
    expect(page.locator("#detail")).to_contain_text(f"ValueError: {INJECTION}")
    assert page.locator("main img").count() == 0  # no element was made of job text
    assert page.dialogs == []  # alert(1) never ran
    queue.cancel(waiting)
    expect(row(page, waiting).locator("td.status")).to_have_text("cancelled")


def test_pattern_cancel_asks_first(page: Any, queue: Queue) -> None:
    from playwright.sync_api import expect

    ids = [queue.submit("webtasks:steps", name=f"user_{n}_job") for n in (5, 6)]
    expect(row(page, ids[1])).to_be_visible()
    page.fill("#cancel-pattern", "user_6_*")
    page.click("#cancel-matching")  # the dialog handler dismisses: nothing happens
    assert page.dialogs == ["Cancel every unfinished job whose name matches user_6_*?"]
    assert queue.get(ids[1]).status.value == "queued"  # type: ignore[union-attr]
    page.accept_dialogs = True
    page.click("#cancel-matching")
    expect(row(page, ids[1]).locator("td.status")).to_have_text("cancelled")
    expect(row(page, ids[0]).locator("td.status")).to_have_text("queued")


def test_no_token_is_refused(browser: Any, web: str) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        response = page.goto(web)
        assert response.status == 401
        assert "needs its token" in page.content()
        assert page.locator("#jobs").count() == 0
        assert page.goto(f"{web}?token=not-the-token-at-all").status == 401
    finally:
        context.close()


def test_another_origin_is_refused(server: object, page: Any, web: str, queue: Queue) -> None:
    from playwright.sync_api import expect

    job_id = queue.submit("webtasks:steps", name="victim")
    expect(row(page, job_id).locator("td.status")).to_have_text("running")
    # A page of another origin on the same host (another local service's port: the same
    # site, so the browser even sends the SameSite=Strict cookie) posts to the dashboard
    # the two "simple" requests a browser sends without asking first. Without the origin
    # check, the second would cancel the job. (A public origin's requests to loopback
    # are blocked by Chromium itself.)
    evil = (
        "<!doctype html><title>evil</title><script>"
        "const opts = {method: 'POST', credentials: 'include', mode: 'no-cors'};"
        "Promise.allSettled(["
        f"fetch('{web}api/cancel', {{...opts, headers: {{'Content-Type': 'text/plain'}},"
        " body: JSON.stringify({pattern: '*'})}),"
        f"fetch('{web}api/jobs/{job_id}/cancel', opts),"
        "]).then(() => { document.title = 'sent'; });"
        "</script>"
    )
    other = page.context.new_page()
    with evil_site(evil) as evil_origin:
        other.goto(f"{evil_origin}/")
        other.wait_for_function("() => document.title === 'sent'")  # both requests ended
    other.close()
    record = queue.get(job_id)
    assert record is not None
    assert record.status.value == "running"
    assert not record.cancel_requested
    queue.cancel(job_id)


def test_ten_thousand_jobs_page_and_filter(browser: Any, web: str, queue: Queue) -> None:
    from playwright.sync_api import expect

    with queue.store.transaction() as conn:  # 10,000 jobs in one transaction
        conn.executemany(
            "INSERT INTO jobs (task, args, kwargs, name, status, submitted_at) "
            "VALUES ('webtasks:steps', '[]', '{}', ?, ?, 0)",
            [(f"user_{n % 100}_job", "completed" if n % 2 else "queued") for n in range(1, 10_001)],
        )
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{web}?token={TOKEN}")
        rows = page.locator("#jobs tbody tr")
        expect(rows).to_have_count(50)
        expect(rows.first).to_have_attribute("data-job-id", "10000")
        page.click("#older")
        expect(rows.first).to_have_attribute("data-job-id", "9950")
        expect(rows.last).to_have_attribute("data-job-id", "9901")
        page.click("#newest")
        expect(rows.first).to_have_attribute("data-job-id", "10000")
        page.select_option("#status", "completed")
        page.fill("#pattern", "user_7_*")
        page.click("#apply")
        expect(rows.first).to_have_attribute("data-job-id", "9907")
        expect(rows).to_have_count(50)
        for status in rows.locator("td.status").all_text_contents():
            assert status == "completed"
    finally:
        context.close()

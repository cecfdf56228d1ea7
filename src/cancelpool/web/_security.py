"""The dashboard's gate: a token on every request, one origin, headers that forbid the rest.

Every request needs the token: ``Authorization: Bearer TOKEN`` (scripts), or the cookie
that opening ``/?token=TOKEN`` sets (the page; it then redirects to ``/`` so the token
leaves the address bar and the history). A request that carries an ``Origin`` (or a
``Sec-Fetch-Site``) from another site is refused before anything else, so a page
elsewhere can neither read the API nor make the browser post to it with the cookie.
Every response says ``Content-Security-Policy``: scripts and styles from this origin
only, no inline script, no framing.
"""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The page's whole policy: its own files, its own API, nothing inline, no frames.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


def cookie_name(port: int) -> str:
    """Cookies do not separate ports: dashboards of two queues on one host each get
    their own cookie."""
    return f"cancelpool_token_{port}"


async def send_error(send: Send, status: int, message: str, *, json_body: bool = True) -> None:
    """A complete error response: JSON ``{"error": sentence}`` (or the sentence as text)."""
    if json_body:
        body = json.dumps({"error": message}).encode()
        kind = b"application/json"
    else:
        body = (message + "\n").encode()
        kind = b"text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", kind),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Gate:
    """ASGI middleware: origin check, token check, security headers on every response."""

    def __init__(
        self, app: ASGIApp, *, token: str, port: int, hosts: frozenset[str] | None = None
    ) -> None:
        self.app = app
        self._token = token.encode()
        self._cookie = cookie_name(port)
        self._hosts = hosts

    def _valid(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        api = scope["path"].startswith("/api/")
        host = headers.get("host", "")
        origin = headers.get("origin")
        scheme = scope.get("scheme", "http")
        if self._hosts is not None and host.lower() not in self._hosts:
            # A loopback dashboard is reached by a loopback name; another Host is a DNS
            # rebinding page (its requests would count as same-origin).
            await send_error(send, 403, f"the host name {host!r} is refused", json_body=api)
            return
        if origin is not None and origin != f"{scheme}://{host}":
            await send_error(
                send, 403, f"requests from another origin ({origin}) are refused", json_body=api
            )
            return
        if headers.get("sec-fetch-site") == "cross-site":
            await send_error(send, 403, "cross-site requests are refused", json_body=api)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope["path"] == "/" and "token" in query:
            if not self._valid(query["token"][-1]) or scope["method"] != "GET":
                await send_error(send, 401, "the token is wrong", json_body=False)
                return
            await _set_cookie_and_redirect(send, self._cookie, self._token.decode())
            return
        if not self._authorised(headers):
            await send_error(
                send,
                401,
                "this dashboard needs its token: open the address cancelpool web printed "
                "(/?token=...) or send 'Authorization: Bearer TOKEN'",
                json_body=api,
            )
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _authorised(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization")
        if auth is not None:
            scheme, _, credentials = auth.partition(" ")
            return scheme.lower() == "bearer" and self._valid(credentials.strip())
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no token
            return False
        morsel = cookies.get(self._cookie)
        return self._valid(morsel.value if morsel is not None else None)


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in scope.get("headers", []):
        found[key.decode("latin-1").lower()] = value.decode("latin-1")
    return found


async def _set_cookie_and_redirect(send: Send, name: str, token: str) -> None:
    cookie = f"{name}={token}; Path=/; HttpOnly; SameSite=Strict"
    headers: list[Any] = [
        (b"location", b"/"),
        (b"set-cookie", cookie.encode()),
        (b"content-length", b"0"),
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})

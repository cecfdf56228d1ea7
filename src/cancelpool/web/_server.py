"""Running the dashboard: its own process (``cancelpool web``) or a thread of another.

The socket is bound here, before uvicorn starts, so a port in use is one sentence, and
``--bind 127.0.0.1:0`` prints the port the system chose.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import signal
import socket
import threading
from dataclasses import dataclass

from ..queue import Queue

#: Longest and shortest token accepted: short ones can be guessed over the network.
MIN_TOKEN = 16
MAX_TOKEN = 256
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]+")
#: Seconds open requests (event streams) get at shutdown before they are cut.
SHUTDOWN_GRACE = 1.0
#: Seconds between checks, in ``run``, that the server thread still lives (a crash of
#: it ends the process within this time; signals end the wait at once).
SERVER_CHECK = 1.0


class WebError(ValueError):
    """A bad ``--bind`` or ``--token``, or an address that cannot be bound."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    def url(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}/"


def parse_bind(text: str) -> Address:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as an Address; WebError if malformed."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise WebError(f"--bind wants HOST:PORT such as 127.0.0.1:8765, not {text!r}")
    return Address(host, int(port_text))


def check_token(token: str | None) -> str:
    """The given token if it is long enough and URL-safe, else a new random one."""
    if token is None:
        return secrets.token_urlsafe(24)
    if not MIN_TOKEN <= len(token) <= MAX_TOKEN or not _TOKEN_RE.fullmatch(token):
        raise WebError(
            f"the token must be {MIN_TOKEN} to {MAX_TOKEN} characters of letters, digits and "
            "._~- (leave it out to get a random one)"
        )
    return token


def bind_socket(address: Address) -> socket.socket:
    """A listening socket on ``address``; WebError with the reason if it cannot be bound."""
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise WebError(f"cannot resolve {address.host!r}: {exc.strerror or exc}") from None
    family, kind, proto, _, where = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise WebError(
            f"cannot listen on {address.host}:{address.port}: {exc.strerror or exc}"
        ) from None
    sock.set_inheritable(False)
    return sock


class WebServer:
    """The dashboard of ``queue`` on a bound socket; :meth:`run` blocks, or
    :meth:`start` runs it in a thread that :meth:`stop` ends.

    Stopping closes the event streams (the pages reconnect to whatever serves next),
    waits at most ``SHUTDOWN_GRACE`` for open requests, and closes the socket. The
    queue stays open: it belongs to the caller.
    """

    def __init__(self, queue: Queue, address: Address, token: str | None = None) -> None:
        import uvicorn

        from ._app import create_app

        self.token = check_token(token)
        self.address = address
        self._sock = bind_socket(address)
        self.port: int = self._sock.getsockname()[1]
        hosts = None
        if address.loopback:
            names = ("127.0.0.1", "localhost", "[::1]")
            hosts = frozenset(f"{name}:{self.port}" for name in names)
        app = create_app(queue, token=self.token, port=self.port, hosts=hosts)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            ws="none",
            http="h11",
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=int(SHUTDOWN_GRACE) or 1,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The address to open, without the token."""
        return self.address.url(self.port)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        finally:
            self._sock.close()

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM (call it from the main thread), then stop
        gracefully and return (so the process exits 0, like ``serve``)."""
        stop = threading.Event()
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in handled}
        try:
            self.start()
            while self._thread is not None and self._thread.is_alive():
                # The wake-up only notices a crashed server thread; signals end the wait.
                if stop.wait(SERVER_CHECK):
                    break
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self) -> None:
        """Serve in a daemon thread; returns once it accepts requests."""
        self._thread = threading.Thread(target=self._run, name="cancelpool-web", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.01)  # uvicorn has no start event; its flag is the handshake

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to stop and wait for its thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)


def start_dashboard(queue: Queue, bind: str, token: str | None = None) -> WebServer:
    """Serve the dashboard of ``queue`` in a thread (what ``serve --http ADDR`` calls);
    ``.stop()`` ends it. Raises WebError for a bad address or token."""
    server = WebServer(queue, parse_bind(bind), token)
    server.start()
    return server

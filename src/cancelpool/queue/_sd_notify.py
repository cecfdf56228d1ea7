"""systemd's readiness protocol (``Type=notify``), written by hand: no dependency.

systemd passes a unix datagram socket in ``$NOTIFY_SOCKET`` (a path, or ``@name`` in
the abstract namespace); the service sends ``READY=1`` once it serves, ``STOPPING=1``
when it begins to stop, and ``STATUS=...`` lines shown by ``systemctl status``. See
sd_notify(3). Without ``$NOTIFY_SOCKET`` (not under systemd) nothing is sent.

The variable is removed from the environment when read, as sd_notify's
``unset_environment`` does, so worker processes and the jobs they run never inherit
it (with ``NotifyAccess=main`` systemd would ignore them anyway).
"""

from __future__ import annotations

import os
import socket

from .._visible import visible

#: How long one send may wait for room in the socket's queue: a notify socket nobody
#: reads (full after a few datagrams) must not stall the server's start or its stop.
SEND_TIMEOUT = 5.0


class Notifier:
    """Sends state lines to systemd's notify socket, if there is one.

    A failure to send (the socket went away) is returned, never raised: readiness is a
    courtesy to the service manager and must not stop a server that works.
    """

    def __init__(self, address: str | None, *, timeout: float = SEND_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout

    @classmethod
    def from_environment(cls) -> Notifier:
        """The socket named by ``$NOTIFY_SOCKET`` (which is then unset), or none."""
        return cls(os.environ.pop("NOTIFY_SOCKET", None) or None)

    def _target(self) -> str | None:
        address = self.address
        if not address:
            return None
        if address.startswith("@"):
            return "\0" + address[1:]  # the abstract namespace
        if address.startswith("/"):
            return address
        return None  # vsock:... and other kinds: not supported

    def send(self, *lines: str) -> str | None:
        """Send ``KEY=value`` lines in one datagram; None when sent or nothing to send
        to, else why it failed (a sentence). Values are made one line each."""
        target = self._target()
        if target is None:
            if self.address:
                return f"$NOTIFY_SOCKET {visible(self.address)!r} is not a unix socket path"
            return None
        payload = "\n".join(visible(line) for line in lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(self.timeout)
                sock.connect(target)
                sock.send(payload)
        except TimeoutError:
            why = f"no room in its queue for {self.timeout:g}s"
        except OSError as exc:
            why = exc.strerror or str(exc)  # "AF_UNIX path too long" has no errno
        else:
            return None
        return f"could not notify systemd at {visible(self.address or '')}: {why}"

    def ready(self, status: str) -> str | None:
        """``READY=1`` with a status line."""
        return self.send("READY=1", f"STATUS={status}")

    def stopping(self, status: str) -> str | None:
        """``STOPPING=1`` with a status line."""
        return self.send("STOPPING=1", f"STATUS={status}")

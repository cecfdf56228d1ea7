"""What ``cancelpool web`` runs once the CLI has opened the queue."""

from __future__ import annotations

import sys

import click

from ..queue import Queue
from ._server import WebError, WebServer, parse_bind


class BadWebInput(click.ClickException):
    """A bad ``--bind`` or ``--token``, or a port that cannot be had: exit 2."""

    exit_code = 2


def run_web(queue: Queue, bind: str, token: str | None) -> None:
    """Bind, print where to go, and serve until SIGINT/SIGTERM."""
    try:
        server = WebServer(queue, parse_bind(bind), token)
    except WebError as exc:
        raise BadWebInput(str(exc)) from None
    if not server.address.loopback:
        click.echo(
            f"cancelpool web: listening on {server.address.host}, not only this machine: "
            "anyone who can reach it and has the token controls the queue, over plain HTTP",
            err=True,
        )
    shown = f"{server.url}?token={server.token}" if token is None else server.url
    click.echo(f"cancelpool web: {shown}")
    sys.stdout.flush()  # a pipe reading the address must see it now
    server.run()

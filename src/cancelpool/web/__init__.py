"""``cancelpool web``: an HTTP API and a live dashboard for the queue (``cancelpool[web]``).

Imports Starlette and uvicorn: install the extra. ``import cancelpool`` never imports
this package.
"""

from __future__ import annotations

from ._server import WebError as WebError
from ._server import WebServer as WebServer
from ._server import parse_bind as parse_bind
from ._server import start_dashboard as start_dashboard

__all__ = ("WebError", "WebServer", "parse_bind", "start_dashboard")

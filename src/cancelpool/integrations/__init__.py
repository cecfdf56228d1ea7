"""Integrations with other libraries, each an optional extra.

* ``cancelpool.integrations.fastapi`` (``pip install cancelpool[fastapi]``): a request
  is cancelled when its client disconnects;
* ``cancelpool.integrations.httpx`` (``cancelpool[httpx]``): an HTTP client that checks
  cancellation per request and per streamed chunk;
* ``cancelpool.integrations.sqlalchemy`` (``cancelpool[sqlalchemy]``): an async session
  that rolls back and returns its connection when cancelled.

Each module imports its third-party package itself; ``import cancelpool`` loads none.
"""

from __future__ import annotations

__all__ = ()

"""The gate handshake (``tests/_handshake.py``) and a helper of the pool suite on top of it."""

from __future__ import annotations

import threading
from typing import Any

from _handshake import BACKSTOP, Arrival, Gate, announce, arrive, arrive_sync

__all__ = ("BACKSTOP", "Arrival", "Gate", "announce", "arrive", "arrive_sync", "start_running")


def start_running(
    pool: Any, gate: Gate, tag: str = "-", partial: Any = None, **options: Any
) -> Any:
    """Submit a ``_jobs.hold_running`` job and return its handle once the job is RUNNING
    in the supervisor's eyes and held at ``gate`` (``options`` go to ``submit``)."""
    from . import _jobs

    handle = pool.submit(_jobs.hold_running, gate.path, tag, partial, **options)
    [ready] = gate.wait(1)
    assert ready.tag == f"{tag}-ready"
    reported = threading.Event()
    handle.on_progress(lambda job_id, message, meta: reported.set())
    gate.release(ready)
    assert reported.wait(BACKSTOP), f"job {tag} did not report within {BACKSTOP}s"
    [held] = gate.wait(1)
    assert held.tag == tag
    return handle

"""The gate handshake of the fault suite: ``tests/_handshake.py``."""

from __future__ import annotations

from _handshake import (
    BACKSTOP,
    Arrival,
    Gate,
    announce,
    announce_async,
    arrive,
    arrive_sync,
    sleep_forever,
)

__all__ = (
    "BACKSTOP",
    "Arrival",
    "Gate",
    "announce",
    "announce_async",
    "arrive",
    "arrive_sync",
    "sleep_forever",
)

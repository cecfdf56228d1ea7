"""An allowed package whose submodule must never be imported by ``--allow 'qallow_pkg:*'``."""

from __future__ import annotations


async def ping() -> str:
    return "pong"

"""The seed library's ``utils.anyio_bridge`` path.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import AnyioBridge as AnyioBridge
from .. import call_soon_threadsafe as call_soon_threadsafe

__all__ = ("AnyioBridge", "call_soon_threadsafe")

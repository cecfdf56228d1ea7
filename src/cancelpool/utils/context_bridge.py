"""The seed library's ``utils.context_bridge`` path.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import ContextBridge as ContextBridge

__all__ = ("ContextBridge",)

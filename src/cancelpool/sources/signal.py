"""The seed library's ``sources.signal`` path.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import SignalSource as SignalSource

__all__ = ("SignalSource",)

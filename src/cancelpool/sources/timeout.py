"""The seed library's ``sources.timeout`` path.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import TimeoutSource as TimeoutSource

__all__ = ("TimeoutSource",)

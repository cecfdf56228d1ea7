"""The seed library's ``sources.base`` path.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import CancelationSource as CancelationSource

__all__ = ("CancelationSource",)

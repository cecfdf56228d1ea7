"""The seed library's ``core.cancelable`` path.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import Cancelable as Cancelable
from .. import current_operation as current_operation

__all__ = ("Cancelable", "current_operation")

"""The seed library's ``core.registry`` path.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import OperationRegistry as OperationRegistry

__all__ = ("OperationRegistry",)

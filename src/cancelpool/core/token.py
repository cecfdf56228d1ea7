"""The seed library's ``core.token`` path.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import CancelationToken as CancelationToken
from .. import LinkedCancelationToken as LinkedCancelationToken

__all__ = ("CancelationToken", "LinkedCancelationToken")

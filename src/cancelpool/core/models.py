"""The seed library's ``core.models`` path.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import CancelationReason as CancelationReason
from .. import OperationContext as OperationContext
from .. import OperationStatus as OperationStatus

__all__ = ("CancelationReason", "OperationContext", "OperationStatus")

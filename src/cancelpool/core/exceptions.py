"""The seed library's ``core.exceptions`` path.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import CancelationError as CancelationError
from .. import ConditionCancelation as ConditionCancelation
from .. import ManualCancelation as ManualCancelation
from .. import ParentCancelation as ParentCancelation
from .. import SignalCancelation as SignalCancelation
from .. import TimeoutCancelation as TimeoutCancelation

__all__ = (
    "CancelationError",
    "ConditionCancelation",
    "ManualCancelation",
    "ParentCancelation",
    "SignalCancelation",
    "TimeoutCancelation",
)

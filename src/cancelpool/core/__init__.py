"""The seed library's ``core`` package path: operations, tokens, registry, exceptions, models.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import Cancelable as Cancelable
from .. import CancelationError as CancelationError
from .. import CancelationReason as CancelationReason
from .. import CancelationToken as CancelationToken
from .. import ConditionCancelation as ConditionCancelation
from .. import LinkedCancelationToken as LinkedCancelationToken
from .. import ManualCancelation as ManualCancelation
from .. import OperationContext as OperationContext
from .. import OperationRegistry as OperationRegistry
from .. import OperationStatus as OperationStatus
from .. import ParentCancelation as ParentCancelation
from .. import SignalCancelation as SignalCancelation
from .. import TimeoutCancelation as TimeoutCancelation
from .. import current_operation as current_operation

__all__ = (
    "Cancelable",
    "CancelationError",
    "CancelationReason",
    "CancelationToken",
    "ConditionCancelation",
    "LinkedCancelationToken",
    "ManualCancelation",
    "OperationContext",
    "OperationRegistry",
    "OperationStatus",
    "ParentCancelation",
    "SignalCancelation",
    "TimeoutCancelation",
    "current_operation",
)

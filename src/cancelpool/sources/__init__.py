"""The seed library's ``sources`` package path: what can cancel an operation.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import AllOfSource as AllOfSource
from .. import AnyOfSource as AnyOfSource
from .. import CancelationSource as CancelationSource
from .. import CompositeSource as CompositeSource
from .. import ConditionSource as ConditionSource
from .. import ResourceConditionSource as ResourceConditionSource
from .. import SignalSource as SignalSource
from .. import TimeoutSource as TimeoutSource

__all__ = (
    "AllOfSource",
    "AnyOfSource",
    "CancelationSource",
    "CompositeSource",
    "ConditionSource",
    "ResourceConditionSource",
    "SignalSource",
    "TimeoutSource",
)

"""The seed library's ``sources.condition`` path.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import ConditionSource as ConditionSource
from .. import ResourceConditionSource as ResourceConditionSource

__all__ = ("ConditionSource", "ResourceConditionSource")

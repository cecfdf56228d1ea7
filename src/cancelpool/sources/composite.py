"""The seed library's ``sources.composite`` path.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import AllOfSource as AllOfSource
from .. import AnyOfSource as AnyOfSource
from .. import CompositeSource as CompositeSource

__all__ = ("AllOfSource", "AnyOfSource", "CompositeSource")

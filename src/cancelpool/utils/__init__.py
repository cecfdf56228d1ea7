"""Utilities at the paths the seed library uses (``cancelpool.utils.logging``)."""

from __future__ import annotations

__all__ = ()

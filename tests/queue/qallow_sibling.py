"""A sibling of the allowed ``qallow_victim`` with an import-time side effect."""

from __future__ import annotations

import os

_marker = os.environ.get("CANCELPOOL_TEST_MARKER")
if _marker:
    with open(_marker, "a") as _f:
        _f.write("qallow_sibling was imported\n")


async def boom() -> str:
    return "boom"

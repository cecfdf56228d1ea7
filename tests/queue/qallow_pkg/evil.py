"""A submodule with an import-time side effect: if it is ever imported, the marker exists."""

from __future__ import annotations

import os

_marker = os.environ.get("CANCELPOOL_TEST_MARKER")
if _marker:
    with open(_marker, "a") as _f:
        _f.write("qallow_pkg.evil was imported\n")


async def boom() -> str:
    return "boom"

"""Fixtures for the fault tests: real workers, real signals, and a clean end.

The pool fixtures, their teardown policy and the leftover check are the ones of every
process suite (``tests/_pools.py``): pools are torn down even when a test failed
half-way (running jobs are cancelled, stubborn workers are killed), and every test
ends with no child process and no new ``/dev/shm`` entry left.
"""

from __future__ import annotations

from _pools import _no_leftovers, make_pool, pool, pool_options, pool_starts

__all__ = ("_no_leftovers", "make_pool", "pool", "pool_options", "pool_starts")

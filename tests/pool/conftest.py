"""Fixtures for the pool's end-to-end tests: real workers, pipes and shared memory.

The pool fixtures and the leftover check are the ones of every process suite
(``tests/_pools.py``): every test ends with no child process of the test process left
(multiprocessing's fork server and resource tracker are long-lived helpers, and the
workers of a module-wide pool belong to that pool until its module ends) and no new
``/dev/shm`` entry.
"""

from __future__ import annotations

from _pools import _no_leftovers, make_pool, pool, pool_options, pool_starts, shared_pool

__all__ = ("_no_leftovers", "make_pool", "pool", "pool_options", "pool_starts", "shared_pool")

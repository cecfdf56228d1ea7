"""The ``Store`` protocol: what the server, ``Queue`` and the CLI need from a queue
database, and :func:`open_store`, which picks the implementation from the target.

A ``postgresql://`` (or ``postgres://``) URL opens the PostgreSQL store (the
``cancelpool[postgres]`` extra); anything else is a path to a SQLite file. Only the
target's *kind* is decided here: neither driver is imported before it is needed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._model import JobRecord
    from ._records import ClaimedJob, NodeInfo, Outcome
    from ._store import CancelOutcome, ServerInfo

#: Default PostgreSQL schema of the queue's tables (``--pg-schema``).
DEFAULT_PG_SCHEMA = "cancelpool"
_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,50}")


def is_pg_url(target: object) -> bool:
    """True if ``target`` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def check_pg_schema(name: object) -> str:
    """Return ``name`` if it is a plain lower-case schema name (letters, digits, ``_``)."""
    from ._exceptions import InvalidJob

    if not isinstance(name, str) or not _SCHEMA_RE.fullmatch(name):
        raise InvalidJob(
            f"--pg-schema must be lower-case letters, digits and _ (at most 51, not starting "
            f"with a digit), not {name!r}"
        )
    return name


class Store(Protocol):
    """One connection to a queue database; every method is one transaction (or a read).

    Implementations: the SQLite store (``_store``) and the PostgreSQL store
    (``_pgstore``). Writers take their allowed source statuses from ``_states``.
    """

    kind: str  #: "sqlite" or "postgresql"

    @property
    def display(self) -> str:
        """The database as it may be printed (a URL without its password)."""

    def close(self) -> None: ...

    def submit(
        self,
        task: str,
        args: str,
        kwargs: str,
        *,
        name: str | None,
        priority: int,
        timeout: float | None,
        parent: int | None,
        trace_context: str | None = None,
    ) -> int: ...

    def request_cancel(
        self,
        ids: Sequence[int] = (),
        *,
        pattern: str | None = None,
        reason: str = "manual",
        message: str | None = None,
        cascade: bool = True,
    ) -> CancelOutcome: ...

    def get(self, job_id: int) -> JobRecord | None: ...

    def status_of(self, job_id: int) -> str | None: ...

    def list_jobs(
        self,
        *,
        status: Sequence[str] = (),
        pattern: str | None = None,
        ids: Sequence[int] = (),
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[JobRecord]: ...

    def counts(self) -> dict[str, int]: ...

    def servers(self, *, live_only: bool = True) -> list[ServerInfo]: ...

    def nodes(self) -> list[NodeInfo]: ...

    def wake(self, owners: Collection[str] | None = None) -> None:
        """Wake live servers (all, or ``owners``): new jobs or cancel requests."""

    def register_server(self, info: ServerInfo) -> None: ...

    def heartbeat(self, server_id: str) -> bool:
        """Renew the server's lease; False if it was lost (another node recovered it)."""

    def unregister_server(self, server_id: str, reason: str) -> None: ...

    def claim(
        self, owner: str, limit: int, allow: Sequence[str]
    ) -> tuple[list[ClaimedJob], int]: ...

    def cancel_requests(self, owner: str) -> list[tuple[int, str | None]]: ...

    def owned(self, owner: str) -> set[int]:
        """Ids of the jobs ``running`` and owned by ``owner`` in the database now."""

    def record_outcomes(self, owner: str, outcomes: Sequence[Outcome]) -> list[int]: ...

    def cascade_cancel(self, parents: Sequence[int]) -> CancelOutcome: ...

    def save_progress(self, updates: dict[int, tuple[str, str, str | None]]) -> None: ...

    def release(
        self,
        owner: str,
        jobs: Sequence[tuple[int, str | None]],
        *,
        requeue: bool,
        message: str,
    ) -> None: ...

    def settle_orphan_cancel(self, job_id: int, owner: str) -> bool: ...

    def recover(self, me: str | None, max_attempts: int) -> dict[str, int]: ...


def open_store(
    target: str | os.PathLike[str],
    *,
    create: bool = True,
    pg_schema: str | None = None,
    application_name: str = "cancelpool",
    node: bool = False,
) -> Any:
    """Open the store ``target`` names (typed ``Any`` so callers see the protocol they
    annotate, whichever class it is); ``node``: for a ``serve`` node (PostgreSQL tunes
    its connection for claims).

    Raises:
        QueueError: the PostgreSQL driver is missing (with how to install it), the
            database is unreachable, or has no queue and ``create`` is False.
        QueueFileError: a SQLite path that is not a private queue file.
    """
    if is_pg_url(target):
        from ._pgstore import PostgresStore

        schema = check_pg_schema(
            pg_schema or os.environ.get("CANCELPOOL_PG_SCHEMA") or DEFAULT_PG_SCHEMA
        )
        return PostgresStore(
            str(target),
            schema=schema,
            create=create,
            application_name=application_name,
            node=node,
        )
    from ._store import SQLiteStore

    return SQLiteStore(target if isinstance(target, str) else Path(target), create=create)

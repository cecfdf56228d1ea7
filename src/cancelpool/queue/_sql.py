"""The queue's reads and writes, written once for both stores.

::

    SQLiteStore ---- _SQLiteTx --+                   +-- ? placeholders, json_each(?) lists,
                                 +--> Tx --> _sql -->|   no row locks (BEGIN IMMEDIATE)
    PostgresStore -- PgTx -------+                   +-- %s, = ANY(%s), FOR UPDATE [SKIP LOCKED]

A store opens one transaction (or a read), wraps its connection in a :class:`Tx` and
calls a function of this module with it. A ``Tx`` is the small part that differs
between the dialects: the placeholder (statements here use ``?``; the PostgreSQL
adapter rewrites it), the clock (``Tx.now``: the database's on PostgreSQL, so leases
and ages need no synchronised clocks), row locks, and a list parameter.

Every status in these statements comes from ``_states``: a move from ``old`` to ``new``
is fenced with ``_states.edge(old, new)``, which refuses an edge not in the table, and
written as a literal built from the enum (so the partial indexes on ``status`` apply).
Notifications and liveness stay in each store: they are not SQL.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from ._exceptions import InvalidJob, JobNotFound
from ._model import JobRecord, JobStatus, decode_json, task_allowed
from ._records import CancelOutcome, ClaimedJob, Outcome
from ._states import UNFINISHED, edge, literal, status_in
from ._taskref import allow_regex

Q, R = JobStatus.QUEUED, JobStatus.RUNNING
CANCELLED, FAILED = JobStatus.CANCELLED, JobStatus.FAILED
COMPLETED = JobStatus.COMPLETED

COLUMNS = (
    "id, task, args, kwargs, name, priority, timeout, parent, status, owner, attempts, "
    "submitted_at, started_at, ended_at, progress_message, progress, result, "
    "partial_result, error, traceback, cancel_requested, cancel_reason, cancel_message"
)
_CLAIMED = "id, task, args, kwargs, name, timeout, parent, attempts, priority, trace_context"


class Tx(Protocol):
    """One connection of a store, inside one transaction (or a read)."""

    #: SQL expression of the current time in seconds since the epoch.
    now: str
    #: Suffix of a SELECT whose rows the transaction will update ("" where the whole
    #: database is locked by the writer anyway).
    lock_rows: str
    #: Suffix of the claim's SELECT: lock the rows, skipping those another claim holds.
    skip_locked: str
    #: SQL condition: the row's ``task`` matches the regex given as its one ``?``.
    task_matches: str

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run ``sql`` (``?`` placeholders) and return its rows, readable by column."""

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run ``sql`` and return how many rows it changed."""

    def many(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        """Run ``sql`` once per parameter tuple."""

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, Any]:
        """SQL ``column IN <values>`` as one placeholder, and the parameter for it."""

    def match_name(self, pattern: str) -> tuple[str, list[Any], bool]:
        """SQL selecting the rows whose ``name`` the glob matches, its parameters, and
        whether it is exact (False: a superset, to be checked with fnmatch)."""

    def values_table(
        self, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
    ) -> tuple[str, list[Any]]:
        """A query yielding ``rows`` as a table of ``columns`` ((name, SQL type) pairs;
        at least one row), to use as ``WITH t(names) AS (<it>)``, and its parameters."""

    def rows_and_wake(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Like :meth:`rows` for a statement with ``RETURNING``, also waking every node
        in the same statement where the dialect can (PostgreSQL: NOTIFY, delivered at
        commit); elsewhere the caller wakes them."""


def glob_to_like(pattern: str) -> str | None:
    """A (case-sensitive) LIKE pattern, escape ``\\``, equal to the glob, or None if
    the glob has brackets."""
    if "[" in pattern:
        return None
    out = []
    for ch in pattern:
        if ch in "%_\\":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def _matching(rows: list[Any], pattern: str, exact: bool) -> list[Any]:
    if exact:
        return rows
    return [r for r in rows if r["name"] is not None and fnmatch.fnmatchcase(r["name"], pattern)]


# -- reading ----------------------------------------------------------------------------
def get(tx: Tx, job_id: int) -> JobRecord | None:
    rows = tx.rows(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,))
    return record(rows[0]) if rows else None


def status_of(tx: Tx, job_id: int) -> str | None:
    rows = tx.rows("SELECT status FROM jobs WHERE id = ?", (job_id,))
    return str(rows[0]["status"]) if rows else None


def list_jobs(
    tx: Tx,
    *,
    status: Sequence[str],
    pattern: str | None,
    ids: Sequence[int],
    limit: int | None,
    newest_first: bool,
) -> list[JobRecord]:
    clauses: list[str] = []
    params: list[Any] = []
    if status:
        sql, param = tx.in_list("status", list(status))
        clauses.append(sql)
        params.append(param)
    exact = True
    if pattern is not None:
        sql, more, exact = tx.match_name(pattern)
        clauses.append(sql)
        params.extend(more)
    if ids:
        sql, param = tx.in_list("id", list(ids))
        clauses.append(sql)
        params.append(param)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    order = "DESC" if newest_first else "ASC"
    # A pattern the SQL only narrows is checked here, and the limit with it.
    tail = f" LIMIT {int(limit)}" if limit is not None and exact else ""
    rows = tx.rows(f"SELECT {COLUMNS} FROM jobs {where} ORDER BY id {order}{tail}", params)
    if pattern is not None:
        rows = _matching(rows, pattern, exact)
    records = [record(row) for row in rows]
    return records[:limit] if limit is not None else records


def counts(tx: Tx) -> dict[str, int]:
    found = {
        row["status"]: int(row["n"])
        for row in tx.rows("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
    }
    out = {status.value: 0 for status in JobStatus}
    out.update(found)
    return out


def running_per_owner(tx: Tx) -> dict[str, int]:
    rows = tx.rows(f"SELECT owner, COUNT(*) AS n FROM jobs WHERE {status_in(R)} GROUP BY owner")
    return {row["owner"]: int(row["n"]) for row in rows if row["owner"] is not None}


def owned(tx: Tx, owner: str) -> set[int]:
    """Ids of the jobs ``running`` and owned by ``owner``."""
    rows = tx.rows(f"SELECT id FROM jobs WHERE {status_in(R)} AND owner = ?", (owner,))
    return {int(row["id"]) for row in rows}


def cancel_requests(tx: Tx, owner: str) -> list[tuple[int, str | None]]:
    """Running jobs of ``owner`` whose cancellation was requested: (id, message)."""
    rows = tx.rows(
        f"SELECT id, cancel_message FROM jobs WHERE {status_in(R)} AND owner = ? "
        "AND cancel_requested = 1 ORDER BY id",
        (owner,),
    )
    return [(int(row["id"]), row["cancel_message"]) for row in rows]


# -- producers --------------------------------------------------------------------------
def submit(
    tx: Tx,
    task: str,
    args: str,
    kwargs: str,
    *,
    name: str | None,
    priority: int,
    timeout: float | None,
    parent: int | None,
    trace_context: str | None = None,
) -> int:
    """Insert a queued job: one statement, atomic by itself (the parent is checked in
    it), so a store may run it without a transaction around it. ``trace_context``:
    the submitter's OpenTelemetry context (see ``_tracing``), None if untraced."""
    columns = (
        "task, args, kwargs, name, priority, timeout, parent, trace_context, status, submitted_at"
    )
    values = f"?, ?, ?, ?, ?, ?, ?, ?, {literal(Q)}, {tx.now}"
    params: tuple[Any, ...] = (task, args, kwargs, name, priority, timeout, parent, trace_context)
    if parent is None:
        sql = f"INSERT INTO jobs ({columns}) VALUES ({values}) RETURNING id"
    else:
        sql = (
            f"INSERT INTO jobs ({columns}) SELECT {values} "
            "WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?) RETURNING id"
        )
        params = (*params, parent)
    rows = tx.rows_and_wake(sql, params)
    if not rows:
        raise InvalidJob(f"parent job {parent} does not exist")
    return int(rows[0]["id"])


def request_cancel(
    tx: Tx,
    ids: Sequence[int],
    *,
    pattern: str | None,
    reason: str,
    message: str | None,
    cascade: bool,
) -> CancelOutcome:
    """Cancel jobs by id and by name pattern (and, with ``cascade``, their descendants).
    Unknown ids: JobNotFound, and nothing changes (the caller rolls back)."""
    targets: list[int] = []
    if ids:
        sql, param = tx.in_list("id", list(ids))
        found = {int(row["id"]) for row in tx.rows(f"SELECT id FROM jobs WHERE {sql}", (param,))}
        missing = sorted(set(ids) - found)
        if missing:
            raise JobNotFound(f"no job with id {', '.join(map(str, missing))}")
        targets.extend(ids)
    if pattern is not None:
        sql, params, exact = tx.match_name(pattern)
        rows = tx.rows(
            f"SELECT id, name FROM jobs WHERE {status_in(*UNFINISHED)} AND {sql} ORDER BY id",
            params,
        )
        targets.extend(int(r["id"]) for r in _matching(rows, pattern, exact))
    return cancel_walk(tx, targets, reason, message, cascade)


def cascade_cancel(tx: Tx, parents: Sequence[int]) -> CancelOutcome:
    """Cancel the unfinished descendants of jobs that ended cancelled."""
    if not parents:
        return CancelOutcome((), (), (), ())
    sql, param = tx.in_list("parent", list(parents))
    rows = tx.rows(
        f"SELECT id FROM jobs WHERE {sql} AND {status_in(*UNFINISHED)} ORDER BY id", (param,)
    )
    return cancel_walk(tx, [int(r["id"]) for r in rows], "parent", None, True)


def cancel_walk(
    tx: Tx, targets: Iterable[int], reason: str, message: str | None, cascade: bool
) -> CancelOutcome:
    """The cancel cascade, breadth first from ``targets``: a queued job becomes
    ``cancelled`` (it never runs), a running one gets ``cancel_requested`` and its
    owner is listed to be told; with ``cascade`` the unfinished children of each follow
    (reason ``parent``). Finished jobs are left as they are. Each row is locked as it is
    read (PostgreSQL), which orders the walk against a claim of the same job in flight.
    """
    cancelled: list[int] = []
    requested: list[int] = []
    finished: list[int] = []
    owners: dict[str, None] = {}  # ordered, once each
    seen: set[int] = set()
    todo = [(job_id, reason, message) for job_id in targets]
    while todo:
        job_id, why, text = todo.pop(0)
        if job_id in seen:
            continue
        seen.add(job_id)
        rows = tx.rows(
            f"SELECT status, owner, cancel_requested FROM jobs WHERE id = ?{tx.lock_rows}",
            (job_id,),
        )
        if not rows:
            continue
        row = rows[0]
        text = text or f"job {job_id} was cancelled ({why})"
        if row["status"] == Q:
            tx.run(
                f"UPDATE jobs SET status = {literal(CANCELLED)}, ended_at = {tx.now}, "
                "cancel_requested = 1, cancel_reason = ?, cancel_message = ? "
                f"WHERE id = ? AND {edge(Q, CANCELLED)}",
                (why, text, job_id),
            )
            cancelled.append(job_id)
        elif row["status"] == R:
            if not row["cancel_requested"]:
                # Not a move: the job stays running until its node writes the outcome.
                tx.run(
                    "UPDATE jobs SET cancel_requested = 1, cancel_reason = ?, "
                    f"cancel_message = ? WHERE id = ? AND {status_in(R)}",
                    (why, text, job_id),
                )
            requested.append(job_id)
            if row["owner"]:
                owners[row["owner"]] = None
        else:  # final, or a status no cancelpool wrote: left alone
            finished.append(job_id)
            continue
        if cascade:
            children = tx.rows(
                f"SELECT id FROM jobs WHERE parent = ? AND {status_in(*UNFINISHED)} ORDER BY id",
                (job_id,),
            )
            todo.extend(
                (int(child["id"]), "parent", f"its parent job {job_id} was cancelled")
                for child in children
            )
    return CancelOutcome(tuple(cancelled), tuple(requested), tuple(finished), tuple(owners))


# -- nodes --------------------------------------------------------------------------------
def claim(tx: Tx, owner: str, limit: int, allow: Sequence[str]) -> tuple[list[ClaimedJob], int]:
    """Move up to ``limit`` queued jobs that ``allow`` admits to ``running`` for
    ``owner``, priority then submission order, in one statement (atomic by itself; on
    PostgreSQL the rows are picked with ``SKIP LOCKED``, so two nodes never take one
    job). Jobs this server may not run stay queued for a server that may (nodes with
    different ``--allow`` lists share one queue). A row whose task only looks allowed
    (not a valid reference: written to the database by hand) fails, fenced on the
    claim. Returns the claimed jobs and how many failed so."""
    got = tx.rows(
        f"WITH picked AS MATERIALIZED (SELECT id FROM jobs WHERE {status_in(Q)} "
        f"AND {tx.task_matches} ORDER BY priority DESC, id LIMIT ?{tx.skip_locked}) "
        f"UPDATE jobs SET status = {literal(R)}, owner = ?, attempts = attempts + 1, "
        f"started_at = {tx.now}, ended_at = NULL "
        f"WHERE id IN (SELECT id FROM picked) AND {edge(Q, R)} RETURNING {_CLAIMED}",
        (allow_regex(allow), limit, owner),
    )
    got = sorted(got, key=lambda r: (-r["priority"], r["id"]))
    refused = [r for r in got if not task_allowed(r["task"], allow)]
    for r in refused:
        tx.run(
            f"UPDATE jobs SET status = {literal(FAILED)}, ended_at = {tx.now}, error = ?, "
            "owner = NULL, attempts = attempts - 1, started_at = NULL "
            f"WHERE id = ? AND owner = ? AND {edge(R, FAILED)}",
            (
                f"TaskNotAllowed: task {r['task']!r} matches none of the server's --allow "
                f"patterns {list(allow)}",
                r["id"],
                owner,
            ),
        )
    claimed = [
        ClaimedJob(
            int(r["id"]),
            r["task"],
            r["args"],
            r["kwargs"],
            r["name"],
            r["timeout"],
            r["parent"],
            int(r["attempts"]),
            r["trace_context"],
        )
        for r in got
        if task_allowed(r["task"], allow)
    ]
    return claimed, len(refused)


_OUTCOME_COLUMNS = (
    ("oid", "BIGINT"),
    ("ostatus", "TEXT"),
    ("oresult", "TEXT"),
    ("oerror", "TEXT"),
    ("otraceback", "TEXT"),
    ("opartial", "TEXT"),
    ("oreason", "TEXT"),
    ("omessage", "TEXT"),
    ("oran", "DOUBLE PRECISION"),
)


def record_outcomes(tx: Tx, owner: str, outcomes: Sequence[Outcome]) -> list[int]:
    """Store finished jobs in one statement, fenced on (owner, running): a node that
    lost a claim writes nothing for it. Returns the ids of cancelled jobs whose
    descendants must follow.

    A job that completed after its cancellation was requested (it returned before its
    node could stop it) is stored as ``cancelled``, its result kept as the partial
    result: ``Queue.cancel()`` counted it as cancelled when it returned, so that holds.
    """
    if not outcomes:
        return []
    for out in outcomes:
        edge(R, out.status)  # every outcome leaves running along an edge of the table
    edge(R, CANCELLED)  # the way a completion with a cancel request takes
    won = f"ostatus = {literal(COMPLETED)} AND cancel_requested = 1"
    names = ", ".join(name for name, _ in _OUTCOME_COLUMNS)
    table, params = tx.values_table(
        _OUTCOME_COLUMNS,
        [
            (
                out.id,
                JobStatus(out.status).value,
                out.result,
                out.error,
                out.traceback,
                out.partial_result,
                out.cancel_reason,
                out.cancel_message,
                out.ran_for,
            )
            for out in outcomes
        ],
    )
    rows = tx.rows(
        f"WITH o({names}) AS ({table}) "
        f"UPDATE jobs SET status = CASE WHEN {won} THEN {literal(CANCELLED)} "
        f"ELSE ostatus END, ended_at = {tx.now}, "
        f"started_at = CASE WHEN oran IS NULL THEN started_at ELSE {tx.now} - oran END, "
        f"result = CASE WHEN {won} THEN NULL ELSE oresult END, "
        "error = oerror, traceback = otraceback, "
        f"partial_result = CASE WHEN {won} THEN COALESCE(oresult, partial_result) "
        "ELSE COALESCE(opartial, partial_result) END, "
        "cancel_reason = COALESCE(cancel_reason, oreason), "
        "cancel_message = COALESCE(cancel_message, omessage) "
        f"FROM o WHERE id = oid AND owner = ? AND {status_in(R)} RETURNING id, status",
        (*params, owner),
    )
    done = {int(r["id"]) for r in rows if r["status"] == CANCELLED}
    return [out.id for out in outcomes if out.id in done]


def save_progress(tx: Tx, updates: Mapping[int, tuple[str, str, str | None]]) -> None:
    """The last progress (message, metadata JSON, partial JSON) of running jobs."""
    tx.many(
        "UPDATE jobs SET progress_message = ?, progress = ?, "
        f"partial_result = COALESCE(?, partial_result) WHERE id = ? AND {status_in(R)}",
        [(msg, meta, partial, job_id) for job_id, (msg, meta, partial) in updates.items()],
    )


def release(
    tx: Tx, owner: str, jobs: Sequence[tuple[int, str | None]], *, requeue: bool, message: str
) -> int:
    """Jobs a stopping node gave up, as (id, partial result JSON): back to the queue
    (``requeue``) or cancelled (reason ``signal``), keeping progress and partial
    results; a job whose cancellation was requested ends cancelled either way. Returns
    how many were requeued."""
    requeued = 0
    for job_id, partial in jobs:
        tx.run(
            "UPDATE jobs SET partial_result = COALESCE(?, partial_result) "
            f"WHERE id = ? AND owner = ? AND {status_in(R)}",
            (partial, job_id, owner),
        )
        if requeue:
            requeued += tx.run(
                f"UPDATE jobs SET status = {literal(Q)}, owner = NULL, ended_at = NULL "
                f"WHERE id = ? AND owner = ? AND {edge(R, Q)} AND cancel_requested = 0",
                (job_id, owner),
            )
        tx.run(
            f"UPDATE jobs SET status = {literal(CANCELLED)}, ended_at = {tx.now}, "
            "cancel_reason = COALESCE(cancel_reason, 'signal'), "
            "cancel_message = COALESCE(cancel_message, ?) "
            f"WHERE id = ? AND owner = ? AND {edge(R, CANCELLED)}",
            (message, job_id, owner),
        )
    return requeued


def settle_orphan_cancel(
    tx: Tx, job_id: int, owner: str, *, fence: str = "", fence_params: Sequence[Any] = ()
) -> bool:
    """Mark ``cancelled`` a running job of a dead ``owner`` whose cancellation was
    requested; ``fence`` is the store's own "and its owner is dead" SQL, if any. Fenced
    on (owner, status, request): True if it changed the job."""
    changed = tx.run(
        f"UPDATE jobs SET status = {literal(CANCELLED)}, ended_at = {tx.now}, "
        "cancel_message = COALESCE(cancel_message, ?) "
        f"WHERE id = ? AND owner = ? AND {edge(R, CANCELLED)} AND cancel_requested = 1{fence}",
        (f"job {job_id} was cancelled; its server had died", job_id, owner, *fence_params),
    )
    return changed == 1


def recover_jobs(tx: Tx, node: str, note: str, max_attempts: int) -> dict[str, int]:
    """The running jobs of a dead ``node``: a cancel requested meanwhile wins; then
    back to the queue with attempts left, else ``interrupted`` (``note`` says why, and
    after how many attempts). Progress and partial results stay."""
    counts = {}
    counts[CANCELLED.value] = tx.run(
        f"UPDATE jobs SET status = {literal(CANCELLED)}, ended_at = {tx.now}, "
        "cancel_message = COALESCE(cancel_message, ?) "
        f"WHERE owner = ? AND {edge(R, CANCELLED)} AND cancel_requested = 1",
        (f"cancelled; {note}", node),
    )
    counts[Q.value] = tx.run(
        f"UPDATE jobs SET status = {literal(Q)}, owner = NULL, ended_at = NULL "
        f"WHERE owner = ? AND {edge(R, Q)} AND attempts < ?",
        (node, max_attempts),
    )
    interrupted = JobStatus.INTERRUPTED
    counts[interrupted.value] = tx.run(
        f"UPDATE jobs SET status = {literal(interrupted)}, ended_at = {tx.now}, "
        "error = ? || ', after ' || attempts || ' attempt(s)' "
        f"WHERE owner = ? AND {edge(R, interrupted)}",
        (note, node),
    )
    return counts


# -- records ------------------------------------------------------------------------------
def record(row: Any) -> JobRecord:
    """A stored row (readable by column name) as a record. A damaged row (a value no
    cancelpool wrote: JSON that does not decode, an unknown status) still becomes a
    record, shown as ``failed`` with what is wrong in ``error``, so one bad row never
    hides the others."""
    damage: list[str] = []

    def json_field(column: str, default: Any = None) -> Any:
        try:
            return decode_json(row[column])
        except (ValueError, TypeError):
            damage.append(f"{column} is not JSON")
            return default

    try:
        status = JobStatus(row["status"])
    except ValueError:
        damage.append(f"unknown status {str(row['status'])[:40]!r}")
        status = JobStatus.FAILED
    args = json_field("args", [])
    kwargs = json_field("kwargs", {})
    job = JobRecord(
        id=row["id"],
        task=row["task"],
        args=args if isinstance(args, list) else [args],
        kwargs=kwargs if isinstance(kwargs, dict) else {},
        name=row["name"],
        priority=row["priority"],
        timeout=row["timeout"],
        parent=row["parent"],
        status=status,
        owner=row["owner"],
        attempts=row["attempts"],
        submitted_at=row["submitted_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        progress_message=row["progress_message"],
        progress=json_field("progress"),
        result=json_field("result"),
        partial_result=json_field("partial_result"),
        error=row["error"],
        traceback=row["traceback"],
        cancel_requested=bool(row["cancel_requested"]),
        cancel_reason=row["cancel_reason"],
        cancel_message=row["cancel_message"],
    )
    if not damage:
        return job
    note = f"damaged row: {'; '.join(damage)}"
    return dataclasses.replace(job, error=f"{note} ({job.error})" if job.error else note)


def schema_number(version: str) -> int | None:
    """A schema version as stored (text), or None if it is not a plain number (a row
    another program wrote: the queue is then refused, not read)."""
    return int(version) if version.isascii() and version.isdigit() else None

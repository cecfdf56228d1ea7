"""The PostgreSQL store's connection: how statements reach the server, and how
notifications come back. The store (``_pgstore``) says what is sent; this module owns
the sockets, the retry rules, the placeholders and the password.

::

    PostgresStore --- read/write(fn) ---> PgConnection: lock, one connection,
         |                                  BEGIN/COMMIT or one self-committing
         |                                  statement, reconnect + safe retry ---> PostgreSQL
         +-------- listen(on_note) -------> a thread with a connection of its own:
                                            LISTEN <channel>, on_note(payload)  <--- NOTIFY

Passwords never leave this module and ``_pgstore``: :func:`redact` is what gets
printed, and error messages from the driver are scrubbed of the password before they
are raised.
"""

from __future__ import annotations

import functools
import select
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from . import _sql
from ._exceptions import InvalidJob, QueueError, QueueUnavailable

T = TypeVar("T")

#: Seconds a connection attempt may take.
CONNECT_TIMEOUT = 5
#: SQL for the database's clock: leases and heartbeat ages need no synchronised clocks.
NOW = "extract(epoch from clock_timestamp())::double precision"

#: Query parameters of a libpq URL that carry a secret.
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, in the user part and in the query
    (``?password=``, ``?sslpassword=``): what may be printed."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user = quote(parts.username or "", safe="")
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(key.lower() in _SECRET_PARAMS for key, _ in pairs):
                query = urlencode(
                    [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs],
                    safe="*",
                )
        if netloc == parts.netloc and query == parts.query:
            return url
        # Spelled out: urlunsplit drops the "//" of an empty host ("postgresql:///db").
        text = f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
        return text + (f"#{parts.fragment}" if parts.fragment else "")
    except ValueError:
        return "postgresql://<a URL that does not parse>"


class PgConnection:
    """One connection to a PostgreSQL database, for one store. Thread-safe (a lock per
    call; :attr:`lock` is that lock, re-entrant).

    A connection that was cut off (the server restarted, the backend terminated) is
    replaced, and the call that found it broken is run again once on the new one when
    that is safe:

    * reads (``get``, ``list_jobs``, ``counts``, ``servers``, ``nodes``, ``owned``,
      ``cancel_requests``, ``status_of``) and idempotent writes (``wake``,
      ``heartbeat``, ``unregister_server``, ``save_progress``, ``upgrade``): always;
    * the other writes (``submit``, ``request_cancel``, ``cascade_cancel``, ``claim``,
      ``record_outcomes``, ``release``, ``recover``, ``register_server``,
      ``settle_orphan_cancel``): only when the connection broke before what commits
      was sent (``COMMIT``; for ``submit``, ``claim`` and ``record_outcomes``, which
      are one self-committing statement each, the statement), so it cannot have
      committed. Broken after that, it may or may not have, and the call raises
      ``QueueUnavailable`` rather than risk doing it twice (a second job, a claim
      nobody runs).

    Before each call an idle connection the server already hung up on (a terminated
    backend has sent its goodbye) is replaced without a round trip, so the usual cut
    -off costs a reconnect, never an error or a doubt about a write.

    A second failure in a row, or a server that cannot be reached, raises
    ``QueueUnavailable``. (Which store calls are reads, idempotent or one statement is
    the store's to say: it passes ``idempotent`` and ``single`` to :meth:`write`.)
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str,
        application_name: str = "cancelpool",
        planner: str = "",
    ) -> None:
        """Connect to ``url`` with ``schema`` as the search path; ``planner``: extra
        ``-c`` settings of the main connection (not the listener's).

        Raises:
            QueueUnavailable: the database cannot be reached.
            InvalidJob: ``url`` is not a PostgreSQL URL.
        """
        self.url = url
        self.schema = schema
        self.channel = f"{schema}_wake"
        self.application_name = application_name
        self._planner = planner
        self._password = urlsplit(url).password or ""
        self.lock = threading.RLock()
        self._conn: Any = None
        with self.lock:
            self._connect()

    def scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def unavailable(self, exc: BaseException) -> QueueUnavailable:
        first = self.scrub(str(exc)).strip().splitlines()
        return QueueUnavailable(
            f"the queue database {redact(self.url)} cannot be reached: "
            + (first[0] if first else type(exc).__name__)
        )

    def new_connection(self, *, autocommit: bool = True, role: str = "") -> Any:
        import psycopg

        try:
            return psycopg.connect(
                self.url,
                autocommit=autocommit,
                connect_timeout=CONNECT_TIMEOUT,
                application_name=self.application_name + role,
                options=f"-c search_path={self.schema}" + ("" if role else self._planner),
            )
        except psycopg.OperationalError as exc:
            raise self.unavailable(exc) from None
        except psycopg.ProgrammingError as exc:  # a malformed URL
            raise InvalidJob(
                f"not a PostgreSQL URL: {redact(self.url)} ({self.scrub(str(exc))})"
            ) from None

    def _connect(self) -> None:
        from psycopg.rows import dict_row

        self._conn = self.new_connection()
        self._conn.row_factory = dict_row

    def _drop(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
        except Exception:
            pass
        self._conn = None

    def call(self, fn: Callable[[PgTx], T], *, transaction: bool, idempotent: bool) -> T:
        """Run ``fn`` on the connection (in one transaction if asked; else each of its
        statements commits by itself), retrying once on a new connection if the old one
        turned out broken and the retry is safe (see the class docstring). Driver errors
        become QueueUnavailable or QueueError."""
        import psycopg

        with self.lock:
            for attempt in (1, 2):
                committing = False
                try:
                    if (
                        self._conn is None
                        or self._conn.closed
                        or self._conn.broken
                        or _hung_up(self._conn)
                    ):
                        self._drop()
                        self._connect()
                    with self._conn.cursor() as cur:
                        tx = PgTx(cur, self.channel)
                        if not transaction:
                            # A write here is one statement that commits as it runs:
                            # once sent, whether it committed is unknown.
                            committing = True
                            return fn(tx)
                        cur.execute("BEGIN")
                        try:
                            result = fn(tx)
                        except BaseException:
                            if not self._conn.broken:
                                try:
                                    cur.execute("ROLLBACK")
                                except psycopg.Error:
                                    pass
                            raise
                        committing = True
                        cur.execute("COMMIT")
                        return result
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    lost = self._conn is None or self._conn.closed or self._conn.broken
                    self._drop()
                    if lost and attempt == 1 and (idempotent or not committing):
                        continue
                    raise self.unavailable(exc) from None
                except psycopg.Error as exc:
                    raise QueueError(
                        f"the queue database {redact(self.url)}: {self.scrub(str(exc)).strip()}"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def read(self, fn: Callable[[PgTx], T]) -> T:
        return self.call(fn, transaction=False, idempotent=True)

    def write(
        self, fn: Callable[[PgTx], T], *, idempotent: bool = False, single: bool = False
    ) -> T:
        """A write in one transaction; ``single``: ``fn`` runs statements that are each
        atomic and fenced on their own, sent without BEGIN/COMMIT (two round trips
        fewer: the hot paths, submit and claim)."""
        return self.call(fn, transaction=not single, idempotent=idempotent)

    def close(self) -> None:
        with self.lock:
            self._drop()

    def listen(
        self,
        name: str,
        on_connect: Callable[[], None],
        on_note: Callable[[str], None],
    ) -> Callable[[], None]:
        """Start a thread (``name``) that LISTENs on :attr:`channel` on a connection of
        its own and calls ``on_note`` with each notification's payload. It reconnects
        when its connection breaks, calling ``on_connect`` once listening (what came
        while it was away is for the caller to look up). Returns a function that stops
        it (and waits up to 5 s for the thread)."""
        stop = threading.Event()

        def loop() -> None:
            from psycopg import sql

            while not stop.is_set():
                try:
                    conn = self.new_connection(role="-listen")
                except QueueError:
                    stop.wait(0.5)
                    continue
                try:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    on_connect()
                    while not stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            on_note(note.payload)
                except Exception:
                    if not stop.is_set():
                        stop.wait(0.2)
                finally:
                    try:
                        conn.close()
                    except Exception:
                        pass

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()

        def close() -> None:
            stop.set()
            thread.join(5)

        return close


def _hung_up(conn: Any) -> bool:
    """True if an idle connection has something to read: the server said goodbye (a
    terminated backend, a shutdown) or, rarely, a notice. Either way it is replaced
    before a statement is sent on it, so a write is never lost to a connection that
    was already dead, and the retry of an uncommitted write stays the exception.
    Costs one ``select`` with no wait, no round trip."""
    try:
        return bool(select.select([conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        return True


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """``_sql``'s ``?`` placeholders as psycopg's ``%s`` (no statement there has a
    literal ``?`` or ``%``; any ``%`` is doubled all the same)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgTx:
    """The PostgreSQL side of ``_sql.Tx``: ``%s`` placeholders, lists as arrays, row
    locks, and the database's clock (leases and heartbeat ages need no synchronised
    clocks between nodes)."""

    now = NOW
    lock_rows = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    task_matches = "task ~ ?"

    def __init__(self, cur: Any, channel: str) -> None:
        self.cur = cur
        self.channel = channel

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self.cur.execute(_pg_sql(sql), params)
        return list(self.cur.fetchall()) if self.cur.description is not None else []

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.cur.execute(_pg_sql(sql), params)
        return int(self.cur.rowcount)

    def many(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        self.cur.executemany(_pg_sql(sql), list(params))

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, Any]:
        return f"{column} = ANY(?)", list(values)

    def values_table(
        self, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
    ) -> tuple[str, list[Any]]:
        # One array per column: the same text for any number of rows, so the server
        # keeps one prepared plan (VALUES lists would be one statement per length).
        arrays = ", ".join(f"CAST(? AS {kind}[])" for _, kind in columns)
        names = ", ".join(name for name, _ in columns)
        columns_of_rows = [list(column) for column in zip(*rows, strict=True)]
        return f"SELECT * FROM unnest({arrays}) AS v({names})", columns_of_rows

    def match_name(self, pattern: str) -> tuple[str, list[Any], bool]:
        like = _sql.glob_to_like(pattern)
        if like is None:  # brackets: checked with fnmatch
            return "name IS NOT NULL", [], False
        return "name LIKE ? ESCAPE '\\'", [like], True

    def rows_and_wake(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        # One round trip: the NOTIFY rides in the statement (once per returned row;
        # identical notifications of one transaction fold into one).
        return self.rows(
            f"WITH w AS ({sql}) SELECT w.*, pg_notify(?, '*') AS woken FROM w",
            (*params, self.channel),
        )

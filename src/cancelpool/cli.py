"""The ``cancelpool`` command: a durable job queue served by a CancelPool.

``serve`` runs a server; ``submit``, ``cancel``, ``ls``, ``watch``, ``result`` and
``stats`` talk to the queue database from any process; ``demo`` shows it all on a
temporary database. Every client verb has ``--json`` for scripts.

Exit codes (docs/cli.md): 0 ok; 1 a runtime error (an unknown job id, a busy or
failing database); 2 bad usage or input, and nothing was written; 3 no queue at that
path or a file refused as unsafe. ``result`` and ``submit --wait`` report the job: 0
completed, 4 failed, 5 cancelled, 6 interrupted, 7 not finished yet. Ctrl-C: 130.

Human output is drawn with rich (``queue._render``): tables, colours, width-aware
truncation and live progress bars, with ``NO_COLOR`` and pipes handled by rich. Every
piece of job-provided text passes through ``queue._format.visible`` first and reaches
rich as plain ``Text`` (never markup); ``--json`` output is exact JSON.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__
from ._cli_config import SourcedOption, load_config

if TYPE_CHECKING:
    from .queue import JobRecord, Queue

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_NO_QUEUE = 3
EXIT_FAILED = 4
EXIT_CANCELLED = 5
EXIT_INTERRUPTED = 6
EXIT_NOT_FINISHED = 7
EXIT_INTERRUPTED_BY_USER = 130  # 128 + SIGINT, as shells report a Ctrl-C
_STATUS_EXIT = {
    "completed": 0,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
    "interrupted": EXIT_INTERRUPTED,
}
STATUSES = ("queued", "running", "completed", "failed", "cancelled", "interrupted")

#: How often ``watch`` re-reads the database and redraws. The server commits progress
#: at most every 0.1 s, so faster redraws show nothing new.
WATCH_INTERVAL = 0.1


class BadInput(click.ClickException):
    """Invalid job input: exit 2, like a usage error, and nothing was written."""

    exit_code = EXIT_USAGE


class NoQueue(click.ClickException):
    """No queue at that path, or its files were refused as unsafe: exit 3."""

    exit_code = EXIT_NO_QUEUE


class Checked(click.ParamType):  # type: ignore[type-arg]
    """A value converted with ``base`` and checked by a validator of ``queue._model``
    (named, so that importing the CLI stays light): the CLI and ``Queue`` share one
    rule per kind of value, and a bad one is a usage error (exit 2)."""

    def __init__(self, name: str, base: Callable[[str], Any], check: str, **options: Any) -> None:
        self.name = name
        self._base = base
        self._check = check
        self._options = options

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from .queue import InvalidJob, _model

        if isinstance(value, str):
            try:
                value = self._base(value)
            except (ValueError, OverflowError):
                self.fail(f"{value!r} is not a valid {self.name}", param, ctx)
        check = getattr(_model, self._check)
        try:
            if self._options:  # check_seconds names the option in its sentence
                what = param.opts[0] if param is not None and param.opts else self.name
                return check(value, what, **self._options)
            return check(value)
        except InvalidJob as exc:
            self.fail(str(exc), param, ctx)


def seconds(*, allow_zero: bool = True) -> Checked:
    """Finite seconds (>= 0, or > 0), at most a year: ``queue._model.check_seconds``."""
    return Checked("seconds", float, "check_seconds", allow_zero=allow_zero, allow_none=False)


JOB_ID = Checked("job id", int, "check_job_id")
PRIORITY = Checked("integer", int, "check_priority")
LIMIT = Checked("integer", int, "check_limit")
PATTERN = Checked("pattern", str, "check_pattern")
MESSAGE = Checked("message", str, "check_message")


class DbTarget(click.ParamType):  # type: ignore[type-arg]
    """A queue: a ``postgresql://`` URL (kept as text) or a SQLite file path."""

    name = "path|url"
    _path = click.Path(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.startswith(("postgresql://", "postgres://")):
            return value
        return self._path.convert(value, param, ctx)


def _set_pg_schema(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # The store reads it from the environment: one option for every verb, and serve's
    # own subprocesses see the same schema.
    if value is not None:
        from .queue._exceptions import InvalidJob
        from .queue._protocol import check_pg_schema

        try:
            os.environ["CANCELPOOL_PG_SCHEMA"] = check_pg_schema(value)
        except InvalidJob as exc:
            raise BadInput(str(exc)) from None


def db_option(fn: F) -> F:
    fn = click.option(
        "--pg-schema",
        cls=SourcedOption,
        default=None,
        expose_value=False,
        callback=_set_pg_schema,
        envvar="CANCELPOOL_PG_SCHEMA",
        help="PostgreSQL schema of the queue's tables (default: cancelpool).",
    )(fn)
    return click.option(
        "--db",
        cls=SourcedOption,
        type=DbTarget(),
        envvar="CANCELPOOL_DB",
        default=None,
        help="Queue database: a file, or a postgresql://user:password@host/db URL "
        "(default: $CANCELPOOL_DB, else queue.db in the user state directory, "
        "~/.local/state/cancelpool on Linux).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def keep_waiting_option(fn: F) -> F:
    return click.option(
        "--keep-waiting",
        is_flag=True,
        help="With --wait: when no live server can run the job, say so once and keep "
        f"waiting for one (default: say so and exit {EXIT_NOT_FINISHED}, not finished).",
    )(fn)


@contextmanager
def open_queue(db: Path | str | None, *, create: bool = True) -> Iterator[Queue]:
    """Open the queue; ``create=False`` for verbs that must not create one."""
    import sqlite3

    from .queue import InvalidJob, JobNotFound, Queue, QueueError, QueueFileError
    from .queue._exceptions import QueueUnavailable

    try:
        queue = Queue(db, create=create)
    except InvalidJob as exc:
        raise BadInput(str(exc)) from None
    except QueueUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    except QueueFileError as exc:
        raise NoQueue(str(exc)) from None
    except QueueError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot open the queue database: {exc}") from None
    try:
        yield queue
    except sqlite3.OperationalError as exc:
        raise click.ClickException(f"the queue database {queue.path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise NoQueue(f"the queue database {queue.path} is damaged: {exc}") from None
    except InvalidJob as exc:
        raise BadInput(str(exc)) from None
    except JobNotFound as exc:
        raise click.ClickException(str(exc)) from None
    except QueueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        queue.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="cancelpool")
def cli() -> None:
    """A durable job queue whose running jobs can really be cancelled.

    Start with `cancelpool demo`.
    """


# -- serve -----------------------------------------------------------------------------------
def _check_allow(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Any:
    from .queue._model import check_allow_pattern

    for pattern in value:
        try:
            check_allow_pattern(pattern)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _check_node_name(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from .queue._model import check_name

    if value is not None:
        try:
            check_name(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc).replace("job name", "--node-name")) from None
    return value


def _check_http_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is not None:
        _check_http(value)
    return value


def _check_metrics_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is not None:
        return _check_metrics(value)
    return value


def serve_option(*decls: str, **attrs: Any) -> Callable[[F], F]:
    """A ``serve`` option, also read from ``$CANCELPOOL_<NAME>`` and the config file,
    whose bad value names its source."""
    name = next(d for d in decls if d.startswith("--")).lstrip("-").replace("-", "_")
    attrs.setdefault("envvar", f"CANCELPOOL_{name.upper()}")
    attrs.setdefault("show_envvar", True)
    return click.option(*decls, cls=SourcedOption, **attrs)


@cli.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=str),
    envvar="CANCELPOOL_CONFIG",
    show_envvar=True,
    is_eager=True,
    expose_value=False,
    callback=load_config,
    help="A TOML file of these options (keys: their long names). Precedence: the "
    "command line, then $CANCELPOOL_* variables, then this file, then the defaults.",
)
@db_option
@serve_option(
    "--allow",
    "allow",
    multiple=True,
    required=True,
    metavar="PATTERN",
    callback=_check_allow,
    help="Tasks this server may run, as a glob on 'module:function' (repeatable; the "
    "variable: space-separated), e.g. 'myapp.tasks:*'.",
)
@serve_option(
    "--workers", type=click.IntRange(1, 512), default=None, help="Worker processes (default: CPUs)."
)
@serve_option(
    "--concurrency",
    type=click.IntRange(1, 100_000),
    default=None,
    help="Jobs this server runs at once (default: 16 per worker).",
)
@serve_option(
    "--max-attempts",
    type=click.IntRange(1, 1000),
    default=3,
    show_default=True,
    help="Starts per job before a job of a dead server counts as interrupted.",
)
@serve_option(
    "--on-shutdown",
    type=click.Choice(["requeue", "cancel"]),
    default="requeue",
    show_default=True,
    help="What SIGTERM/Ctrl-C does to the running jobs.",
)
@serve_option(
    "--grace",
    type=seconds(),
    default=10.0,
    show_default=True,
    help="Seconds a shutdown waits for cancelled jobs to stop before giving them up.",
)
@serve_option(
    "--cancel-grace",
    type=seconds(),
    default=5.0,
    show_default=True,
    help="Seconds a cancelled job may ignore its cancellation before its worker is "
    "killed (a forced stop, shown by ls and result).",
)
@serve_option(
    "--path",
    "paths",
    multiple=True,
    type=click.Path(file_okay=False, path_type=str),
    metavar="DIR",
    help="Import tasks from DIR too (repeatable, first wins; the variable: separated by "
    "':'). The working directory is never on the import path: give --path . to import "
    "from it.",
)
@serve_option(
    "--worker-init",
    default=None,
    metavar="MODULE:FUNCTION",
    help="A function each worker process runs once before its first job (the pool's "
    "initializer): e.g. one that configures an OpenTelemetry TracerProvider, so that "
    "the jobs' spans are exported (see docs/otel.md).",
)
@serve_option(
    "--node-name",
    default=None,
    metavar="LABEL",
    callback=_check_node_name,
    help="A label for this node in `cancelpool nodes` (its id is fresh per process).",
)
@serve_option(
    "--http",
    default=None,
    metavar="HOST:PORT",
    callback=_check_http_option,
    help="Serve the dashboard and HTTP API (cancelpool web) from this server too, on "
    "HOST:PORT (needs cancelpool[web]; the token comes from $CANCELPOOL_WEB_TOKEN or is "
    "printed).",
)
@serve_option(
    "--metrics",
    default=None,
    metavar="HOST:PORT",
    callback=_check_metrics_option,
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (needs "
    "cancelpool[metrics]; port 0: any free port, logged).",
)
@serve_option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Least severe log records shown (debug: every job started and finished).",
)
@serve_option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text, or as JSON objects (one per line, with the job id, name "
    "and node as fields).",
)
@serve_option("--quiet", "-q", is_flag=True, help="Log nothing but errors (--log-level error).")
def serve(
    db: Path | str | None,
    allow: tuple[str, ...],
    paths: tuple[str, ...],
    workers: int | None,
    concurrency: int | None,
    max_attempts: int,
    on_shutdown: str,
    grace: float,
    cancel_grace: float,
    worker_init: str | None,
    node_name: str | None,
    http: str | None,
    metrics: tuple[str, int] | None,
    log_level: str,
    log_format: str,
    quiet: bool,
) -> None:
    """Run queued jobs in a CancelPool until SIGTERM or Ctrl-C.

    On shutdown it stops claiming, cancels the running jobs (keeping their partial
    results), requeues or cancels them per --on-shutdown, and exits 0. Under systemd
    (Type=notify) it tells systemd once it serves ($NOTIFY_SOCKET, READY=1).
    """
    from .queue import QueueFileError
    from .queue._exceptions import QueueError, QueueUnavailable
    from .queue._sd_notify import Notifier
    from .queue._serve_log import configure
    from .queue._server import Server, ServerOptions, stop_helper_processes
    from .queue._store import default_db_target
    from .queue._task import set_server_import_path

    try:
        # Tasks come from the environment's path plus --path, never the working dir.
        set_server_import_path(paths)
    except QueueFileError as exc:
        raise NoQueue(str(exc)) from None
    initializer = None
    if worker_init is not None:
        from .queue._exceptions import InvalidJob, TaskNotAllowed
        from .queue._task import load_task

        try:
            # The same rules as a task (a module's own public function), admitted by
            # itself: the operator named it.
            initializer = load_task(worker_init, (worker_init,))
        except (InvalidJob, TaskNotAllowed) as exc:
            raise click.BadParameter(str(exc), param_hint="--worker-init") from None

    logger = configure("error" if quiet else log_level, log_format)
    options = ServerOptions(
        allow=allow,
        workers=workers or os.cpu_count() or 1,
        concurrency=concurrency,
        max_attempts=max_attempts,
        on_shutdown=on_shutdown,
        grace=grace,
        cancel_grace=cancel_grace,
        worker_init=initializer,
    )
    with _metrics_endpoint(metrics, logger) as pool_metrics:
        try:
            server = Server(
                db or default_db_target(),
                options,
                logger,
                node_name=node_name,
                notifier=Notifier.from_environment(),
            )
        except QueueFileError as exc:
            raise NoQueue(str(exc)) from None
        except QueueUnavailable as exc:
            raise click.ClickException(str(exc)) from None
        except QueueError as exc:
            raise click.ClickException(str(exc)) from None
        if pool_metrics is not None:
            server.subscribe(pool_metrics)
        with _dashboard(db or default_db_target(), http, logger):
            code = server.run()
    stop_helper_processes()  # its fork server too is gone when serve's exit is seen
    sys.exit(code)


def _check_http(bind: str) -> None:
    """``serve --http``'s address and extra, checked before the server starts anything."""
    try:
        from .web import WebError, parse_bind
    except ImportError as exc:
        raise click.ClickException(
            f"serve --http needs the web extra: pip install 'cancelpool[web]' ({exc})"
        ) from None
    try:
        parse_bind(bind)
    except WebError as exc:
        raise BadInput(f"--http: {exc}") from None


def _check_metrics(bind: str) -> tuple[str, int]:
    """``serve --metrics``'s address and extra, checked before anything starts."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            f"serve --metrics needs the metrics extra: pip install 'cancelpool[metrics]' ({exc})"
        ) from None
    from .web._server import WebError, parse_bind

    try:
        address = parse_bind(bind)
    except WebError as exc:
        raise click.BadParameter(str(exc).replace("--bind", "--metrics")) from None
    return address.host, address.port


@contextmanager
def _metrics_endpoint(bind: tuple[str, int] | None, logger: logging.Logger) -> Iterator[Any]:
    """``serve --metrics``: ``/metrics`` in a thread of the server, bound before the
    server creates anything (a bad address leaves nothing behind). Yields the
    subscriber that keeps the metrics, or None without ``--metrics``."""
    if bind is None:
        yield None
        return
    from prometheus_client import CollectorRegistry

    from .metrics import PoolMetrics, serve_metrics

    registry = CollectorRegistry()
    try:
        endpoint = serve_metrics(bind[0], bind[1], registry)
    except OSError as exc:
        why = exc.strerror or exc
        raise BadInput(f"--metrics: cannot listen on {bind[0]}:{bind[1]}: {why}") from None
    logger.info("metrics %s", endpoint.url, extra={"always": True})
    try:
        yield PoolMetrics(registry)
    finally:
        endpoint.stop()


@contextmanager
def _dashboard(db: Path | str, bind: str | None, logger: logging.Logger) -> Iterator[None]:
    """``serve --http``: the dashboard in a thread of the server, for as long as it runs.
    Its address is logged even with --quiet: a generated token is the only way in."""
    if bind is None:
        yield
        return
    try:
        from .web import WebError, start_dashboard
    except ImportError as exc:
        raise click.ClickException(
            f"serve --http needs the web extra: pip install 'cancelpool[web]' ({exc})"
        ) from None
    with open_queue(db, create=False) as queue:
        try:
            token = os.environ.get("CANCELPOOL_WEB_TOKEN")
            dashboard = start_dashboard(queue, bind, token)
        except WebError as exc:
            raise BadInput(f"--http: {exc}") from None
        # A token the user chose is not echoed; a generated one is the only way in.
        shown = dashboard.url + (f"?token={dashboard.token}" if token is None else "")
        logger.info("dashboard %s", shown, extra={"always": True})
        try:
            yield
        finally:
            dashboard.stop()


# -- submit ----------------------------------------------------------------------------------
@cli.command()
@db_option
@click.argument("task")
@click.argument("args_json", required=False, default="[]")
@click.option("--name", default=None, help="Label for patterns: letters, digits, _.:@/+=,-")
@click.option(
    "--timeout", type=seconds(allow_zero=False), default=None, help="Seconds the job may run."
)
@click.option("--priority", type=PRIORITY, default=0, show_default=True, help="Higher runs first.")
@click.option("--parent", type=JOB_ID, default=None, help="Parent job id: its cancel cancels this.")
@click.option("--wait", is_flag=True, help="Wait for the outcome and print it (like `result`).")
@keep_waiting_option
@json_option
def submit(
    db: Path | str | None,
    task: str,
    args_json: str,
    name: str | None,
    timeout: float | None,
    priority: int,
    parent: int | None,
    wait: bool,
    keep_waiting: bool,
    as_json: bool,
) -> None:
    """Queue TASK ('package.module:function') with ARGS_JSON; print the job id.

    ARGS_JSON: a JSON array is positional arguments, an object keyword arguments,
    anything else a single argument. Use '-' to read it from stdin.
    """
    from .queue._model import MAX_ARGS_BYTES, parse_args_json

    if args_json == "-":
        # One byte past the limit tells a payload too large without reading all of it.
        data = sys.stdin.buffer.read(MAX_ARGS_BYTES + 1)
        if len(data) > MAX_ARGS_BYTES:
            raise BadInput(f"the arguments on stdin are over the limit of {MAX_ARGS_BYTES} bytes")
        try:
            args_json = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"the arguments on stdin are not UTF-8 text ({exc.reason})") from None
    with open_queue(db) as queue:
        args, kwargs = parse_args_json(args_json)
        job_id = queue._submit(task, args, kwargs, name, timeout, priority, parent)
        if wait:
            _show_result(
                queue, job_id, wait=True, timeout=None, as_json=as_json, keep_waiting=keep_waiting
            )
        elif as_json:
            click.echo(_json({"id": job_id}))
        else:
            click.echo(job_id)


# -- cancel ----------------------------------------------------------------------------------
@cli.command()
@db_option
@click.argument("ids", nargs=-1, type=JOB_ID)
@click.option(
    "--pattern", type=PATTERN, default=None, help="Cancel every unfinished job whose name matches."
)
@click.option("--message", type=MESSAGE, default=None, help="Why (one line, stored with the jobs).")
@click.option("--wait", is_flag=True, help="Wait until the running ones have stopped.")
@keep_waiting_option
@json_option
def cancel(
    db: Path | str | None,
    ids: tuple[int, ...],
    pattern: str | None,
    message: str | None,
    wait: bool,
    keep_waiting: bool,
    as_json: bool,
) -> None:
    """Cancel jobs by ID or --pattern 'user_42_*', with their child jobs.

    Queued jobs never run; running ones are stopped within milliseconds and keep
    their partial results.
    """
    if not ids and pattern is None:
        raise click.UsageError("give job ids or --pattern")
    with open_queue(db, create=False) as queue:
        outcome = queue.cancel_jobs(ids, name_pattern=pattern, message=message)
        if wait:
            for job_id in outcome.requested:
                if _wait_for(queue, job_id, None, keep_waiting)[0] is None:
                    sys.exit(EXIT_NOT_FINISHED)
        if as_json:
            click.echo(
                _json(
                    {
                        "cancelled": list(outcome.cancelled),
                        "requested": list(outcome.requested),
                        "already_finished": list(outcome.finished),
                    }
                )
            )
            return
        if not outcome.count and not outcome.finished:
            click.echo("no unfinished job matches")
            return
        parts = []
        if outcome.cancelled:
            parts.append(f"{len(outcome.cancelled)} queued")
        if outcome.requested:
            parts.append(f"{len(outcome.requested)} running ({'stopped' if wait else 'stopping'})")
        if outcome.count:
            click.echo(f"cancelled {outcome.count} job(s): {', '.join(parts)}")
        if outcome.finished:
            listed = ", ".join(map(str, outcome.finished))
            click.echo(f"already finished: {listed}")


# -- ls --------------------------------------------------------------------------------------
@cli.command(name="ls")
@db_option
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUSES),
    help="Only jobs in this status (repeatable).",
)
@click.option(
    "--pattern", type=PATTERN, default=None, help="Only jobs whose name matches this glob."
)
@click.option(
    "--limit",
    type=LIMIT,
    default=100,
    show_default=True,
    help="Show the newest N jobs.",
)
@json_option
def ls_command(
    db: Path | str | None,
    statuses: tuple[str, ...],
    pattern: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List jobs: status, progress, time and outcome."""
    with open_queue(db, create=False) as queue:
        jobs = queue.store.list_jobs(
            status=statuses, pattern=pattern, limit=limit, newest_first=True
        )
        jobs.reverse()
        if as_json:
            click.echo(_json([job.to_dict() for job in jobs]))
        elif jobs:
            from .queue._render import jobs_table, new_console

            console = new_console()
            console.print(jobs_table(jobs, console.width))
        else:
            click.echo("no jobs")


# -- watch -----------------------------------------------------------------------------------
@cli.command()
@db_option
@click.argument("ids", nargs=-1, type=JOB_ID)
@click.option("--pattern", type=PATTERN, default=None, help="Jobs whose name matches this glob.")
@click.option(
    "--timeout", type=seconds(), default=None, help="Stop watching after this many seconds."
)
@json_option
def watch(
    db: Path | str | None,
    ids: tuple[int, ...],
    pattern: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Live progress of jobs (all unfinished ones by default) until they finish.

    On a terminal: a bar per running job, a table of the finished ones. Otherwise (or
    with --json): one line per change.
    """
    with open_queue(db, create=False) as queue:
        store = queue.store
        if ids:
            missing = [i for i in ids if store.status_of(i) is None]
            if missing:
                raise click.ClickException(f"no job with id {', '.join(map(str, missing))}")
            watched = list(ids)
        else:
            jobs = store.list_jobs(status=("queued", "running"), pattern=pattern)
            watched = [job.id for job in jobs]
        if not watched:
            click.echo("no unfinished job to watch")
            return
        notice = _UnservedNotice(queue, watched)
        _watch_loop(queue, watched, timeout=timeout, as_json=as_json, on_tick=notice)


class _UnservedNotice:
    """``watch``'s on_tick: says once on stderr, per job, that no live server can finish
    it (it would otherwise wait in silence), from the same checks as ``result --wait``,
    once the job stayed unserved ``NO_SERVER_GRACE``. Checked every ``CHECK_INTERVAL``
    (a check costs a query and the servers' liveness per job: with thousands of jobs,
    every frame would keep a core busy)."""

    CHECK_INTERVAL = 1.0

    def __init__(self, queue: Queue, ids: list[int]) -> None:
        self._queue = queue
        self._ids = ids
        self._next = 0.0
        self._unserved_since: dict[int, float] = {}
        self._told: set[int] = set()

    def __call__(self) -> list[str]:
        from .queue._client import NO_SERVER_GRACE
        from .queue._format import visible

        now = time.monotonic()
        if now < self._next:
            return []
        self._next = now + self.CHECK_INTERVAL
        for job_id in self._ids:
            if job_id in self._told:
                continue
            reason = self._queue.unserved_reason(job_id)
            if reason is None:
                self._unserved_since.pop(job_id, None)
            elif now - self._unserved_since.setdefault(job_id, now) >= NO_SERVER_GRACE:
                self._told.add(job_id)
                click.echo(visible(reason), err=True)
        return []


def _watch_loop(
    queue: Queue,
    ids: list[int],
    *,
    timeout: float | None,
    as_json: bool,
    on_tick: Callable[[], list[str]] | None = None,
    erase: bool = False,
) -> None:
    """Redraw (terminal) or print changes (pipe) until every job in ``ids`` finished.

    ``on_tick`` runs before each frame; the lines it returns are printed above the
    live view, once. ``erase`` clears the live view at the end.
    """
    from .queue._render import new_console

    console = new_console()
    if console.is_interactive and not as_json:
        _watch_live(queue, ids, console, timeout=timeout, on_tick=on_tick, erase=erase)
    else:
        _watch_lines(queue, ids, timeout=timeout, as_json=as_json, on_tick=on_tick)


def _watch_live(
    queue: Queue,
    ids: list[int],
    console: Any,
    *,
    timeout: float | None,
    on_tick: Callable[[], list[str]] | None,
    erase: bool,
) -> None:
    """``watch`` on a terminal: rich's live display of a ``WatchView``."""
    from rich.live import Live
    from rich.text import Text

    from .queue._format import visible
    from .queue._render import WatchView

    deadline = None if timeout is None else time.monotonic() + timeout
    view = WatchView(console)
    with Live(view, console=console, auto_refresh=False, transient=erase) as live:
        while True:
            for message in on_tick() if on_tick is not None else []:
                live.console.print(Text(visible(message)))
            jobs = queue.store.list_jobs(ids=ids)
            view.update(jobs)
            live.refresh()
            if all(job.finished for job in jobs):
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(WATCH_INTERVAL)


def _watch_lines(
    queue: Queue,
    ids: list[int],
    *,
    timeout: float | None,
    as_json: bool,
    on_tick: Callable[[], list[str]] | None,
) -> None:
    """``watch`` on a pipe or with ``--json``: one line per change of a job."""
    from ._visible import json_visible
    from .queue._format import changes, progress_text, to_json, visible

    deadline = None if timeout is None else time.monotonic() + timeout
    last: dict[int, tuple[str, str]] = {}
    sent: dict[int, dict[str, Any]] = {}  # --json: what each job looked like last time
    while True:
        for message in on_tick() if on_tick is not None else []:
            click.echo(visible(message))
        jobs = queue.store.list_jobs(ids=ids)
        for job in jobs:
            if as_json:
                record = job.to_dict()
                delta = changes(sent.get(job.id), record)
                sent[job.id] = record
                if delta:
                    click.echo(json_visible(to_json(delta)))
                continue
            state = (job.status.value, job.progress_message or "")
            if last.get(job.id) != state:
                last[job.id] = state
                click.echo(
                    visible(
                        f"{job.id} {job.name or job.task} {job.status.value} "
                        f"{progress_text(job)} {job.progress_message or ''}".rstrip()
                    )
                )
        if all(job.finished for job in jobs):
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        time.sleep(WATCH_INTERVAL)


# -- result ----------------------------------------------------------------------------------
@cli.command()
@db_option
@click.argument("job_id", type=JOB_ID)
@click.option("--wait", is_flag=True, help="Wait until the job has finished.")
@click.option("--timeout", type=seconds(), default=None, help="With --wait: give up after this.")
@keep_waiting_option
@json_option
def result(
    db: Path | str | None,
    job_id: int,
    wait: bool,
    timeout: float | None,
    keep_waiting: bool,
    as_json: bool,
) -> None:
    """Print a job's result (JSON), or its error / partial result.

    Exit code: 0 completed, 4 failed, 5 cancelled, 6 interrupted, 7 not finished
    (1 unknown job, 3 no queue).
    """
    with open_queue(db, create=False) as queue:
        _show_result(
            queue, job_id, wait=wait, timeout=timeout, as_json=as_json, keep_waiting=keep_waiting
        )


def _wait_for(
    queue: Queue, job_id: int, timeout: float | None, keep_waiting: bool
) -> tuple[JobRecord | None, bool]:
    """``queue.wait`` that tells the user on stderr when no live server can finish the
    job: then (None, True), or (``keep_waiting``) it keeps waiting. (None, False) on
    ``timeout``; (record, told) when the job finished."""
    from .queue import JobNotFinished, NoLiveServer

    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        return queue.wait(job_id, timeout, need_server=True), False
    except NoLiveServer as exc:
        if not keep_waiting:
            click.echo(f"{exc} (or pass --keep-waiting)", err=True)
            return None, True
        click.echo(f"{exc}; waiting for a server (--keep-waiting)", err=True)
    except JobNotFinished:
        return None, False
    remaining = None if deadline is None else max(deadline - time.monotonic(), 1e-3)
    try:
        return queue.wait(job_id, remaining), True
    except JobNotFinished:
        return None, True


def _show_result(
    queue: Queue,
    job_id: int,
    *,
    wait: bool,
    timeout: float | None,
    as_json: bool,
    keep_waiting: bool = False,
) -> None:
    from .queue import JobNotFound
    from .queue._format import cancel_text, quoted, visible, visible_json

    job = queue.get(job_id)
    if job is None:
        raise JobNotFound(f"no job with id {job_id}")
    told = False
    if wait and not job.finished:
        waited, told = _wait_for(queue, job_id, timeout, keep_waiting)
        job = waited or queue.get(job_id)
        assert job is not None
    status = job.status.value
    if as_json:
        click.echo(_json(job.to_dict()))
    elif status == "completed":
        click.echo(visible_json(job.result))
    elif status == "failed":
        _say(f"job {job_id} failed: {visible(job.error or 'no error recorded')}", status)
        if job.traceback:
            _say(quoted(job.traceback.rstrip()), "dim")
    elif status in ("cancelled", "interrupted"):
        _say(f"job {job_id} {cancel_text(job)}", status)
        click.echo(visible_json(job.partial_result))
    elif not told:  # else the reason it is unfinished was said already
        _say(f"job {job_id} is {status}", status)
        unserved = queue.unserved_reason(job_id)  # e.g. its server was killed
        if unserved is not None:
            _say(visible(unserved), "dim")
    sys.exit(_STATUS_EXIT.get(status, EXIT_NOT_FINISHED))


def _say(text: str, style: str) -> None:
    """A line (or a quoted block) about a job on stderr, in its status's colour on a
    terminal. ``text`` is already made visible; rich gets it as plain ``Text`` and
    leaves long lines to the terminal to wrap (no line breaks of rich's own)."""
    from rich.text import Text

    from .progress_display import STATUS_STYLES
    from .queue._render import new_console

    shown = Text(text, style=STATUS_STYLES.get(style, style))
    new_console(stderr=True).print(shown, soft_wrap=True)


# -- stats -----------------------------------------------------------------------------------
@cli.command()
@db_option
@json_option
def stats(db: Path | str | None, as_json: bool) -> None:
    """Jobs per status and the running servers."""
    from .queue._format import visible

    with open_queue(db, create=False) as queue:
        info = queue.statistics()
        counts = {s: getattr(info, s) for s in STATUSES}
        servers = [
            {
                "id": s.id,
                "pid": s.pid,
                "workers": s.workers,
                "allow": list(s.allow),
                "started_at": s.started_at,
                "heartbeat": s.heartbeat,
            }
            for s in info.servers
        ]
        if as_json:
            click.echo(_json({"db": str(queue.path), "jobs": counts, "servers": servers}))
            return
        from rich.text import Text

        from .queue._render import new_console, table

        console = new_console()
        console.print(Text(f"queue {visible(str(queue.path))}"), soft_wrap=True)
        console.print(_counts_table(counts, console.width))
        if not info.servers:
            console.print(Text("no server running"))
            return
        now = time.time()
        rows = [
            [s.id, str(s.pid), str(s.workers), f"{now - s.started_at:.0f}s", " ".join(s.allow)]
            for s in info.servers
        ]
        console.print(table(["SERVER", "PID", "WORKERS", "UP", "ALLOW"], rows, width=console.width))


def _counts_table(counts: dict[str, int], width: int) -> Any:
    """``stats``' jobs per status: a header of statuses, each count in its colour."""
    from .progress_display import STATUS_STYLES
    from .queue._render import table

    grid = table(list(counts), [[str(n) for n in counts.values()]], width=width)
    for column in grid.columns:
        column.style = STATUS_STYLES.get(str(column.header), "")
    return grid


# -- nodes -----------------------------------------------------------------------------------
@cli.command()
@db_option
@json_option
def nodes(db: Path | str | None, as_json: bool) -> None:
    """The live nodes (servers): id, host, pid, label, running jobs, heartbeat age."""
    from .queue._format import visible

    with open_queue(db, create=False) as queue:
        found = queue.nodes()
        if as_json:
            click.echo(_json({"db": str(queue.path), "nodes": [n.to_dict() for n in found]}))
            return
        if not found:
            click.echo(f"no live node serves {visible(str(queue.path))}")
            return
        rows = [
            [
                n.id,
                visible(n.host),
                str(n.pid),
                visible(n.label or "-"),
                str(n.running),
                f"{n.heartbeat_age:.1f}s",
            ]
            for n in found
        ]
        from .queue._render import new_console, table

        console = new_console()
        headers = ["NODE", "HOST", "PID", "LABEL", "RUNNING", "HEARTBEAT"]
        console.print(table(headers, rows, width=console.width))


# -- health --------------------------------------------------------------------------------
#: A node whose heartbeat is older than this is stalled, not healthy: the server writes
#: one every 2 s (HOUSEKEEPING_INTERVAL), so this is five missed beats.
HEALTH_MAX_AGE = 10.0


@cli.command()
@db_option
@click.option(
    "--node-name",
    default=None,
    metavar="LABEL",
    help="Only a node started with this --node-name counts (a probe for one server; "
    "PostgreSQL queues, where nodes record their name).",
)
@click.option(
    "--max-age",
    type=seconds(allow_zero=False),
    default=HEALTH_MAX_AGE,
    show_default=True,
    help="A node whose last heartbeat is older than this many seconds is stalled.",
)
@json_option
def health(db: Path | str | None, node_name: str | None, max_age: float, as_json: bool) -> None:
    """Exit 0 if a live server serves the queue, else 1 (3: no queue there); one line
    says why. For container and load-balancer probes, and `systemctl` checks."""
    from .queue._format import visible

    with open_queue(db, create=False) as queue:
        store: Any = queue.store
        if node_name is not None and store.kind == "sqlite":
            raise BadInput(
                "health --node-name needs a PostgreSQL queue: SQLite nodes do not record "
                "their --node-name"
            )
        found = [n for n in queue.nodes() if node_name is None or n.label == node_name]
        fresh = [n for n in found if n.heartbeat_age <= max_age]
        where = visible(str(queue.path))
        who = f" named {visible(node_name)}" if node_name is not None else ""
        if fresh:
            node = min(fresh, key=lambda n: n.heartbeat_age)
            line = (
                f"ok: {len(fresh)} live node(s){who} serve {where} (node {node.id}, pid "
                f"{node.pid}, heartbeat {node.heartbeat_age:.1f}s ago, {node.running} running)"
            )
        elif found:
            oldest = min(n.heartbeat_age for n in found)
            line = (
                f"unhealthy: {len(found)} node(s){who} registered for {where}, but none wrote "
                f"a heartbeat in the last {max_age:g}s ({oldest:.1f}s ago): stalled"
            )
        else:
            line = f"unhealthy: no live node{who} serves {where}"
        if as_json:
            click.echo(
                _json(
                    {
                        "healthy": bool(fresh),
                        "db": str(queue.path),
                        "message": line,
                        "nodes": [n.to_dict() for n in fresh],
                    }
                )
            )
        else:
            click.echo(line, err=not fresh)
    sys.exit(EXIT_OK if fresh else EXIT_RUNTIME)


# -- db --------------------------------------------------------------------------------------
@cli.group()
def db() -> None:
    """Manage the queue database's schema."""


@db.command("upgrade")
@db_option
def db_upgrade(db: Path | str | None) -> None:
    """Create the queue's schema, or bring it to this version (PostgreSQL and SQLite).

    Idempotent and safe while nodes run: several at once serialise on a lock.
    """
    from .queue._format import visible

    with open_queue(db, create=True) as queue:
        store: Any = queue.store
        # Opening the queue created it or upgraded it already; upgrade() is idempotent.
        now = store.upgrade()[1]
        before = store.found_version
        if before == now:
            said = f"already at version {now}"
        elif before is None:
            said = f"created at version {now}"
        else:
            said = f"upgraded from version {before} to {now}"
        where = "(SQLite)" if store.kind == "sqlite" else f"schema {store.schema}"
        click.echo(f"queue {visible(str(queue.path))}: {where} {said}")


# -- demo ------------------------------------------------------------------------------------
@cli.command()
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True)
def demo(workers: int) -> None:
    """Run a server on a temporary queue, submit a small batch, cancel some of it live.

    Shows progress bars, a pattern cancel ('user_42_*'), a parent cancelled with its
    children, a timeout and a failure, then the outcome table with partial results.
    Leaves nothing behind.
    """
    from .queue._demo import run_demo

    sys.exit(run_demo(workers, watch=_watch_loop))


# -- web -------------------------------------------------------------------------------------
@cli.command()
@db_option
@click.option(
    "--bind",
    default="127.0.0.1:8765",
    show_default=True,
    metavar="HOST:PORT",
    help="Where to listen (port 0: any free port, printed).",
)
@click.option(
    "--token",
    envvar="CANCELPOOL_WEB_TOKEN",
    default=None,
    help="The token every request needs (default: $CANCELPOOL_WEB_TOKEN, else a random "
    "one, printed).",
)
def web(db: Path | None, bind: str, token: str | None) -> None:
    """Serve the dashboard and HTTP API of the queue (needs cancelpool[web]).

    Prints the address to open, with the token, then serves until Ctrl-C or SIGTERM.
    """
    try:
        from .web._cli import run_web
    except ImportError as exc:
        raise click.ClickException(
            f"cancelpool web needs the web extra: pip install 'cancelpool[web]' ({exc})"
        ) from None
    with open_queue(db, create=False) as queue:
        run_web(queue, bind, token)


def _json(value: Any) -> str:
    """``--json`` output: the exact values, with the characters that would drive a
    terminal (C1 controls, bidi overrides, line separators) written as JSON ``\\uXXXX``
    escapes, so ``--json`` read on a terminal is as safe as the tables."""
    from .queue._format import visible_json

    return visible_json(value)


def main() -> None:
    """Entry point of the ``cancelpool`` console script.

    Errors print as one sentence (with click's usage hint for usage errors) and exit
    with their documented code; their text, which may quote what a user or the database
    gave, passes through ``visible`` like every other line.
    """
    from .queue._format import visible_lines

    try:
        cli.main(prog_name="cancelpool", standalone_mode=False)
    except click.ClickException as exc:
        shown = io.StringIO()  # click's own wording (and usage hint), made visible
        exc.show(file=shown)
        sys.stderr.write(visible_lines(shown.getvalue()))
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:  # Ctrl-C (click turns KeyboardInterrupt into Abort)
        click.echo("Aborted!", err=True)
        sys.exit(EXIT_INTERRUPTED_BY_USER)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception:
        # A bug, or a value the store could not read (a row of invalid UTF-8 stops
        # ``serve`` here): the traceback quotes what the database gave, so it is shown
        # escaped too.
        import traceback

        sys.stderr.write(visible_lines(traceback.format_exc()))
        sys.exit(EXIT_RUNTIME)


if __name__ == "__main__":
    main()

"""cancelpool's PostgreSQL scale-out beside pgqueuer and procrastinate, in one run on
one private PostgreSQL 15 server: enqueue/s, end-to-end jobs/s (no-op task), the
latency of cancelling a running job, and the time until a SIGKILLed node's running job
runs elsewhere. Three nodes on this machine for every system.

    python benchmarks/bench_pg.py                    # ~2 min on 2 cores
    python benchmarks/bench_pg.py --quick            # a smoke run
    python benchmarks/bench_pg.py --workers 2 --json out.json

The server is started from the machine's PostgreSQL binaries exactly as the test suite
does (tests/queue/pgserver.py: a fresh data directory, 127.0.0.1, a free port,
``fsync=off``, as the ``postgres`` user when run as root) and removed at the end. Each
system gets a fresh database on it. pgqueuer and procrastinate rows need those packages
(``pip install pgqueuer procrastinate``); without them they read ``n/a``.

What each row measures, for every system alike unless said:

* enqueue/s: one client submits ``--jobs`` no-op jobs one at a time (one transaction
  each), no node running.
* jobs/s end to end: three nodes running, one client submits ``--jobs`` no-op jobs one
  at a time; from the first submit to the last job finished (a count query polled).
* cancel p50/p99: a job that waits forever is started on one of the nodes; the client
  cancels it; latency is from the cancel call returning in the client to the job's own
  code seeing its cancellation (``time.time()`` written by the job; one machine, one
  clock). cancelpool: ``Queue.cancel()``; pgqueuer: ``Queries.mark_job_as_cancelled``
  (its job sees ``Context.cancellation`` cancelled); procrastinate:
  ``JobManager.cancel_job_by_id_async(abort=True)`` (its async job sees
  ``asyncio.CancelledError``).
* recovery s: the node running a waiting job is SIGKILLed (its process group); time
  until the job starts again on another node. cancelpool's lease and pgqueuer's
  ``heartbeat_timeout`` are both 10 s; procrastinate does not requeue a dead worker's
  jobs by itself (its docs leave it to a user-written periodic task), so ``n/a``.

Nodes: cancelpool ``serve --workers W --concurrency 16W``; pgqueuer and procrastinate W
processes per node, each running 16 jobs at once (pgqueuer: its default batch of 10 and
no cap, on psycopg's async driver). Noisy machines: compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "queue"), str(ROOT / "tests")]  # the tests' server starter

from pgserver import PgServer, find_bin  # noqa: E402

NOOP = "cancelpool.demo_tasks:add"
WAIT = "cancelpool.demo_tasks:wait_for_cancel"
NODES = 3
CONCURRENCY = 16  # jobs at once per worker process, every system (cancelpool's default)
#: Seconds after its last heartbeat that a dead node's jobs are taken over: cancelpool's
#: LEASE_SECONDS, given to pgqueuer as its heartbeat_timeout so the rows compare.
RECOVERY_TIMEOUT = 10.0
BACKSTOP = 120.0  # against a hang, not an expectation
#: How often the client polls "all jobs done" (every system alike): adds at most this
#: to a throughput row's time (under 1% of ~1 s), and keeps the poll's own load low.
POLL = 0.005


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CANCELPOOL_DB", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_env(),
            start_new_session=True,  # a node is a process group: SIGKILL takes it whole
        )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    _WATCHED.clear()
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)


def _until(what: str, check: Callable[[], Any], step: float = 0.002) -> Any:
    deadline = time.monotonic() + BACKSTOP
    while not (value := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(step)
    return value


#: The peer nodes of the run in progress: a wait fails at once if one of them died.
_WATCHED: list[subprocess.Popen[bytes]] = []


async def _until_async(what: str, check: Callable[[], Awaitable[Any]], step: float = 0.002) -> Any:
    deadline = time.monotonic() + BACKSTOP
    while not (value := await check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        dead = [p.pid for p in _WATCHED if p.poll() is not None]
        if dead:
            raise RuntimeError(f"waiting for {what}: node process(es) {dead} exited (see logs)")
        await asyncio.sleep(step)
    return value


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile, linear between the closest ranks."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _latency(samples: list[float]) -> dict[str, float]:
    return {
        "cancel_ms_p50": statistics.median(samples),
        "cancel_ms_p99": pct(samples, 0.99),
        "cancel_ms_max": max(samples),
        "cancel_samples": float(len(samples)),
    }


# -- cancelpool -------------------------------------------------------------------------
def bench_cancelpool(server: PgServer, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import psycopg

    from cancelpool.queue import JobStatus, Queue

    out: dict[str, Any] = {}
    with Queue(server.new_db()) as queue:  # no node: enqueue alone
        t0 = time.perf_counter()
        for _ in range(args.jobs):
            queue.submit(NOOP, 1, 2)
        out["enqueue_per_s"] = args.jobs / (time.perf_counter() - t0)
    url = server.new_db()
    with Queue(url) as queue:
        nodes = [
            _spawn(
                [
                    sys.executable,
                    "-m",
                    "cancelpool.cli",
                    "serve",
                    "--db",
                    url,
                    "--workers",
                    str(args.workers),
                    "--concurrency",
                    str(CONCURRENCY * args.workers),
                    "--allow",
                    "cancelpool.demo_tasks:*",
                    "--node-name",
                    f"n{i}",
                    "-q",
                ],
                tmp / f"cancelpool-n{i}.log",
            )
            for i in range(NODES)
        ]
        try:
            _until("the nodes to register", lambda: len(queue.nodes()) == NODES, 0.05)
            t0 = time.perf_counter()
            for _ in range(args.jobs):
                queue.submit(NOOP, 1, 2)
            with psycopg.connect(url, autocommit=True) as side:
                _until("the jobs to finish", lambda: _cp_done(side), POLL)
            out["jobs_per_s"] = args.jobs / (time.perf_counter() - t0)
            lat: list[float] = []
            for _ in range(args.cancels):
                job = queue.submit(WAIT)
                _until("the job to start", lambda job=job: (r := queue.get(job)) and r.progress)
                queue.cancel(job)
                returned = time.time()
                done = queue.wait(job, timeout=BACKSTOP)
                assert done.status is JobStatus.CANCELLED, done
                lat.append((done.partial_result["cancel_seen_at"] - returned) * 1000)
            out.update(_latency(lat))
            # Recovery: the node running a waiting job is SIGKILLed (its process group).
            job = queue.submit(WAIT)
            rec = _until("the job to start", lambda: (r := queue.get(job)) and r.progress and r)
            owner = rec.owner
            pid = next(n.pid for n in queue.nodes() if n.id == owner)
            victim = next(p for p in nodes if p.pid == pid)
            os.killpg(victim.pid, signal.SIGKILL)
            killed = time.time()
            victim.wait(60)

            def restarted() -> Any:
                # A requeued job keeps its last progress: wait for the new run's report.
                r = queue.get(job)
                started = r and r.owner != owner and r.progress and r.progress["started_at"]
                return started if started and started > killed else None

            out["recovery_s"] = _until("the job to run again", restarted, 0.01) - killed
            queue.cancel(job)
        finally:
            _stop(nodes)
    return out


def _cp_done(conn: Any) -> bool:
    # What the peers' rows poll too: the unfinished jobs, a count the partial indexes
    # answer, not a scan of every finished job (Queue.statistics() groups all rows:
    # fine for a dashboard, a load on the system under test 200 times a second). Every
    # job was submitted before the first poll.
    row = conn.execute(
        "SELECT count(*) FROM cancelpool.jobs WHERE status = 'queued' OR status = 'running'"
    ).fetchone()
    return bool(row[0] == 0)


# -- pgqueuer ---------------------------------------------------------------------------
async def _pgq_driver(url: str) -> Any:
    import psycopg
    from pgqueuer import PsycopgDriver

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    return conn, PsycopgDriver(conn)


async def _pgq_node(url: str, tmp: Path) -> None:
    from datetime import timedelta

    from pgqueuer import Queries, QueueManager
    from pgqueuer.models import Context, Job

    conn, driver = await _pgq_driver(url)
    qm = QueueManager(Queries(driver))

    @qm.entrypoint("noop")
    async def noop(job: Job) -> None:
        return None

    @qm.entrypoint("hold", accepts_context=True)
    async def hold(job: Job, context: Context) -> None:
        tag = (job.payload or b"").decode()
        (tmp / f"start-{tag}-{os.getpid()}").write_text(repr(time.time()))
        with context.cancellation:
            await asyncio.sleep(3600)
        (tmp / f"seen-{tag}").write_text(repr(time.time()))

    (tmp / f"ready-{os.getpid()}").touch()
    await qm.run(heartbeat_timeout=timedelta(seconds=RECOVERY_TIMEOUT))
    await conn.close()


def bench_pgqueuer(server: PgServer, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    return asyncio.run(_bench_pgqueuer(server, args, tmp))


async def _bench_pgqueuer(server: PgServer, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from pgqueuer import Queries

    out: dict[str, Any] = {}
    for phase in ("enqueue", "run"):
        url = server.new_db()
        conn, driver = await _pgq_driver(url)
        queries = Queries(driver)
        await queries.install()
        if phase == "enqueue":
            t0 = time.perf_counter()
            for _ in range(args.jobs):
                await queries.enqueue("noop", None)
            out["enqueue_per_s"] = args.jobs / (time.perf_counter() - t0)
            await conn.close()
    nodes = _peer_nodes("pgqueuer", url, args, tmp)
    try:
        await _until_async("pgqueuer's nodes", lambda: _ready(tmp, len(nodes)), 0.01)
        await queries.enqueue("noop", None)
        await _until_async("pgqueuer's nodes to start", lambda: _pgq_empty(conn), 0.01)
        t0 = time.perf_counter()
        for _ in range(args.jobs):
            await queries.enqueue("noop", None)
        await _until_async("the jobs to finish", lambda: _pgq_empty(conn), POLL)
        out["jobs_per_s"] = args.jobs / (time.perf_counter() - t0)
        lat: list[float] = []
        for i in range(args.cancels):
            tag = f"c{i}"
            (job_id,) = await queries.enqueue("hold", tag.encode())
            await _until_async("the job to start", lambda tag=tag: _started(tmp, tag))
            await queries.mark_job_as_cancelled([job_id])
            returned = time.time()
            seen = await _until_async(
                "the job to see its cancel", lambda tag=tag: _read(tmp / f"seen-{tag}")
            )
            lat.append((seen - returned) * 1000)
        out.update(_latency(lat))
        await queries.enqueue("hold", b"r")
        first = await _until_async("the job to start", lambda: _started(tmp, "r"))
        victim = next(p for p in nodes if p.pid in _node_pids(first))
        _WATCHED.remove(victim)
        os.killpg(victim.pid, signal.SIGKILL)
        killed = time.time()
        victim.wait(60)
        again = await _until_async(
            "the job to run again", lambda: _started(tmp, "r", not_in=first), 0.01
        )
        out["recovery_s"] = min(again.values()) - killed
    finally:
        _stop(nodes)
        await conn.close()
    return out


async def _pgq_empty(conn: Any) -> bool:
    cur = await conn.execute("SELECT count(*) FROM pgqueuer")
    row = await cur.fetchone()
    return bool(row[0] == 0)


# -- procrastinate ----------------------------------------------------------------------
def _proc_app(url: str, tmp: Path) -> Any:
    import logging

    import procrastinate

    # It warns that this App lives in a __main__ module; it is one on purpose here.
    logging.getLogger("procrastinate").setLevel(logging.ERROR)

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop")
    async def noop() -> None:
        return None

    @app.task(name="hold")
    async def hold(tag: str) -> None:
        (tmp / f"start-{tag}-{os.getpid()}").write_text(repr(time.time()))
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            (tmp / f"seen-{tag}").write_text(repr(time.time()))
            raise

    return app


async def _proc_node(url: str, tmp: Path) -> None:
    app = _proc_app(url, tmp)
    async with app.open_async():
        (tmp / f"ready-{os.getpid()}").touch()
        await app.run_worker_async(concurrency=CONCURRENCY, wait=True)


def bench_procrastinate(server: PgServer, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    return asyncio.run(_bench_procrastinate(server, args, tmp))


async def _bench_procrastinate(
    server: PgServer, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    import psycopg

    out: dict[str, Any] = {}
    for phase in ("enqueue", "run"):
        url = server.new_db()
        app = _proc_app(url, tmp)
        await app.open_async()
        await app.schema_manager.apply_schema_async()
        if phase == "enqueue":
            t0 = time.perf_counter()
            for _ in range(args.jobs):
                await app.tasks["noop"].defer_async()
            out["enqueue_per_s"] = args.jobs / (time.perf_counter() - t0)
            await app.close_async()
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)

    async def empty() -> bool:
        cur = await conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        )
        row = await cur.fetchone()
        return bool(row is not None and row[0] == 0)

    nodes = _peer_nodes("procrastinate", url, args, tmp)
    try:
        await _until_async("procrastinate's nodes", lambda: _ready(tmp, len(nodes)), 0.01)
        await app.tasks["noop"].defer_async()
        await _until_async("procrastinate's nodes to start", empty, 0.01)
        t0 = time.perf_counter()
        for _ in range(args.jobs):
            await app.tasks["noop"].defer_async()
        await _until_async("the jobs to finish", empty, POLL)
        out["jobs_per_s"] = args.jobs / (time.perf_counter() - t0)
        lat: list[float] = []
        for i in range(args.cancels):
            tag = f"c{i}"
            job_id = await app.tasks["hold"].defer_async(tag=tag)
            await _until_async("the job to start", lambda tag=tag: _started(tmp, tag))
            await app.job_manager.cancel_job_by_id_async(job_id, abort=True)
            returned = time.time()
            seen = await _until_async(
                "the job to see its cancel", lambda tag=tag: _read(tmp / f"seen-{tag}")
            )
            lat.append((seen - returned) * 1000)
        out.update(_latency(lat))
        out["recovery_s"] = "n/a: a dead worker's jobs stay 'doing' until user code retries them"
    finally:
        _stop(nodes)
        await conn.close()
        await app.close_async()
    return out


# -- peers' shared helpers --------------------------------------------------------------
def _peer_nodes(
    kind: str, url: str, args: argparse.Namespace, tmp: Path
) -> list[subprocess.Popen[bytes]]:
    """``NODES`` x ``--workers`` processes, each its own process group (a node of one
    worker is one process; with more, each process is killed on its own)."""
    procs = [
        _spawn(
            [sys.executable, __file__, "--peer-node", kind, "--url", url, "--dir", str(tmp)],
            tmp / f"{kind}-{i}.log",
        )
        for i in range(NODES * args.workers)
    ]
    _WATCHED[:] = procs
    return procs


async def _started(tmp: Path, tag: str, not_in: dict[int, float] | None = None) -> dict[int, float]:
    found = {}
    for path in tmp.glob(f"start-{tag}-*"):
        pid = int(path.name.rsplit("-", 1)[1])
        if not_in is None or pid not in not_in:
            found[pid] = float(path.read_text() or "nan")
    return found


async def _ready(tmp: Path, n: int) -> bool:
    """Every peer node wrote its ready file (it is about to listen and fetch)."""
    return len(list(tmp.glob("ready-*"))) >= n


def _node_pids(started: dict[int, float]) -> set[int]:
    return set(started)


async def _read(path: Path) -> float | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return float(text) if text else None


# -- table --------------------------------------------------------------------------------
ROWS = [
    ("enqueue_per_s", "enqueue/s", "higher", None),
    ("jobs_per_s", "jobs/s end to end", "higher", "jobs/s >= pgqueuer and >= 3x procrastinate"),
    ("cancel_ms_p50", "cancel p50 ms", "lower", "p50 <= 5 ms"),
    ("cancel_ms_p99", "cancel p99 ms", "lower", "p99 <= 25 ms"),
    ("cancel_ms_max", "cancel max ms", "lower", None),
    ("recovery_s", "recovery s", "lower", "<= 20 s"),
]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return "n/a" if value is None else str(value)[:12]


def table(results: dict[str, dict[str, Any]]) -> tuple[str, dict[str, str]]:
    names = sorted(results, key=lambda n: n != "cancelpool")  # ours first, then as run
    ours = results["cancelpool"]
    lines = [
        f"{'measure':20}"
        + "".join(f"{n:>15}" for n in names)
        + f"{'ratio pgq':>11}{'ratio proc':>11}"
    ]
    verdicts: dict[str, str] = {}
    for key, label, _, _ in ROWS:
        cells = "".join(f"{_fmt(results[n].get(key)):>15}" for n in names)
        ratios = ""
        for peer in ("pgqueuer", "procrastinate"):
            a, b = ours.get(key), results.get(peer, {}).get(key)
            ok = isinstance(a, float) and isinstance(b, float) and b != 0
            ratios += f"{(a / b if ok else float('nan')):>10.2f}x" if ok else f"{'-':>11}"  # type: ignore[operator]
        lines.append(f"{label:20}{cells}{ratios}")
    pgq = results.get("pgqueuer", {}).get("jobs_per_s")
    proc = results.get("procrastinate", {}).get("jobs_per_s")
    jobs = ours.get("jobs_per_s", 0.0)
    verdicts["jobs/s >= pgqueuer"] = _verdict(isinstance(pgq, float) and jobs >= pgq, pgq)
    verdicts["jobs/s >= 3x procrastinate"] = _verdict(
        isinstance(proc, float) and jobs >= 3 * proc, proc
    )
    verdicts["cancel p50 <= 5 ms"] = _verdict(ours.get("cancel_ms_p50", 1e9) <= 5, 1)
    verdicts["cancel p99 <= 25 ms"] = _verdict(ours.get("cancel_ms_p99", 1e9) <= 25, 1)
    verdicts["recovery <= 20 s"] = _verdict(ours.get("recovery_s", 1e9) <= 20, 1)
    lines.append("")
    lines += [f"target {name:28} {verdict}" for name, verdict in verdicts.items()]
    return "\n".join(lines), verdicts


def _verdict(ok: bool, reference: Any) -> str:
    if reference is None:
        return "? (peer not measured)"
    return "ok" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (few jobs)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per node")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per throughput row")
    parser.add_argument("--cancels", type=int, default=None, help="cancels per latency row")
    parser.add_argument("--only", default="cancelpool,pgqueuer,procrastinate")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--peer-node", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_node:  # a node of a peer, started by this script
        node = {"pgqueuer": _pgq_node, "procrastinate": _proc_node}[args.peer_node]
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        asyncio.run(node(args.url, args.dir))
        return
    args.jobs = args.jobs or (200 if args.quick else 2000)
    args.cancels = args.cancels or (10 if args.quick else 100)
    bindir = find_bin()
    if bindir is None:
        sys.exit("no PostgreSQL binaries (apt-get install postgresql-15, or CANCELPOOL_PG_BIN)")
    server = PgServer(bindir)
    results: dict[str, dict[str, Any]] = {}
    runners = {
        "cancelpool": bench_cancelpool,
        "pgqueuer": bench_pgqueuer,
        "procrastinate": bench_procrastinate,
    }
    try:
        server.start()
        for name, runner in runners.items():
            if name not in args.only.split(","):
                continue
            if name != "cancelpool":
                try:
                    __import__(name)
                except ImportError:
                    results[name] = {"note": f"not installed (pip install {name}): n/a"}
                    continue
            with tempfile.TemporaryDirectory(prefix=f"bench-pg-{name}-") as tmp:
                print(f"running {name} ...", file=sys.stderr, flush=True)
                results[name] = runner(server, args, Path(tmp))
    finally:
        server.remove()
    results.setdefault("cancelpool", {})
    text, verdicts = table(results)
    print(
        f"{NODES} nodes x {args.workers} worker(s), {args.jobs} jobs, {args.cancels} cancels, "
        f"PostgreSQL at {bindir}, {os.cpu_count()} CPUs"
    )
    print(text)
    if args.json:
        meta = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "nodes": NODES,
            "workers_per_node": args.workers,
            "jobs": args.jobs,
            "cancels": args.cancels,
            "cpus": os.cpu_count(),
            "machine": os.uname().nodename,
            "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        }
        args.json.write_text(
            json.dumps({"meta": meta, "results": results, "targets": verdicts}, indent=2)
        )


if __name__ == "__main__":
    main()

"""Prometheus metrics of a ``CancelPool`` or of ``cancelpool serve``, built on the
pool's lifecycle events (``CancelPool.subscribe``). Needs the ``metrics`` extra
(``pip install 'cancelpool[metrics]'``); ``import cancelpool`` never imports it.

::

    pool / server  --events (supervisor thread)-->  PoolMetrics  --updates-->  registry
                                                                              |
    Prometheus  --GET /metrics-->  your exporter, or serve_metrics()'s thread -+

The metrics (every name prefixed ``cancelpool_``):

- ``jobs_finished_total{outcome}``: jobs ended, by outcome (``succeeded``, ``failed``,
  ``cancelled``, ``forced``: a cancellation that ended by killing the job's worker).
- ``jobs_running``, ``jobs_queued``: jobs running now, and waiting for a worker (for
  ``serve``: the queue's ``queued`` rows in the database, read every ~2 s).
- ``job_duration_seconds``: histogram of a job's run time, start to end.
- ``cancel_latency_seconds``: histogram, from the cancel request to the job's end.
- ``workers``: live worker processes (spares included);
  ``worker_deaths_total{expected}``: their exits (``expected``: asked to stop).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
    raise ImportError(
        f"cancelpool.metrics needs prometheus_client: pip install 'cancelpool[metrics]' ({exc})"
    ) from exc

from ._events import (
    Event,
    JobFinished,
    JobRetried,
    JobStarted,
    JobSubmitted,
    QueueDepth,
    WorkerDied,
    WorkerStarted,
)

if TYPE_CHECKING:
    from ._pool._pool import CancelPool

__all__ = ("MetricsServer", "PoolMetrics", "register", "serve_metrics")

#: Histogram buckets of job durations, in seconds: sub-millisecond jobs to hours-long.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600)
#: Buckets of cancel latency: a cancellation is heard in well under a millisecond when
#: the job awaits; seconds mean a job that ignored it until its forced stop.
CANCEL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 10, 30)


class PoolMetrics:
    """The cancelpool metrics in one registry, fed by lifecycle events: call it with
    each event (it is an event subscriber). Quick: a few dictionary and counter
    updates per event, as the supervisor thread calls it."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = prometheus_client.REGISTRY if registry is None else registry
        self._unsubscribe: Any = None
        reg = self.registry
        try:
            self.finished = Counter(
                "cancelpool_jobs_finished",
                "Jobs ended, by outcome (forced: ended by killing its worker).",
                ["outcome"],
                registry=reg,
            )
            self.running = Gauge("cancelpool_jobs_running", "Jobs running now.", registry=reg)
            self.queued = Gauge(
                "cancelpool_jobs_queued", "Jobs waiting for a worker.", registry=reg
            )
            self.duration = Histogram(
                "cancelpool_job_duration_seconds",
                "Job run time, from its start to its end.",
                buckets=DURATION_BUCKETS,
                registry=reg,
            )
            self.cancel_latency = Histogram(
                "cancelpool_cancel_latency_seconds",
                "From a job's cancel request to its end.",
                buckets=CANCEL_BUCKETS,
                registry=reg,
            )
            self.workers = Gauge(
                "cancelpool_workers", "Live worker processes (spares included).", registry=reg
            )
            self.worker_deaths = Counter(
                "cancelpool_worker_deaths",
                "Worker process exits (expected: it was asked to stop).",
                ["expected"],
                registry=reg,
            )
        except ValueError as exc:  # "Duplicated timeseries in CollectorRegistry"
            self.close()
            raise ValueError(
                "cancelpool metrics are already registered in this registry: give each "
                f"pool a registry of its own (prometheus_client.CollectorRegistry()) ({exc})"
            ) from None
        for outcome in ("succeeded", "failed", "cancelled", "forced"):
            self.finished.labels(outcome)
        for expected in ("true", "false"):
            self.worker_deaths.labels(expected)
        self._lock = threading.Lock()
        self._state: dict[int, str] = {}  # job id -> "queued" or "running"
        self._depth_from_db = False

    def __call__(self, event: Event) -> None:
        kind = type(event)
        with self._lock:
            if kind is JobSubmitted:
                assert isinstance(event, JobSubmitted)
                self._move(event.job_id, "queued")
            elif kind is JobStarted or kind is JobRetried:
                assert isinstance(event, JobStarted | JobRetried)
                self._move(event.job_id, "running" if kind is JobStarted else "queued")
            elif kind is JobFinished:
                assert isinstance(event, JobFinished)
                self._move(event.job_id, None)
                self.finished.labels(event.outcome).inc()
                if event.duration is not None:
                    self.duration.observe(event.duration)
                if event.cancel_latency is not None:
                    self.cancel_latency.observe(event.cancel_latency)
            elif kind is WorkerStarted:
                self.workers.inc()
            elif kind is WorkerDied:
                assert isinstance(event, WorkerDied)
                self.workers.dec()
                self.worker_deaths.labels("true" if event.expected else "false").inc()
            elif kind is QueueDepth:
                assert isinstance(event, QueueDepth)
                self._depth_from_db = True
                self.queued.set(event.counts.get("queued", 0))

    def _move(self, job_id: int, to: str | None) -> None:
        """A job goes to state ``to`` (None: it ended): the gauges follow (lock held)."""
        was = self._state.pop(job_id, None) if to is None else self._state.get(job_id)
        if to is not None:
            self._state[job_id] = to
        if was == to:
            return
        for state, change in ((was, -1), (to, 1)):
            if state == "running":
                self.running.inc(change)
            elif state == "queued" and not self._depth_from_db:
                self.queued.inc(change)

    def close(self) -> None:
        """Stop listening and take the metrics out of the registry."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for name in (
            "finished",
            "running",
            "queued",
            "duration",
            "cancel_latency",
            "workers",
            "worker_deaths",
        ):
            collector = self.__dict__.pop(name, None)
            if collector is not None:
                self.registry.unregister(collector)


def register(pool: CancelPool, registry: CollectorRegistry | None = None) -> PoolMetrics:
    """Keep the cancelpool metrics of ``pool`` in ``registry`` (default: the
    ``prometheus_client`` global registry), from now on: subscribe before the pool
    starts to count its first workers. Returns the :class:`PoolMetrics`; its
    ``close()`` stops it and unregisters them.

    Raises:
        ValueError: ``registry`` already holds cancelpool metrics (one pool each).
    """
    metrics = PoolMetrics(registry)
    metrics._unsubscribe = pool.subscribe(metrics)
    return metrics


class MetricsServer:
    """``/metrics`` of a registry over HTTP, in a daemon thread (prometheus_client's)."""

    def __init__(self, httpd: Any, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        host, port = httpd.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        #: Where it listens, e.g. ``http://127.0.0.1:9464/metrics``.
        self.url = f"http://{shown}:{port}/metrics"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def serve_metrics(host: str, port: int, registry: CollectorRegistry) -> MetricsServer:
    """Serve ``registry`` on ``host:port`` (port 0: any free one).

    Raises:
        OSError: the address cannot be bound (in use, not this machine's, ...).
    """
    httpd, thread = prometheus_client.start_http_server(port, host, registry=registry)
    return MetricsServer(httpd, thread)

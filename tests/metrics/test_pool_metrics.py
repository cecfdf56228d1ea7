"""``cancelpool.metrics.register``: a real pool's metrics in a registry of the test's
own, read as Prometheus would (over HTTP, from ``serve_metrics``)."""

from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from _handshake import BACKSTOP, Gate, start_running, wait_until
from cancelpool import CancelPool, JobCancelled
from pool import _jobs

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry  # noqa: E402

from cancelpool import metrics  # noqa: E402


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=BACKSTOP) as response:
        assert response.status == 200
        return str(response.read().decode())


def test_register_counts_a_real_pools_jobs_and_workers(
    make_pool: Callable[..., CancelPool],
) -> None:
    registry = CollectorRegistry()
    pool = make_pool(workers=2, cancel_grace=0.2)
    kept = metrics.register(pool, registry)
    endpoint = metrics.serve_metrics("127.0.0.1", 0, registry)
    try:
        assert pool.submit(_jobs.add, 1, 2).result() == 3
        with pytest.raises(_jobs.JobError):
            pool.submit(_jobs.fail, "on purpose").result()
        with Gate() as gate:
            held = start_running(pool, gate, "held")
            wait_until(lambda: sample(registry, "cancelpool_jobs_running") == 1, "running")
            held.cancel("enough")
            with pytest.raises(JobCancelled):
                held.result()
        wait_until(
            lambda: sample(registry, "cancelpool_jobs_finished_total", outcome="cancelled"),
            "the cancelled job counted",
        )
        assert sample(registry, "cancelpool_jobs_finished_total", outcome="succeeded") == 1
        assert sample(registry, "cancelpool_jobs_finished_total", outcome="failed") == 1
        assert sample(registry, "cancelpool_jobs_running") == 0
        assert sample(registry, "cancelpool_jobs_queued") == 0
        assert sample(registry, "cancelpool_job_duration_seconds_count") == 3
        assert sample(registry, "cancelpool_cancel_latency_seconds_count") == 1
        wait_until(lambda: sample(registry, "cancelpool_workers") == 2, "two workers")
        # A worker killed from outside: a death, and a replacement.
        pid = next(w.pid for w in pool.statistics().workers if w.pid)
        os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: sample(registry, "cancelpool_worker_deaths_total", expected="false"),
            "the worker's death counted",
        )
        wait_until(lambda: sample(registry, "cancelpool_workers") == 2, "the replacement")
        text = scrape(endpoint.url)
        assert 'cancelpool_jobs_finished_total{outcome="succeeded"} 1.0' in text
        assert 'cancelpool_worker_deaths_total{expected="false"} 1.0' in text
        assert "cancelpool_job_duration_seconds_bucket" in text
        assert "cancelpool_cancel_latency_seconds_bucket" in text
    finally:
        endpoint.stop()
        kept.close()
    assert sample(registry, "cancelpool_workers") == 0  # unregistered
    assert registry.get_sample_value("cancelpool_workers") is None


def test_queued_jobs_are_counted_until_a_worker_takes_them(
    make_pool: Callable[..., CancelPool],
) -> None:
    registry = CollectorRegistry()
    pool = make_pool(workers=1, concurrency=1)
    kept = metrics.register(pool, registry)
    try:
        with Gate() as gate:
            first = start_running(pool, gate, "first")
            waiting = [pool.submit(_jobs.add, i, i) for i in range(3)]
            wait_until(lambda: sample(registry, "cancelpool_jobs_queued") == 3, "3 queued")
            waiting[0].cancel()
            wait_until(lambda: sample(registry, "cancelpool_jobs_queued") == 2, "2 queued")
            gate.release()
            assert first.result() == "released"
            assert [h.result() for h in waiting[1:]] == [2, 4]
        wait_until(
            lambda: sample(registry, "cancelpool_jobs_finished_total", outcome="succeeded") == 3,
            "every job counted",
        )
        assert sample(registry, "cancelpool_jobs_queued") == 0
        assert sample(registry, "cancelpool_jobs_running") == 0
    finally:
        kept.close()


def test_a_registry_takes_one_pools_metrics(make_pool: Callable[..., CancelPool]) -> None:
    registry = CollectorRegistry()
    pool = make_pool(workers=1)
    kept = metrics.register(pool, registry)
    try:
        with pytest.raises(ValueError, match="already registered in this registry"):
            metrics.register(make_pool(workers=1), registry)
    finally:
        kept.close()


def test_serve_metrics_refuses_an_address_in_use() -> None:
    registry: Any = CollectorRegistry()
    first = metrics.serve_metrics("127.0.0.1", 0, registry)
    try:
        port = int(first.url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(OSError, match="in use"):
            metrics.serve_metrics("127.0.0.1", port, registry)
    finally:
        first.stop()

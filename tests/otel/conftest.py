"""Fixtures of the OpenTelemetry tests: the test process's own provider (its spans kept
in memory), a span file for the workers, and the pool suite's pools."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from _pools import _no_leftovers, make_pool, pool_options, pool_starts

__all__ = (
    "_no_leftovers",
    "caller_spans",
    "make_pool",
    "pool_options",
    "pool_starts",
    "span_file",
)

# A process has one global provider, set once: every test of this process shares it.
_EXPORTER = InMemorySpanExporter()


def _install_once() -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)


@pytest.fixture(autouse=True)
def caller_spans() -> Iterator[InMemorySpanExporter]:
    """The spans this (the test's) process finishes during the test (autouse: every
    test submits under a recording span)."""
    _install_once()
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture
def span_file(tmp_path: Path) -> Path:
    """Where the workers write their finished spans (see ``_spans.install``)."""
    return tmp_path / "spans.jsonl"


@pytest.fixture
def traced_options(span_file: Path) -> dict[str, Any]:
    """Pool options whose workers export to ``span_file``."""
    from otel import _spans

    return {"workers": 2, "initializer": _spans.install, "initargs": (str(span_file),)}

"""Shared pieces of the benchmark harness: rows, statistics, the table, the command line.

Every number the harness reports is a :class:`Row`. A row may name a *reference* row
(another row of the same run, by ``(measure, subject)``); the table then shows the ratio
``value / reference`` — that ratio, not the absolute figure, is what the targets in
``/work/shared/BENCHMARKS.md`` are about, because the VMs we run on differ by up to 40%
from one run to the next.

cancelpool's own rows are produced by ``benchmarks/_ours.py`` (written by the pool
engineer) through :func:`ours_row` / :func:`ours_stat_rows`, which fill in the unit,
reference and target registered for each measure in :data:`OURS`.

Clock: everything is timed with :func:`time.perf_counter_ns`. On Linux it reads the
system-wide ``CLOCK_MONOTONIC`` (as does ``time.monotonic_ns``), so a timestamp taken in
one process can be subtracted from one taken in another: that is how one-way times are
measured. :func:`require_shared_clock` checks this at start-up.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

now_ns = time.perf_counter_ns

Key = tuple[str, str]
"""A row's identity: ``(measure, subject)``."""

# --------------------------------------------------------------------------- sections

SECTIONS = (
    "floors",  # physical floors: pipe / add_reader / CancelScope wake-ups
    "throughput",  # trivial jobs per second, submit all then collect
    "latency",  # submit -> result of one trivial job
    "stop",  # stopping a running job
    "queued",  # cancelling queued jobs: do they run anyway?
    "timeout",  # timeout lateness
    "cancel_all",  # cancel_all(name_pattern) over 10,000 live jobs (cancelpool only)
    "progress",  # progress events per second (cancelpool only)
    "scaling",  # throughput with each worker count of --workers (cancelpool, mp.Pool)
    "cancel_all_growth",  # cancel_all cost per job at 1k, 10k, 100k live jobs
    "memory",  # caller memory per queued job, 100k queued (cancelpool, PPE)
)
FAMILIES = ("peers", "cancelpool")

# ------------------------------------------------------------- names of reference rows

# Subjects, spelled once so that references cannot drift from the rows they name.
FLOOR_PIPE = "floor: pipe -> blocked read"
FLOOR_ECHO = "floor: pipe round trip, blocked reads"
FLOOR_READER_ASYNCIO = "floor: pipe -> add_reader (asyncio)"
FLOOR_READER_UVLOOP = "floor: pipe -> add_reader (uvloop)"
FLOOR_CANCEL_ASYNCIO = "floor: pipe -> scope.cancel -> sleep wakes (asyncio)"
FLOOR_CANCEL_UVLOOP = "floor: pipe -> scope.cancel -> sleep wakes (uvloop)"
FLOOR_TIMEOUT = "floor: call_later(0.2) -> pipe -> poll thread -> waiter"

PPE = "ProcessPoolExecutor submit"
MP_IMAP = "mp.Pool imap(chunksize=1)"
MP_APPLY = "mp.Pool apply_async"
LOKY = "loky submit"
PEBBLE = "pebble schedule"
AIOMP_MAP = "aiomultiprocess Pool.map"
AIOMP_APPLY = "aiomultiprocess Pool.apply"
ANYIO = "anyio.to_process run_sync"
PEBBLE_TIMEOUT = "pebble schedule(timeout=0.2)"
OURS_SUBJECT = "cancelpool"

# Measures, likewise.
THROUGHPUT = "throughput"
ONE_WAY = "one-way"
LATENCY = "latency"
STOP_RESOLVED = "stop running: handle resolved"
STOP_DIED = "stop running: job stopped (worker dead)"
STOP_NEXT = "stop running: next job starts"
QUEUED_RAN = "queued cancel: cancelled jobs that ran"
TIMEOUT_LATE = "timeout lateness"
CANCEL_SEEN = "cancel -> job sees it"
CANCEL_RESOLVED = "cancel -> handle resolved"
CANCEL_NEXT = "cancel -> next job starts"
CANCEL_ALL = "cancel_all 10k live jobs: all resolved"
PROGRESS = "progress events"

# ------------------------------------------------------------------------------ units

_TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def convert(value: float, unit: str, to: str) -> float:
    """Convert *value* from *unit* to *to*; only time units convert into each other."""
    if unit == to:
        return value
    if unit in _TIME_UNITS and to in _TIME_UNITS:
        return value * _TIME_UNITS[unit] / _TIME_UNITS[to]
    raise ValueError(f"cannot compare {unit!r} with {to!r}")


# ------------------------------------------------------------------------- statistics


def percentile(samples: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0-100) with linear interpolation between order statistics."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


_STATS = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50)


def p90(samples: Sequence[float]) -> float:
    return percentile(samples, 90)


def p99(samples: Sequence[float]) -> float:
    return percentile(samples, 99)


# ----------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Target:
    """A goal for a row: ``op bound`` on the ratio (``unit=None``) or on the value."""

    op: Literal["<=", ">="]
    bound: float
    unit: str | None = None

    def met(self, row: Row, ratio: float | None) -> bool | None:
        """True/False, or None when it cannot be judged (reference not measured)."""
        got = ratio if self.unit is None else convert(row.value, row.unit, self.unit)
        if got is None:
            return None
        return got <= self.bound if self.op == "<=" else got >= self.bound

    def __str__(self) -> str:
        suffix = "x" if self.unit is None else f" {self.unit}"
        return f"{self.op} {self.bound:g}{suffix}"


@dataclass(frozen=True)
class Row:
    """One measured number.

    Attributes:
        measure: what was measured, statistic included (``"latency p50"``).
        subject: who was measured (``"pebble schedule"``, ``"cancelpool"``, a floor).
        value: the number, in *unit*.
        unit: ``"us"``/``"ms"``/``"s"`` (inter-convertible), ``"jobs/s"``, ``"jobs"``, ...
        ref: ``(measure, subject)`` of the row this one is compared with, or None.
        target: the goal this row must meet, or None.
        note: free text shown in the last column (sample count, caveats).
    """

    measure: str
    subject: str
    value: float
    unit: str
    ref: Key | None = None
    target: Target | None = None
    note: str = ""

    @property
    def key(self) -> Key:
        return (self.measure, self.subject)


def stat_rows(
    measure: str,
    subject: str,
    samples_ns: Sequence[int],
    stats: Iterable[str] = ("p50", "p99"),
    *,
    unit: str = "us",
    ref_subject: str | None = None,
    ref_measure: str | None = None,
    note: str = "",
) -> list[Row]:
    """Rows ``"<measure> <stat>"`` from nanosecond samples.

    With *ref_subject*, each row references the same statistic of
    ``(ref_measure or measure, ref_subject)``.
    """
    rows = []
    base_note = f"n={len(samples_ns)}" + (f"; {note}" if note else "")
    for stat in stats:
        value = convert(percentile(samples_ns, _STATS[stat]), "ns", unit)
        ref = None
        if ref_subject is not None:
            ref = (f"{ref_measure or measure} {stat}", ref_subject)
        rows.append(Row(f"{measure} {stat}", subject, value, unit, ref=ref, note=base_note))
    return rows


# -------------------------------------------------- what _ours.py reports, and against what


@dataclass(frozen=True)
class Spec:
    unit: str
    ref: Key | None
    target: Target | None
    section: str


OURS: dict[str, Spec] = {
    f"{THROUGHPUT}": Spec("jobs/s", (THROUGHPUT, MP_IMAP), Target(">=", 2.0), "throughput"),
    f"{LATENCY} p50": Spec("us", (f"{LATENCY} p50", ANYIO), Target("<=", 0.66), "latency"),
    f"{LATENCY} p90": Spec("us", (f"{LATENCY} p90", ANYIO), None, "latency"),
    # The job awaits I/O (anyio.sleep) in a worker; the floor is the same wake-up path
    # without any pool: pipe byte -> add_reader callback in another process.
    f"{CANCEL_SEEN} p50": Spec(
        "us", (f"{ONE_WAY} p50", FLOOR_READER_ASYNCIO), Target("<=", 2.0), "stop"
    ),
    f"{CANCEL_SEEN} p99": Spec(
        "us", (f"{ONE_WAY} p99", FLOOR_READER_ASYNCIO), Target("<=", 1.0, "ms"), "stop"
    ),
    f"{CANCEL_RESOLVED} p50": Spec(
        "us", (f"{STOP_RESOLVED} p50", ANYIO), Target("<=", 300.0, "us"), "stop"
    ),
    f"{CANCEL_RESOLVED} p99": Spec("us", (f"{STOP_RESOLVED} p99", ANYIO), None, "stop"),
    f"{CANCEL_NEXT} p50": Spec("us", (f"{STOP_NEXT} p50", PEBBLE), None, "stop"),
    QUEUED_RAN: Spec("jobs", (QUEUED_RAN, PEBBLE), Target("<=", 0.0, "jobs"), "queued"),
    # Against the floor of the same path without a pool (timer -> pipe -> thread ->
    # waiter, every party idle); pebble's lateness (~100 ms) is in the table too.
    f"{TIMEOUT_LATE} p50": Spec("us", (f"{TIMEOUT_LATE} p50", FLOOR_TIMEOUT), None, "timeout"),
    f"{TIMEOUT_LATE} p99": Spec(
        "us", (f"{TIMEOUT_LATE} p99", FLOOR_TIMEOUT), Target("<=", 2.0, "ms"), "timeout"
    ),
    CANCEL_ALL: Spec("ms", None, Target("<=", 200.0, "ms"), "cancel_all"),
    PROGRESS: Spec("events/s", None, Target(">=", 200_000.0, "events/s"), "progress"),
}
"""Every measure ``_ours.py`` may report: unit, default reference, target, section."""


def ours_row(
    measure: str, value: float, *, note: str = "", ref: Key | None = None, variant: str = ""
) -> Row:
    """A cancelpool row for *measure* (a key of :data:`OURS`); *value* in the spec's unit.

    *ref* overrides the default reference, e.g. ``(f"{ONE_WAY} p50", FLOOR_READER_UVLOOP)``
    when the worker ran on uvloop; *variant* then tells the rows apart: the subject
    becomes ``"cancelpool (uvloop)"``.
    """
    try:
        spec = OURS[measure]
    except KeyError:
        raise KeyError(
            f"unknown cancelpool measure {measure!r}; pick one of {sorted(OURS)}"
        ) from None
    subject = f"{OURS_SUBJECT} ({variant})" if variant else OURS_SUBJECT
    return Row(
        measure, subject, float(value), spec.unit, ref=ref or spec.ref,
        target=spec.target, note=note,
    )  # fmt: skip


def ours_stat_rows(
    measure: str,
    samples_ns: Sequence[int],
    stats: Iterable[str] = ("p50", "p99"),
    *,
    note: str = "",
    ref_subject: str | None = None,
    variant: str = "",
) -> list[Row]:
    """cancelpool rows ``"<measure> <stat>"`` from nanosecond samples (e.g. CANCEL_SEEN).

    Statistics registered in :data:`OURS` get its unit, reference and target (with
    *ref_subject*, the reference keeps its measure but names another subject); others get
    a plain row in microseconds.
    """
    full_note = f"n={len(samples_ns)}" + (f"; {note}" if note else "")
    subject = f"{OURS_SUBJECT} ({variant})" if variant else OURS_SUBJECT
    out = []
    for stat in stats:
        name = f"{measure} {stat}"
        spec = OURS.get(name)
        unit = spec.unit if spec else "us"
        value = convert(percentile(samples_ns, _STATS[stat]), "ns", unit)
        if spec is None:
            out.append(Row(name, subject, value, unit, note=full_note))
            continue
        ref = spec.ref
        if ref is not None and ref_subject is not None:
            ref = (ref[0], ref_subject)
        out.append(ours_row(name, value, note=full_note, ref=ref, variant=variant))
    return out


# ---------------------------------------------------------------------- command line


@dataclass(frozen=True)
class BenchArgs:
    """Parsed command line; passed to every ``*_rows(args)`` function, ``_ours.rows`` too."""

    quick: bool = False
    json: Path | None = None
    only: frozenset[str] = field(default_factory=frozenset)
    workers: tuple[int, ...] = (1, 2, 4, 8)

    def count(self, full: int, quick: int) -> int:
        """*full* normally, *quick* under ``--quick``."""
        return quick if self.quick else full

    def wants(self, section: str) -> bool:
        """Whether *section* (one of SECTIONS) should run under ``--only``."""
        assert section in SECTIONS, section
        chosen = self.only & set(SECTIONS)
        return not chosen or section in chosen

    def wants_family(self, family: str) -> bool:
        """Whether ``peers`` / ``cancelpool`` rows should run under ``--only``."""
        assert family in FAMILIES, family
        chosen = self.only & set(FAMILIES)
        return not chosen or family in chosen


def parse_args(argv: Sequence[str] | None = None, description: str = "") -> BenchArgs:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="small counts: a CI smoke run (< 60 s in all)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write all rows here")
    parser.add_argument(
        "--only",
        default="",
        metavar="NAME,...",
        help=f"sections {', '.join(SECTIONS)} and/or families {', '.join(FAMILIES)}",
    )
    parser.add_argument(
        "--workers",
        default="1,2,4,8",
        metavar="N,...",
        help="worker counts of the scaling section (the other sections use 2)",
    )
    ns = parser.parse_args(argv)
    only = frozenset(name.strip() for name in ns.only.split(",") if name.strip())
    unknown = only - set(SECTIONS) - set(FAMILIES)
    if unknown:
        parser.error(f"--only: unknown name(s) {', '.join(sorted(unknown))}")
    try:
        workers = tuple(int(part) for part in ns.workers.split(",") if part.strip())
    except ValueError:
        workers = ()
    if not workers or min(workers) < 1:
        parser.error(f"--workers: a comma-separated list of counts >= 1, not {ns.workers!r}")
    return BenchArgs(quick=ns.quick, json=ns.json, only=only, workers=workers)


def require_shared_clock() -> None:
    """Fail unless perf_counter_ns is one clock for all processes (CLOCK_MONOTONIC)."""
    impl = time.get_clock_info("perf_counter").implementation
    if impl != "clock_gettime(CLOCK_MONOTONIC)":
        raise RuntimeError(f"one-way times need a system-wide clock; perf_counter here is {impl}")


# ---------------------------------------------------------------------------- table


def _fmt_value(value: float) -> str:
    if value == 0 or (float(value).is_integer() and abs(value) < 1000):
        return f"{value:.0f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


class Table:
    """All rows of one run, with each row's ratio to its reference row."""

    def __init__(self, rows: Iterable[Row]) -> None:
        self.rows = list(rows)
        self._by_key = {row.key: row for row in self.rows}

    def ratio(self, row: Row) -> float | None:
        if row.ref is None or row.ref not in self._by_key:
            return None
        ref = self._by_key[row.ref]
        try:
            value = convert(row.value, row.unit, ref.unit)
        except ValueError:
            return None
        return value / ref.value if ref.value else None

    def _ordered(self) -> list[list[Row]]:
        # One block per measure, statistics of one subject kept together, in run order.
        groups: dict[str, list[Row]] = {}
        for row in self.rows:
            base, _, stat = row.measure.rpartition(" ")
            family = base if stat in _STATS else row.measure
            groups.setdefault(family, []).append(row)
        return list(groups.values())

    def render(self) -> str:
        header = ("measure", "subject", "value", "unit", "ratio vs reference", "target", "note")
        lines: list[tuple[str, ...] | None] = []
        for group in self._ordered():
            for row in group:
                ratio = self.ratio(row)
                ratio_txt = ""
                if row.ref is not None:
                    ref_measure, ref_subject = row.ref
                    where = ref_subject
                    if ref_measure != row.measure:
                        where = f"{ref_subject} [{ref_measure}]"
                    ratio_txt = f"{ratio:.2f}x {where}" if ratio is not None else f"- {where}"
                target_txt = ""
                if row.target is not None:
                    met = row.target.met(row, ratio)
                    verdict = {True: "ok", False: "MISS", None: "?"}[met]
                    target_txt = f"{row.target} {verdict}"
                lines.append(
                    (row.measure, row.subject, _fmt_value(row.value), row.unit,
                     ratio_txt, target_txt, row.note)
                )  # fmt: skip
            lines.append(None)
        widths = [max(len(header[i]), *(len(line[i]) for line in lines if line)) for i in range(6)]
        right = {2}

        def fmt(cells: tuple[str, ...]) -> str:
            parts = [
                cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                for i, cell in enumerate(cells[:6])
            ]
            return (" | ".join(parts) + " | " + cells[6]).rstrip()

        out = [fmt(header), "-+-".join("-" * w for w in widths) + "-+-" + "-" * 4]
        out += [fmt(line) if line else "" for line in lines]
        return "\n".join(out).rstrip() + "\n"

    def to_json(self, meta: dict[str, Any]) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            ratio = self.ratio(row)
            item = asdict(row)
            item["ref"] = list(row.ref) if row.ref else None
            item["target"] = str(row.target) if row.target else None
            item["ratio"] = ratio
            item["target_met"] = row.target.met(row, ratio) if row.target else None
            rows.append(item)
        return {"meta": meta, "rows": rows}

    def write_json(self, path: Path, meta: dict[str, Any]) -> None:
        path.write_text(json.dumps(self.to_json(meta), indent=2) + "\n")


def run_meta(args: BenchArgs, seconds: float) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in ("anyio", "uvloop", "loky", "pebble", "aiomultiprocess", "msgspec", "cancelpool"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "command": " ".join(["python", "benchmarks/" + Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "only": sorted(args.only),
        "workers": list(args.workers),
        "seconds": round(seconds, 2),
        "versions": versions,
    }

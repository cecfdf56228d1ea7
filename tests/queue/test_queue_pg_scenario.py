"""The scale-out scenario end to end: three real ``cancelpool serve`` nodes on one
PostgreSQL queue drain 1,000 short jobs while a client cancels at random, by id and by
name pattern, jobs that are queued and jobs that are running.

Every job appends ``start TAG PID`` when it starts and ``end TAG`` when its work is
done (``qtasks_pg.tick``), so the side file says how often and where each one ran.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from qhelpers import BACKSTOP, ServerProc, wait_for

from cancelpool.queue import JobStatus, Queue
from cancelpool.queue._records import CancelOutcome

pytestmark = pytest.mark.pg_only

T = "qtasks_pg"
JOBS = 1000
BATCH = 100
GROUPS = 10  # names b<batch>_g<k>_<i>: a pattern cancel takes about 10 jobs of a batch
#: How long jobs await: a mix of instant and short ones, long enough on the whole for
#: jobs to queue up behind the 24 slots of the three nodes (so cancels find both).
SECONDS = (0.0, 0.01, 0.05, 0.1)


def test_three_nodes_drain_1000_jobs_with_random_cancels(
    db: str, queue: Queue, start_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    rng = random.Random(20261203)
    log = tmp_path / "runs.log"
    servers = [
        start_server("--node-name", f"n{i}", "--concurrency", "8", allow=(f"{T}:*",))
        for i in range(3)
    ]
    node_of_pid = {
        proc.pid: index for index, server in enumerate(servers) for proc in server.family
    }
    node_of_id = {node.id: [s.pid for s in servers].index(node.pid) for node in queue.nodes()}
    assert len(node_of_id) == 3

    tag_of: dict[int, str] = {}
    acked: dict[int, str] = {}  # job -> what its cancel found: "queued" or "running"

    def note(outcome: CancelOutcome) -> None:
        for job_id in outcome.cancelled:
            acked.setdefault(job_id, "queued")
        for job_id in outcome.requested:
            acked.setdefault(job_id, "running")

    for batch, start in enumerate(range(0, JOBS, BATCH)):
        submitted = []
        for i in range(start, start + BATCH):
            tag = f"j{i}"
            job_id = queue.submit(
                f"{T}:tick",
                str(log),
                tag,
                rng.choice(SECONDS),
                name=f"b{batch}_g{rng.randrange(GROUPS)}_{i}",
            )
            tag_of[job_id] = tag
            submitted.append(job_id)
        # Cancels of this round: ids of this batch (the last ones likely still queued),
        # ids at random (most already done), jobs running now, and a name pattern.
        note(queue.cancel_jobs(rng.sample(submitted[BATCH // 2 :], 4)))
        note(queue.cancel_jobs(rng.sample(sorted(tag_of), 3)))
        running = [job.id for job in queue.list(status="running")]
        if running:
            note(queue.cancel_jobs(rng.sample(running, min(3, len(running)))))
        note(queue.cancel_jobs(name_pattern=f"b{batch}_g{rng.randrange(GROUPS)}_*"))

    wait_for(
        lambda: (s := queue.statistics()).queued + s.running == 0,
        "every job to finish",
        timeout=4 * BACKSTOP,
    )
    for server in servers:
        assert server.stop() == 0, server.output()
    assert queue.nodes() == ()  # every node left, none is left registered as live

    starts: dict[str, list[int]] = defaultdict(list)
    ends: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        kind, tag, *pid = line.split()
        if kind == "start":
            starts[tag].append(int(pid[0]))
        else:
            ends[tag] += 1

    jobs = queue.list()
    assert sorted(job.id for job in jobs) == sorted(tag_of)  # each job once, no extra
    assert all(job.status.finished for job in jobs)
    by_status = Counter(job.status for job in jobs)
    assert set(by_status) <= {JobStatus.COMPLETED, JobStatus.CANCELLED}, by_status
    for job in jobs:
        tag = tag_of[job.id]
        ran = starts.get(tag, [])
        assert len(ran) <= 1, f"{tag} started {len(ran)} times"  # no node ran it twice
        if ran:  # where it ran is the node that owns its row: nobody else touched it
            assert job.attempts == 1
            assert node_of_pid.get(ran[0]) == node_of_id[job.owner], (tag, job.owner)  # type: ignore[index]
        if job.status is JobStatus.COMPLETED:
            assert len(ran) == 1, tag
            assert ends[tag] == 1, tag
            assert job.result == tag
            assert job.id not in acked  # never completed once a cancel was acknowledged
        if job.id in acked:
            assert job.status is JobStatus.CANCELLED, (tag, acked[job.id], job.status)
        if acked.get(job.id) == "queued":
            assert not ran, f"{tag} ran although its cancel found it queued"
    found = Counter(acked.values())
    assert found["queued"] >= 10, found  # both kinds exercised
    assert found["running"] >= 10, found
    assert by_status[JobStatus.COMPLETED] >= JOBS // 2, by_status

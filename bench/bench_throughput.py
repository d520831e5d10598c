"""Throughput of tiny jobs: spawned workers vs plain loops vs RQ's worker pool.

- orchestrator: jobs through workers the spawner starts on demand, on the
  shipped defaults (the read size is the runtime's own prefetch) but for
  max_concurrent 2, from the moment they become visible (spawner running,
  zero workers) to the last acknowledgement: reaction and worker start-up
  included.
- limit: the same jobs through 2 long-lived plain consumer loops
  (XREADGROUP 100, handle, XACK), already started and waiting.
- rq: `rq worker-pool -n 2` (RQ's default worker, fork per job) on jobs
  enqueued through RQ, already started; 1,000 jobs, as a rate (RQ would
  take about half a minute for 10,000).

The jobs are staged before the clock starts: added to the stream behind
the group's last-delivered id (invisible to its readers), then released in
the timed span by moving that id back and adding the last job, whose XADD
wakes the blocked readers (the loops, or the spawner's watch). All
contenders run the same tiny function on the same Redis; the first two
alternate over several rounds (their times move with the neighbours of a
shared host) and the medians are compared, at 10,000 and 100,000 jobs.
Targets: orchestrator >= 0.8 x limit, >= 50 x rq.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from rq import Queue
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench.harness import ROOT, Spawner, wait_for
from orchestrator.embedded import EmbeddedRedis

# (jobs, produced in the timed span?): rounds
RUNS = {(10_000, False): 9, (100_000, False): 3, (10_000, True): 9}
RQ_JOBS = 1_000
GROUP = "workers"


def stage(r: redis.Redis, stream: str, n: int, produced: bool) -> None:
    """Add n - 1 jobs that the group's readers cannot see yet."""
    r.xgroup_create(stream, GROUP, "$", mkstream=True)
    if produced:
        return
    for start in range(0, n - 1, 10_000):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(n - 1, start + 10_000)):
            pipe.xadd(stream, {"payload": json.dumps({"n": i})})
        pipe.execute()
    r.xgroup_setid(stream, GROUP, "$")


def release(r: redis.Redis, stream: str, n: int, produced: bool) -> float:
    """Make the staged jobs visible and add the last one; the clock's start.
    ``produced``: as the first benchmark did, the jobs are added in the
    timed span instead (one pipeline), so their XADDs are measured too."""
    started = time.monotonic()
    pipe = r.pipeline(transaction=not produced)
    if produced:
        for i in range(n):
            pipe.xadd(stream, {"payload": json.dumps({"n": i})})
    else:
        pipe.xgroup_setid(stream, GROUP, "0")
        pipe.xadd(stream, {"payload": json.dumps({"n": n - 1})})
    pipe.execute()
    return started


def all_acked(r: redis.Redis, stream: str) -> bool:
    """Every entry delivered and acknowledged (the lag is unknown after SETID)."""
    groups = r.xinfo_groups(stream)
    last = r.xinfo_stream(stream)["last-generated-id"]
    return bool(groups) and groups[0]["pending"] == 0 and groups[0]["last-delivered-id"] == last


def orchestrator_run(url: str, workdir: Path, stream: str, n: int, produced: bool) -> float:
    r = redis.Redis.from_url(url)
    stage(r, stream, n, produced)
    config = {
        "redis": {"url": url},
        "spawner": {"host": "bench", "status_interval": 3600},
        "queues": {
            stream: {
                "script": str(ROOT / "bench" / "workers" / "tiny_worker.py"),
                "max_concurrent": 2,
                "env": {"PYTHONPATH": str(ROOT)},
                # Staged jobs sit behind the group's last-delivered id, which
                # trimming takes for done: the retention must hold them all.
                "retention": n,
            }
        },
    }
    with Spawner(workdir, stream, config) as spawner:
        wait_for(lambda: "📊".encode() in spawner.log_path.read_bytes(), 30)  # its first tick
        started = release(r, stream, n, produced)
        wait_for(lambda: all_acked(r, stream), 300, poll_s=0.005)
        return time.monotonic() - started


def limit_run(url: str, stream: str, n: int, produced: bool) -> float:
    r = redis.Redis.from_url(url)
    stage(r, stream, n, produced)
    script = str(ROOT / "bench" / "workers" / "plain_consumer.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script, url, stream, f"c{i}"], cwd=ROOT, env={"PYTHONPATH": str(ROOT)}
        )
        for i in range(2)
    ]
    wait_for(lambda: blocked_readers(r) >= 2, 30)  # both loops in their blocking read
    started = release(r, stream, n, produced)
    wait_for(lambda: all_acked(r, stream), 300, poll_s=0.005)
    elapsed = time.monotonic() - started
    for p in procs:
        p.wait(timeout=30)
    return elapsed


def blocked_readers(r: redis.Redis) -> int:
    return sum(1 for c in r.client_list() if c.get("cmd") in ("xreadgroup", "xread"))


def rq_run(url: str) -> float:
    r = redis.Redis.from_url(url)
    pool = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rq.cli",
            "worker-pool",
            "-n",
            "2",
            "-q",
            "-S",
            "json",
            "-u",
            url,
            "tinyq",
        ],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: r.scard("rq:workers:tinyq") >= 2, 60)
        q = Queue("tinyq", connection=r, serializer=JSONSerializer)
        finished = FinishedJobRegistry("tinyq", connection=r, serializer=JSONSerializer)
        started = time.monotonic()
        q.enqueue_many(
            [Queue.prepare_data("bench.workers.tiny.work", (i,)) for i in range(RQ_JOBS)]
        )
        wait_for(lambda: finished.count >= RQ_JOBS, 300, poll_s=0.02)
        return time.monotonic() - started
    finally:
        pool.send_signal(signal.SIGTERM)
        pool.wait(timeout=60)


def main() -> None:
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        results = {}
        for (n, produced), rounds in RUNS.items():
            limits, ourss = [], []
            for i in range(rounds):  # interleaved, so load changes hit both alike
                name = f"{n}_{'p' if produced else 's'}{i}"
                limits.append(limit_run(server.url, f"plain{name}", n, produced))
                ourss.append(orchestrator_run(server.url, Path(tmp), f"orch{name}", n, produced))
                redis.Redis.from_url(server.url).flushall()
            results[n, produced] = (limits, ourss)
        rq = rq_run(server.url)
    rq_rate = RQ_JOBS / rq
    for (n, produced), (limits, ourss) in results.items():
        limit, ours = statistics.median(limits), statistics.median(ourss)
        how = "produced in the timed span" if produced else "staged before the clock"
        print(f"{n:,} tiny jobs ({how}), 2 workers each, median of {len(limits)} rounds:")
        print(f"  {'orchestrator (spawned on demand)':<36} {n / ours:10,.0f} jobs/s")
        print(f"  {'limit: 2 long-lived plain loops':<36} {n / limit:10,.0f} jobs/s")
        print(
            "  rounds (s): limit "
            + " ".join(f"{t:.3f}" for t in limits)
            + " | orchestrator "
            + " ".join(f"{t:.3f}" for t in ourss)
        )
        print(f"  orchestrator / limit = {limit / ours:.2f}   (target >= 0.8)")
    print(f"rq worker-pool -n 2 ({RQ_JOBS:,} jobs): {rq_rate:10,.0f} jobs/s")
    ours_10k = 10_000 / statistics.median(results[10_000, False][1])
    print(f"  orchestrator (10,000 staged) / rq = {ours_10k / rq_rate:.0f}x   (target >= 50x)")

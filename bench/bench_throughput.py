"""Throughput of tiny jobs: spawned workers vs plain loops vs RQ's worker pool.

- orchestrator: 10,000 jobs through workers the spawner starts on demand
  (max_concurrent 2, batch_size 100), from the XADD of the batch (spawner
  running, zero workers) to the last acknowledgement: reaction and worker
  start-up included.
- limit: the same 10,000 jobs through 2 long-lived plain consumer loops
  (XREADGROUP 100, handle, XACK), already started and waiting.
- rq: `rq worker-pool -n 2` (RQ's default worker, fork per job) on jobs
  enqueued through RQ, already started; 1,000 jobs, as a rate (RQ would
  take about half a minute for 10,000).
All contenders run the same tiny function; the same Redis, one run; the
first two alternate over 9 rounds (their times move with the neighbours
of a shared host) and the medians are compared.
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

JOBS = 10_000
ROUNDS = 9
RQ_JOBS = 1_000


def enqueue(r: redis.Redis, stream: str, n: int) -> float:
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, {"payload": json.dumps({"n": i})})
    started = time.monotonic()
    pipe.execute()
    return started


def all_acked(r: redis.Redis, stream: str) -> bool:
    groups = r.xinfo_groups(stream)
    return bool(groups) and groups[0]["pending"] == 0 and groups[0]["lag"] == 0


def orchestrator_run(url: str, workdir: Path, stream: str) -> float:
    r = redis.Redis.from_url(url)
    r.xgroup_create(stream, "workers", "0", mkstream=True)
    config = {
        "redis": {"url": url},
        "spawner": {"host": "bench", "status_interval": 3600},
        "queues": {
            stream: {
                "script": str(ROOT / "bench" / "workers" / "tiny_worker.py"),
                "max_concurrent": 2,
                "jobs_per_worker": 100,
                "cooldown": 0,
                "idle_timeout": 2,
                "batch_size": 100,
                "env": {"PYTHONPATH": str(ROOT)},
            }
        },
    }
    with Spawner(workdir, stream, config):
        started = enqueue(r, stream, JOBS)
        wait_for(lambda: all_acked(r, stream), 120, poll_s=0.005)
        return time.monotonic() - started


def limit_run(url: str, stream: str) -> float:
    r = redis.Redis.from_url(url)
    r.xgroup_create(stream, "workers", "0", mkstream=True)
    script = str(ROOT / "bench" / "workers" / "plain_consumer.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script, url, stream, f"c{i}"], cwd=ROOT, env={"PYTHONPATH": str(ROOT)}
        )
        for i in range(2)
    ]
    wait_for(lambda: len(r.client_list()) >= 3, 30)  # both loops connected and waiting
    time.sleep(0.3)  # let both settle into their blocking reads
    started = enqueue(r, stream, JOBS)
    wait_for(lambda: all_acked(r, stream), 120, poll_s=0.005)
    elapsed = time.monotonic() - started
    for p in procs:
        p.wait(timeout=30)
    return elapsed


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
    limits, ourss = [], []
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        for i in range(ROUNDS):  # interleaved, so load changes hit both alike
            limits.append(limit_run(server.url, f"plain{i}"))
            ourss.append(orchestrator_run(server.url, Path(tmp), f"orch{i}"))
            redis.Redis.from_url(server.url).flushall()
        rq = rq_run(server.url)
    limit, ours = statistics.median(limits), statistics.median(ourss)
    rates = {
        "orchestrator (spawned on demand)": JOBS / ours,
        "limit: 2 long-lived plain loops": JOBS / limit,
        "rq worker-pool -n 2": RQ_JOBS / rq,
    }
    print(f"{JOBS:,} tiny jobs, 2 workers each, median of {ROUNDS} rounds (RQ: {RQ_JOBS:,} jobs):")
    for name, rate in rates.items():
        print(f"  {name:<36} {rate:10,.0f} jobs/s")
    print(
        "  rounds (s): limit "
        + " ".join(f"{t:.3f}" for t in limits)
        + " | orchestrator "
        + " ".join(f"{t:.3f}" for t in ourss)
    )
    ours_rate = rates["orchestrator (spawned on demand)"]
    print(
        f"  orchestrator / limit = {ours_rate / rates['limit: 2 long-lived plain loops']:.2f}"
        f"   (target >= 0.8)"
    )
    print(
        f"  orchestrator / rq    = {ours_rate / rates['rq worker-pool -n 2']:.0f}x"
        f"   (target >= 50x)"
    )

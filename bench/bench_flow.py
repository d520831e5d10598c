"""How work flows under the shipped defaults: slow jobs spread, kill storms.

- slow jobs: N jobs of 1 s on a queue of max_concurrent M = 3 (every other
  key at its default), N = 1..2M, staged and released at once: the wall
  time from their release to the last one done, against the ideal
  ceil(N / M) s, as ideal / wall (1.0 is perfect).
- slow behind quick: 2,000 jobs of 0 s, then 2M jobs of 1 s, released
  together: workers that ran the quick jobs read many at a time, and give
  back what waits behind a slow one. From the first slow job's start to the
  last one done, against the ideal 2 s (two rounds of M), as ideal / wall.
- kill storm: 3,000 jobs of 10 ms, M = 3; a random worker that has done
  work is SIGKILLed every 250 ms for 8 s (an OOM killer, an operator). The
  time from the last kill until the queue is drained, against the ideal:
  the jobs left at the last kill divided by the throughput of an unkilled
  run in the same session; and beside it the single-kill recovery (a
  worker killed mid-job -> that job's handler starts again).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.harness import ROOT, Spawner, wait_for
from orchestrator.embedded import EmbeddedRedis

M = 3
STORM_JOBS = 3000
STORM_S = 8.0
KILL_EVERY_S = 0.25
QUICK = 2000


def config(url: str) -> dict[str, Any]:
    return {
        "redis": {"url": url},
        "spawner": {"host": "bench", "status_interval": 3600},
        "queues": {
            "jobs": {
                "script": str(ROOT / "bench" / "workers" / "sleep_worker.py"),
                "max_concurrent": M,
            }
        },
    }


def release(r: redis.Redis, jobs: list[dict[str, Any]]) -> float:
    """Add the jobs in one MULTI: visible to the spawner all at once."""
    pipe = r.pipeline(transaction=True)
    for job in jobs:
        pipe.xadd("jobs", {"payload": json.dumps(job)})
    sent = time.time()
    pipe.execute()
    return sent


def done(r: redis.Redis) -> int:
    return int(r.scard("bench:done"))


def fresh(r: redis.Redis) -> None:
    """An empty queue (the spawner's probe may recreate the group meanwhile)."""
    r.delete("jobs", "bench:started", "bench:done", "jobs:dead")
    try:
        r.xgroup_create("jobs", "workers", "0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def slow_jobs(r: redis.Redis) -> list[tuple[int, float, float]]:
    """(N, wall seconds, ideal seconds) for N = 1..2M jobs of 1 s."""
    rows = []
    for n in range(1, 2 * M + 1):
        fresh(r)
        sent = release(r, [{"id": i, "seconds": 1.0} for i in range(n)])
        wait_for(lambda: done(r) == n, 60)  # noqa: B023 (called before n moves on)
        wall = time.time() - sent
        rows.append((n, wall, float(math.ceil(n / M))))
        wait_for(lambda: not r.hgetall("orch:leases:bench"), 30)  # workers idled out
    return rows


def slow_behind_quick(r: redis.Redis) -> float:
    """Seconds from the first slow job's start to the last one done."""
    fresh(r)
    quick = [{"id": f"q{i}"} for i in range(QUICK)]
    slow = [{"id": f"s{i}", "seconds": 1.0} for i in range(2 * M)]
    release(r, quick + slow)
    wait_for(lambda: done(r) == len(quick) + len(slow), 60, poll_s=0.01)
    ended = time.time()
    started = r.hgetall("bench:started").items()
    first = min(float(t) for k, t in started if str(k).startswith("s"))
    wait_for(lambda: not r.hgetall("orch:leases:bench"), 30)  # workers idled out
    return ended - first


def workers(r: redis.Redis) -> dict[str, int]:
    leases = (json.loads(v) for v in r.hvals("orch:leases:bench"))
    return {lease["consumer"]: lease["pid"] for lease in leases}


def throughput(r: redis.Redis) -> float:
    fresh(r)
    sent = release(r, [{"id": i, "seconds": 0.01} for i in range(STORM_JOBS)])
    wait_for(lambda: done(r) == STORM_JOBS, 120, poll_s=0.01)
    return STORM_JOBS / (time.time() - sent)


def single_kill(r: redis.Redis) -> float:
    """A worker SIGKILLed in the middle of a 5 s job: until that job starts again."""
    fresh(r)
    release(r, [{"id": "long", "seconds": 5.0, "first_only": True}])
    first = started_at(r, "long") or wait_for(lambda: started_at(r, "long"), 30)
    pid = next(iter(workers(r).values()))
    killed = time.time()
    os.kill(pid, signal.SIGKILL)

    again = wait_for(lambda: (started_at(r, "long") or first) - first, 30) + first
    wait_for(lambda: done(r) == 1, 30)  # its second run does not sleep
    return again - killed


def started_at(r: redis.Redis, job_id: str) -> float:
    """When the job's handler last started (epoch seconds), 0.0 if never."""
    return float(r.hget("bench:started", job_id) or 0)


def storm(r: redis.Redis) -> tuple[int, int, float]:
    """(kills, jobs left at the last kill, seconds from it until drained)."""
    fresh(r)
    release(r, [{"id": i, "seconds": 0.01} for i in range(STORM_JOBS)])
    rng = random.Random(7)
    kills = 0
    ends = time.monotonic() + STORM_S
    while time.monotonic() < ends:
        started = set(r.hkeys("bench:started"))
        victims = list(workers(r).values()) if started else []
        if victims:
            os.kill(rng.choice(victims), signal.SIGKILL)
            kills += 1
        time.sleep(KILL_EVERY_S)
    last = time.monotonic()
    left = STORM_JOBS - done(r)
    wait_for(lambda: done(r) + r.xlen("jobs:dead") >= STORM_JOBS, 300, poll_s=0.01)
    return kills, left, time.monotonic() - last


def main() -> None:
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        with Spawner(Path(tmp), "flow", config(server.url)) as spawner:
            try:
                rows = slow_jobs(r)
                behind_s = slow_behind_quick(r)
                rate = throughput(r)
                recovery_s = single_kill(r)
                kills, left, drained_s = storm(r)
            except TimeoutError:
                print(spawner.text()[-4000:])
                raise
            backoffs = spawner.text().count("keep failing")
    print(f"slow jobs of 1 s, max_concurrent {M}, shipped defaults otherwise:")
    for n, wall, ideal in rows:
        print(
            f"  N={n}: {wall:5.2f} s against ideal {ideal:.0f} s: ideal/wall = {ideal / wall:.2f}"
        )
    worst = min(ideal / wall for _, wall, ideal in rows)
    print(f"  worst ideal/wall = {worst:.2f}")
    print(
        f"slow behind quick: {2 * M} jobs of 1 s after {QUICK} of 0 s: first start to last done "
        f"{behind_s:.2f} s against ideal 2 s: ideal/wall = {2.0 / behind_s:.2f}"
    )
    ideal_drain = left / rate
    print(
        f"kill storm: {kills} SIGKILLs over {STORM_S:.0f} s, {left} jobs left at the last; "
        f"unkilled throughput {rate:.0f} jobs/s"
    )
    print(
        f"  drained {drained_s:.2f} s after the last kill; ideal (left / throughput) "
        f"{ideal_drain:.2f} s: ideal/actual = {ideal_drain / drained_s:.2f}"
    )
    print(
        f"  single-kill recovery (killed mid-job -> the job starts again): "
        f"{recovery_s * 1000:.1f} ms; crash-loop backoffs logged: {backoffs}"
    )

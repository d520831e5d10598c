"""Recovery latency: a worker SIGKILLed while holding 50 entries.

Each trial queues 50 jobs; the first one blocks its worker (a batch
handler), which then holds all 50 (batch_size 50). The bench SIGKILLs that
worker and measures until the handler has started again on all 50, in
another worker. Two paths, 100 trials each, beside the machine's floor
measured in the same run (``bench.floor``):
- replacement: max_concurrent 1, so the spawner must start a new worker;
- idle peer: max_concurrent 2 with the second worker idle in its read, so
  the entries are handed to it and its blocking read is cut short.
Targets: p50 <= 10 ms, p99 < 2 s.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench import floor
from bench.harness import ROOT, Spawner, percentile, wait_for
from orchestrator.embedded import EmbeddedRedis

TRIALS = 100
SETTLE_S = 0.2
HELD = 50


def config(url: str, max_concurrent: int) -> dict[str, Any]:
    return {
        "redis": {"url": url},
        # The shipped crash-loop rule: a worker killed while working on its
        # entries is no crash loop, so no backoff is measured.
        "spawner": {"host": "bench", "status_interval": 3600},
        "queues": {
            "jobs": {
                "script": str(ROOT / "bench" / "workers" / "hold_worker.py"),
                "max_concurrent": max_concurrent,
                "cooldown": 0,
                "idle_timeout": 30,
                "batch_size": HELD,
                "max_attempts": 5,
            }
        },
    }


def holder(r: redis.Redis) -> tuple[str, int] | None:
    """The consumer holding all HELD entries, and its worker's pid."""
    for c in r.xinfo_consumers("jobs", "workers"):
        if int(c["pending"]) == HELD:
            name = c["name"].decode()
            lease = r.hget("orch:leases:bench", name.split("/", 1)[1])
            if lease:
                return name, int(json.loads(lease)["pid"])
    return None


def trial(r: redis.Redis, t: int, want_idle_peer: bool) -> float:
    pipe = r.pipeline(transaction=True)  # one MULTI: a waiting worker reads all 50 at once
    for n in range(HELD):
        pipe.xadd("jobs", {"payload": json.dumps({"trial": t, "n": n, "block": n == 0})})
    pipe.execute()
    held = wait_for(lambda: holder(r) if r.exists(f"bench:blocked:{t}") else None, 30)
    assert held is not None
    pid = held[1]
    if want_idle_peer:  # the other worker must be alive and idle in its read
        wait_for(lambda: r.hlen("orch:leases:bench") == 2 and _blocked_readers(r) >= 1, 30)
    time.sleep(SETTLE_S)  # a crash comes at its own time, not on the heels of the last
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: r.hlen(f"bench:handled:{t}") == HELD, 30)
    return max(float(v) for v in r.hvals(f"bench:handled:{t}")) - killed_at


def _blocked_readers(r: redis.Redis) -> int:
    return sum(1 for c in r.client_list() if c.get("cmd") == "xreadgroup")


def run_path(url: str, workdir: Path, name: str, max_concurrent: int) -> list[float]:
    r = redis.Redis.from_url(url)
    r.flushall()
    r.xgroup_create("jobs", "workers", "0", mkstream=True)
    out: list[float] = []
    with Spawner(workdir, name, config(url, max_concurrent)) as spawner:
        try:
            return _trials(r, max_concurrent, out)
        except TimeoutError:
            print(spawner.text()[-4000:])
            raise


def _trials(r: redis.Redis, max_concurrent: int, out: list[float]) -> list[float]:
    if max_concurrent == 2:  # start the idle peer: two jobs, two workers
        for n in range(2):
            r.xadd("jobs", {"payload": json.dumps({"trial": "warm", "n": n})})
        wait_for(lambda: r.hlen("orch:leases:bench") == 2, 30)
    for t in range(TRIALS):
        out.append(trial(r, t, want_idle_peer=max_concurrent == 2))
    return out


def main() -> None:
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        base = floor.measure(server.url)
        paths = {
            "replacement worker (max_concurrent 1)": run_path(server.url, Path(tmp), "one", 1),
            "idle live worker (max_concurrent 2)": run_path(server.url, Path(tmp), "two", 2),
        }
    print(f"recovery of {HELD} entries held by a SIGKILLed worker, {TRIALS} trials each:")
    print(f"  {base.describe()}")
    for name, values in paths.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        print(
            f"  {name:<40} p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  "
            f"p50/floor = {p50 / base.total_s:.2f}  p50/target(10 ms) = {p50 / 0.010:.2f}"
        )

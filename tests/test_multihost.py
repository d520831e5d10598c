"""Two spawners on one Redis: a dead host's work is taken only after its heartbeat expires."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import worker_script

TTL_S = 3.0


def test_dead_host_recovered_only_after_heartbeat_expiry(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    queues = {
        "ai_processing": {
            "script": worker_script("job_worker.py"),
            "label": "AI",
            "max_concurrent": 2,
            "cooldown": 0,
            "idle_timeout": 30,
            "batch_size": 1,
        }
    }
    settings = {"heartbeat_ttl": TTL_S}
    a = spawner_factory(redis_url, queues, name="a", spawner=settings).start()
    for i in range(2):
        r.xadd(
            "ai_processing",
            {"payload": json.dumps({"id": f"a{i}", "action": "sleep", "seconds": 60})},
        )
    a.wait_log("Spawned worker", count=2)
    wait_until(lambda: r.llen("test:started") == 2)  # both of A's workers hold a job
    b = spawner_factory(redis_url, queues, name="b", spawner=settings).start()
    held_by_a = {c["name"]: c["pending"] for c in r.xinfo_consumers("ai_processing", "workers")}
    assert sum(held_by_a.values()) == 2 and all(n.startswith("test-a/") for n in held_by_a)

    for _, _, pid, _ in a.spawned():
        os.kill(pid, signal.SIGKILL)
    os.kill(a.pid, signal.SIGKILL)
    killed_at = time.time()
    expiry = float(r.zscore("orch:hosts", "test-a") or 0)
    assert killed_at < expiry <= killed_at + TTL_S + 0.5

    # Until A's heartbeat expires, B leaves A's entries alone.
    wait_until(lambda: time.time() > expiry - 0.5, TTL_S + 1)
    pending = {c["name"]: c["pending"] for c in r.xinfo_consumers("ai_processing", "workers")}
    assert {n: p for n, p in pending.items() if n.startswith("test-a/")} == held_by_a
    assert not b.lines("Recovered")

    # After it expires, B recovers them and its workers run them.
    line = b.wait_log("Recovered", timeout_s=10)[0]
    recovered_at = _log_time(line)
    assert recovered_at >= expiry - 0.05
    wait_until(lambda: r.llen("test:started") == 4, 10)
    assert all(s.split()[1].startswith("test-b/") for s in r.lrange("test:started", 2, -1))
    assert not [
        c for c in r.xinfo_consumers("ai_processing", "workers") if c["name"].startswith("test-a/")
    ]


def _log_time(line: str) -> float:
    stamp = line.split(" | ")[0]
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + float(stamp[19:])

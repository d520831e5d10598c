"""Operator commands against real Redis: streams, reap, dlq."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.helpers import TextRedis
from tests.spawn_harness import ROOT


def run(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        input=stdin,
        timeout=30,
    )


def write_config(tmp_path: Path, redis_url: str) -> Path:
    path = tmp_path / "workers.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "redis": {"url": redis_url},
                "queues": {
                    "ai_processing": {
                        "command": ["true"],
                        "label": "AI",
                        "max_attempts": 3,
                        "max_runtime": 30,
                    }
                },
            }
        )
    )
    return path


def test_streams_and_reap_recover_a_dead_hosts_entries(
    tmp_path: Path, redis_url: str, r: TextRedis
) -> None:
    config = write_config(tmp_path, redis_url)
    r.xgroup_create("ai_processing", "workers", "0", mkstream=True)
    for i in range(5):
        r.xadd("ai_processing", {"payload": json.dumps({"id": i})})
    r.zadd("orch:hosts", {"alive": time.time() + 60, "gone": time.time() - 5})
    r.hset("orch:leases:alive", "ai_1", "{}")
    r.xreadgroup("workers", "alive/ai_1", {"ai_processing": ">"}, count=2)
    r.xreadgroup("workers", "gone/ai_9", {"ai_processing": ">"}, count=2)
    health = run(config, "streams")
    assert health.returncode == 0, health.stderr
    assert "ai_processing [workers]: 5 entries, lag 1, 4 pending, 2 consumers" in health.stdout
    assert (
        "alive/ai_1: 2 pending" in health.stdout
        and "[live: worker of live host alive]" in health.stdout
    )
    assert (
        "gone/ai_9: 2 pending" in health.stdout
        and "[DEAD: host gone heartbeat expired]" in health.stdout
    )

    dry = run(config, "reap", "--dry-run")
    assert "consumer gone/ai_9: would recover 2 entries" in dry.stdout
    assert r.xpending("ai_processing", "workers")["consumers"] == [
        {"name": "alive/ai_1", "pending": 2},
        {"name": "gone/ai_9", "pending": 2},
    ]

    done = run(config, "reap")
    assert "consumer gone/ai_9: recovered 2 entries" in done.stdout
    consumers = {c["name"]: c["pending"] for c in r.xinfo_consumers("ai_processing", "workers")}
    assert consumers == {"alive/ai_1": 2, "orch:parked": 2}  # nothing acknowledged, nothing lost


def test_dlq_list_retry_purge(tmp_path: Path, redis_url: str, r: TextRedis) -> None:
    config = write_config(tmp_path, redis_url)
    for i in range(3):
        r.xadd(
            "ai_processing:dead",
            {
                "payload": json.dumps({"id": i}),
                "error": f"boom {i}",
                "attempts": "3",
                "failed_at": "1700000000",
                "original_id": f"1-{i}",
            },
        )
    listed = run(config, "dlq", "list", "ai_processing")
    assert listed.returncode == 0 and "error=boom 1" in listed.stdout
    assert "3 dead letter(s) in ai_processing:dead" in listed.stdout
    first = r.xrange("ai_processing:dead")[0][0]
    for bad in ("1-999", "not-an-id"):  # with a known one: nothing is retried
        refused = run(config, "dlq", "retry", "ai_processing", first, bad)
        assert refused.returncode == 1 and f"no dead letter {bad} in ai_processing:dead" in (
            refused.stderr
        )
        assert r.xlen("ai_processing:dead") == 3 and not r.exists("ai_processing")
    refused = run(config, "dlq", "purge", "ai_processing", "1-999", "--yes")
    assert refused.returncode == 1 and r.xlen("ai_processing:dead") == 3
    retried = run(config, "dlq", "retry", "ai_processing", first)
    assert "re-queued 1 job(s)" in retried.stdout
    assert [f for _, f in r.xrange("ai_processing")] == [{"payload": '{"id": 0}'}]
    assert r.xlen("ai_processing:dead") == 2
    purged = run(config, "dlq", "purge", "ai_processing", "--yes")
    assert "deleted 2 dead letter(s)" in purged.stdout and r.xlen("ai_processing:dead") == 0
    unknown = run(config, "dlq", "list", "nope")
    assert unknown.returncode == 2 and "unknown queue 'nope'" in unknown.stderr

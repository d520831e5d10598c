"""Jobs through real workers: acknowledgement, hand-off, recovery, dead letters."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import redis

from tests.helpers import wait_until
from tests.spawn_harness import worker_script

JOB_WORKER = worker_script("job_worker.py")


def queue(**kw: Any) -> dict[str, Any]:
    return {"script": JOB_WORKER, "cooldown": 0, "max_runtime": 60, "idle_timeout": 1, **kw}


def add(r: redis.Redis, stream: str, *jobs: dict[str, Any]) -> list[str]:
    return [r.xadd(stream, {"payload": json.dumps(j)}) for j in jobs]


def pending(r: redis.Redis, stream: str, group: str = "workers") -> int:
    return int(r.xpending(stream, group)["pending"])


def test_jobs_flow_through_then_and_are_acknowledged(
    redis_url: str, r: redis.Redis, spawner_factory: Any
) -> None:
    sp = spawner_factory(
        redis_url,
        {
            "ai_processing": queue(label="AI", max_concurrent=3, then="supabase_upload"),
            "supabase_upload": queue(label="UPLOAD", max_concurrent=2),
        },
    )
    sp.start()
    add(r, "ai_processing", *({"id": f"j{i}"} for i in range(40)))
    wait_until(lambda: r.llen("test:log") >= 80, 30, message=lambda: sp.text()[-2000:])
    log = [line.split()[0] for line in r.lrange("test:log", 0, -1)]
    assert sorted(log) == sorted([f"j{i}" for i in range(40)] * 2)
    assert pending(r, "ai_processing") == 0
    wait_until(lambda: pending(r, "supabase_upload") == 0)
    forwarded = r.xrange("supabase_upload")
    assert len(forwarded) == 40
    assert json.loads(forwarded[0][1]["payload"])["stage"] == "ai_processing"


def test_killed_worker_jobs_run_again_at_once(
    redis_url: str, r: redis.Redis, spawner_factory: Any
) -> None:
    sp = spawner_factory(
        redis_url, {"ai_processing": queue(label="AI", max_concurrent=2, batch_size=5)}
    )
    sp.start()
    add(
        r, "ai_processing", *({"id": f"s{i}", "action": "sleep", "seconds": 0.3} for i in range(10))
    )
    first = wait_until(lambda: r.lrange("test:started", 0, 0))[0].split()[1]
    victim = wait_until(lambda: [w for w in sp.spawned() if first.endswith(w[0])])[0]
    os.kill(victim[2], signal.SIGKILL)
    killed_at = time.monotonic()
    sp.wait_log("Recovered")
    wait_until(lambda: r.scard("test:done") == 10, 20, message=lambda: sp.text()[-3000:])
    assert time.monotonic() - killed_at < 10
    assert pending(r, "ai_processing") == 0
    assert r.xlen("ai_processing:dead") == 0


def test_poison_jobs_end_in_dead_letters(
    redis_url: str, r: redis.Redis, spawner_factory: Any
) -> None:
    sp = spawner_factory(
        redis_url,
        {"ai_processing": queue(label="AI", max_concurrent=2, max_attempts=3)},
        spawner={"crash_window": 0},
    )
    sp.start()
    r.xadd("ai_processing", {"payload": "{not json"})
    add(
        r,
        "ai_processing",
        {"id": "raiser", "action": "raise"},
        {"id": "killer", "action": "kill"},
        {"id": "once", "action": "poison-once"},
        *({"id": f"ok{i}"} for i in range(5)),
    )
    wait_until(lambda: r.xlen("ai_processing:dead") == 3, 30, message=lambda: sp.text()[-3000:])
    wait_until(lambda: pending(r, "ai_processing") == 0)
    dead = {
        json.loads(f["payload"]).get("id") if f["payload"].startswith('{"') else "bad": f
        for _, f in r.xrange("ai_processing:dead")
    }
    assert set(dead) == {"bad", "raiser", "killer"}
    assert dead["bad"]["error"].startswith("invalid JSON payload")
    assert dead["raiser"]["error"] == "RuntimeError: job raiser always fails"
    assert dead["raiser"]["attempts"] == "3"
    assert dead["killer"]["error"] == "worker died: signal 9"
    assert dead["killer"]["attempts"] == "3"
    assert r.smembers("test:done") >= {"once", *(f"ok{i}" for i in range(5))}


def test_sigterm_stops_a_worker_waiting_for_work_at_once(
    redis_url: str, r: redis.Redis, spawner_factory: Any
) -> None:
    sp = spawner_factory(
        redis_url, {"ai_processing": queue(label="AI", idle_timeout=60)}, spawner={"stop_grace": 30}
    )
    sp.start()
    add(r, "ai_processing", {"id": "only"})
    wait_until(lambda: r.sismember("test:done", "only"))
    started = time.monotonic()
    assert sp.stop() == 0
    assert time.monotonic() - started < 5  # not idle_timeout, not stop_grace
    assert sp.lines("exiting after") and sp.lines("exited with code 0")

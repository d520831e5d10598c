"""Jobs through real workers: acknowledgement, hand-off, recovery, dead letters."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import redis

from orchestrator.embedded import EmbeddedRedis
from orchestrator.procs import wait_gone
from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import worker_script

JOB_WORKER = worker_script("job_worker.py")


def queue(**kw: Any) -> dict[str, Any]:
    return {"script": JOB_WORKER, "cooldown": 0, "max_runtime": 60, "idle_timeout": 1, **kw}


def add(r: TextRedis, stream: str, *jobs: dict[str, Any]) -> list[str]:
    return [r.xadd(stream, {"payload": json.dumps(j)}) for j in jobs]


def pending(r: TextRedis, stream: str, group: str = "workers") -> int:
    return int(r.xpending(stream, group)["pending"])


def test_jobs_flow_through_then_and_are_acknowledged(
    redis_url: str, r: TextRedis, spawner_factory: Any
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
    wait_until(lambda: pending(r, "ai_processing") == 0)  # acks follow "done" by <= 0.2 s
    wait_until(lambda: pending(r, "supabase_upload") == 0)
    forwarded = r.xrange("supabase_upload")
    assert len(forwarded) == 40
    assert json.loads(forwarded[0][1]["payload"])["stage"] == "ai_processing"


def test_killed_worker_jobs_run_again_at_once(
    redis_url: str, r: TextRedis, spawner_factory: Any
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
    wait_until(lambda: pending(r, "ai_processing") == 0)  # acks follow "done" by <= 0.2 s
    assert r.xlen("ai_processing:dead") == 0


def test_poison_jobs_end_in_dead_letters(
    redis_url: str, r: TextRedis, spawner_factory: Any
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
    redis_url: str, r: TextRedis, spawner_factory: Any
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


def test_overdue_worker_is_killed_with_its_tree_and_its_job_runs_again(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp = spawner_factory(
        redis_url,
        {"ai_processing": queue(label="AI", max_runtime=1.5)},
        spawner={"stop_grace": 0.5},
    )
    sp.start()
    add(r, "ai_processing", {"id": "stuck", "action": "hang-once"})
    tree = wait_until(lambda: next(sp.out.glob("stuck.tree"), None))
    worker, grandchild = map(int, tree.read_text().split())
    sp.wait_log("max_runtime 1.5s exceeded")
    sp.wait_log("killed by signal 9")
    assert wait_gone([worker, grandchild], 5.0) == []
    wait_until(lambda: r.sismember("test:done", "stuck"), 15, message=lambda: sp.text()[-2000:])
    first, second = (line.split()[1] for line in r.lrange("test:started", 0, -1))
    assert first != second  # ran again, in another worker
    wait_until(lambda: pending(r, "ai_processing") == 0)  # acks follow "done" by <= 0.2 s
    assert r.xlen("ai_processing:dead") == 0


def test_restarted_spawner_recovers_its_dead_workers_entries(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    queues = {"ai_processing": queue(label="AI", max_concurrent=2, batch_size=1)}
    sp = spawner_factory(redis_url, queues).start()
    jobs = [{"id": f"slow{i}", "action": "sleep-once", "seconds": 60} for i in range(2)]
    add(r, "ai_processing", *jobs)
    wait_until(lambda: r.llen("test:started") == 2)
    victims = [pid for _, _, pid, _ in sp.spawned()]
    for pid in [*victims, sp.pid]:  # the host dies: nothing can finish or clean up
        os.kill(pid, signal.SIGKILL)
    sp.proc.wait()
    assert wait_gone(victims, 5.0) == []
    assert pending(r, "ai_processing") == 2  # stuck on dead consumers, as in seed 001
    sp2 = spawner_factory(redis_url, queues, name="spawner").start()  # same host name
    sp2.wait_log("Recovered", count=2)
    wait_until(lambda: r.smembers("test:done") == {"slow0", "slow1"}, 10)
    wait_until(lambda: pending(r, "ai_processing") == 0)  # acks follow "done" by <= 0.2 s
    assert r.xlen("ai_processing:dead") == 0


def test_restarted_spawner_adopts_workers_still_finishing(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    queues = {"ai_processing": queue(label="AI", batch_size=1, idle_timeout=0.2)}
    sp = spawner_factory(redis_url, queues).start()
    add(r, "ai_processing", {"id": "long", "action": "sleep", "seconds": 3})
    wait_until(lambda: r.llen("test:started") == 1)
    os.kill(sp.pid, signal.SIGKILL)  # the worker gets SIGTERM: it finishes its job first
    sp.proc.wait()
    sp2 = spawner_factory(redis_url, queues, name="spawner").start()
    sp2.wait_log("Adopted running worker")
    wait_until(lambda: r.sismember("test:done", "long"), 10)
    sp2.wait_log(" gone after")  # noticed without SIGCHLD: it is not our child
    assert r.llen("test:started") == 1  # ran once, not recovered from under it
    wait_until(lambda: pending(r, "ai_processing") == 0)  # acks follow "done" by <= 0.2 s


def test_a_spawner_starting_during_an_outage_adopts_once_redis_answers(
    spawner_factory: Any,
) -> None:
    server = EmbeddedRedis().start()  # its own: this test freezes it
    try:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        queues = {"ai_processing": queue(label="AI", batch_size=1, idle_timeout=0.2)}
        sp = spawner_factory(server.url, queues).start()
        add(r, "ai_processing", {"id": "long", "action": "sleep", "seconds": 10})
        wait_until(lambda: r.llen("test:started") == 1)
        os.kill(sp.pid, signal.SIGKILL)  # the worker gets SIGTERM: it finishes its job first
        sp.proc.wait()
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)  # Redis stops answering
        try:
            sp2 = spawner_factory(server.url, queues, name="spawner").start()
            sp2.wait_log("Redis unavailable", timeout_s=15)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        sp2.wait_log("Adopted running worker", timeout_s=15)
        wait_until(lambda: r.sismember("test:done", "long"), 15, message=sp2.text)
        wait_until(lambda: pending(r, "ai_processing") == 0)
        assert r.llen("test:started") == 1  # ran once: not recovered from under its worker
    finally:
        server.stop()

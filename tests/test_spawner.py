"""The spawner with real processes: scaling, limits, stops, signals."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from typing import Any

import psutil
import redis

from orchestrator.procs import pid_alive, wait_gone
from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import ROOT, worker_script

SLEEPER = worker_script("sleeper.py")


def queue(script: str, **kw: Any) -> dict[str, Any]:
    return {"script": script, "cooldown": 0, "max_runtime": 60, **kw}


def add_jobs(r: TextRedis, stream: str, n: int) -> None:
    for i in range(n):
        r.xadd(stream, {"payload": json.dumps({"id": i})})


def test_five_jobs_start_three_workers_at_once(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp = spawner_factory(redis_url, {"ai_processing": queue(SLEEPER, label="AI", max_concurrent=3)})
    sp.start()
    add_jobs(r, "ai_processing", 5)
    sp.wait_log("Spawned worker ai_", count=3)
    assert [s[3] for s in sp.spawned()] == [1, 2, 3]
    sp.wait_log("AI: 3/3 workers, 5 jobs")  # sleepers take nothing: all 5 still waiting
    assert len(sp.spawned()) == 3
    assert len(sp.live_workers()) == 3


def test_mixed_queues_get_three_two_one(redis_url: str, r: TextRedis, spawner_factory: Any) -> None:
    sp = spawner_factory(
        redis_url,
        {
            "ai_processing": queue(SLEEPER, label="AI", max_concurrent=3),
            "supabase_upload": queue(SLEEPER, label="UPLOAD", max_concurrent=2),
            "investor_processing": queue(SLEEPER, label="INVESTOR", max_concurrent=1),
        },
    )
    sp.start()
    add_jobs(r, "ai_processing", 4)
    add_jobs(r, "supabase_upload", 3)
    add_jobs(r, "investor_processing", 1)
    sp.wait_log("Spawned worker", count=6)
    sp.wait_log(
        "AI: 3/3 workers, 4 jobs | UPLOAD: 2/2 workers, 3 jobs | INVESTOR: 1/1 workers, 1 job"
    )
    labels = [s[1] for s in sp.spawned()]
    assert sorted(labels) == ["AI"] * 3 + ["INVESTOR"] + ["UPLOAD"] * 2


def test_worker_environment(redis_url: str, r: TextRedis, spawner_factory: Any) -> None:
    sp = spawner_factory(
        redis_url,
        {
            "ai_processing": queue(
                SLEEPER,
                label="AI",
                idle_timeout=7,
                max_attempts=4,
                then="supabase_upload",
                max_runtime=120,
            ),
            "supabase_upload": queue(SLEEPER, label="UPLOAD", stream="uploads"),
        },
    )
    sp.start()
    add_jobs(r, "ai_processing", 1)
    sp.wait_log("Spawned worker ai_")
    files = wait_until(lambda: list(sp.out.glob("*.json")))
    env = json.loads(files[0].read_text())
    worker_id, _, pid, _ = sp.spawned()[0]
    assert env["ORCH_QUEUE"] == "ai_processing"
    assert env["ORCH_WORKER_ID"] == worker_id
    assert env["ORCH_REDIS_URL"] == redis_url
    assert env["ORCH_STREAM"] == "ai_processing"
    assert env["ORCH_GROUP"] == "workers"
    assert env["ORCH_CONSUMER"] == f"test-spawner/{worker_id}"
    assert abs(float(env["ORCH_DEADLINE"]) - (time.time() + 120)) < 10
    assert env["ORCH_IDLE_TIMEOUT"] == "7"
    assert env["ORCH_MAX_ATTEMPTS"] == "4"
    assert env["ORCH_THEN"] == "uploads"
    assert files[0].name == f"{pid}.json"


def test_max_runtime_kills_the_whole_tree(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp = spawner_factory(
        redis_url,
        {"ai_processing": queue(worker_script("stubborn.py"), label="AI", max_runtime=1)},
        spawner={"stop_grace": 0.5},
    )
    sp.start()
    add_jobs(r, "ai_processing", 1)
    tree_file = wait_until(lambda: next(sp.out.glob("*.tree"), None))
    worker, grandchild = map(int, tree_file.read_text().split())
    sp.wait_log("max_runtime 1s exceeded")
    sp.wait_log("killed by signal 9 (SIGKILL)")
    assert wait_gone([worker, grandchild], 5.0) == []
    assert "stopped for max_runtime" in sp.lines("killed by signal 9")[0]


def test_orphans_of_a_worker_are_killed(redis_url: str, r: TextRedis, spawner_factory: Any) -> None:
    sp = spawner_factory(
        redis_url,
        {
            "ai_processing": queue(
                worker_script("leaver.py"), label="AI", max_concurrent=1, cooldown=60
            )
        },
    )
    sp.start()
    add_jobs(r, "ai_processing", 1)
    child = int(wait_until(lambda: next(sp.out.glob("*.child"), None)).read_text())
    sp.wait_log("exited with code 0")
    sp.wait_log(f"Killed stray process {child}")
    assert wait_gone([child], 5.0) == []


def test_sigterm_stops_everything(redis_url: str, r: TextRedis, spawner_factory: Any) -> None:
    sp = spawner_factory(
        redis_url,
        {
            "ai_processing": queue(SLEEPER, label="AI", max_concurrent=2),
            "supabase_upload": queue(worker_script("stubborn.py"), label="UPLOAD"),
        },
        spawner={"stop_grace": 1},
    )
    sp.start()
    add_jobs(r, "ai_processing", 2)
    add_jobs(r, "supabase_upload", 1)
    sp.wait_log("Spawned worker", count=3)
    tree_file = wait_until(lambda: next(sp.out.glob("*.tree"), None))
    pids = [s[2] for s in sp.spawned()] + [int(p) for p in tree_file.read_text().split()]
    started = time.monotonic()
    assert sp.stop() == 0
    assert time.monotonic() - started < 8
    assert [p for p in pids if pid_alive(p)] == []
    assert sp.lines("Spawner on test-spawner stopped")
    assert not redis.Redis.from_url(redis_url).zscore("orch:hosts", "test-spawner")
    # the README's legend holds at shutdown too: 💀 for a worker a signal killed
    killed = sp.lines("killed by signal 9 (SIGKILL)")
    assert len(killed) == 1 and "💀 Worker upload_" in killed[0], killed
    gone = sp.lines(", stopped for shutdown")
    assert len(gone) == 3 and all("💀 Worker" in line for line in gone), gone


def test_crash_loop_backs_off(redis_url: str, r: TextRedis, spawner_factory: Any) -> None:
    sp = spawner_factory(
        redis_url,
        {"ai_processing": queue(worker_script("crasher.py"), label="AI")},
        spawner={"crash_window": 5},
    )
    sp.start()
    add_jobs(r, "ai_processing", 1)
    sp.wait_log("keep failing", count=3, timeout_s=20)
    starts = sorted(float(p.read_text()) for p in sp.out.glob("*.start"))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) >= 4
    # one quick failure is replaced at once; then 1 s, 2 s of backoff: never a tight loop
    assert gaps[1] >= 0.9 and gaps[2] >= 1.9, gaps
    assert "(3 in a row): next spawn in 2s" in sp.text()
    assert "(4 in a row): next spawn in 4s" in sp.text()
    # the status line and `orchestrator status` show the backoff while in force
    sp.wait_log("AI: 0/1 workers, 1 job, crash loop: next spawn in", timeout_s=10)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "status", "-c", str(sp.config_path), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    row = json.loads(out.stdout)["hosts"][0]["queues"][0]
    assert row["backoff_reason"] == "crash loop" and row["backoff_s"] > 0


def test_a_script_exiting_0_at_once_with_work_waiting_backs_off(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp = spawner_factory(
        redis_url,
        {"ai_processing": queue(worker_script("crasher.py"), label="AI", idle_timeout=5)},
        env={"EXIT_CODE": "0"},
        spawner={"crash_window": 5},
    )
    sp.start()
    add_jobs(r, "ai_processing", 1)
    sp.wait_log("(3 in a row): next spawn in 2s", timeout_s=20)
    starts = sorted(float(p.read_text()) for p in sp.out.glob("*.start"))
    assert len(starts) >= 3
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[1] >= 0.9, gaps  # not respawned in a tight loop


def test_cooldown_keeps_a_slot_empty(redis_url: str, r: TextRedis, spawner_factory: Any) -> None:
    sp = spawner_factory(
        redis_url,
        {"ai_processing": queue(SLEEPER, label="AI", max_concurrent=1, cooldown=2)},
        env={"SLEEP_S": "0.2"},
    )
    sp.start()
    add_jobs(r, "ai_processing", 1)
    sp.wait_log("Spawned worker", count=2, timeout_s=10)
    exits = sp.lines("exited with code 0")
    spawns = sp.lines("Spawned worker")
    t_exit = _log_time(exits[0])
    t_respawn = _log_time(spawns[1])
    assert t_respawn - t_exit >= 1.9


def test_reload_refuses_bad_config_and_lowering_max_lets_workers_finish(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp = spawner_factory(
        redis_url,
        {"ai_processing": queue(SLEEPER, label="AI", max_concurrent=3)},
        env={"SLEEP_S": "3"},
    )
    sp.start()
    add_jobs(r, "ai_processing", 5)
    sp.wait_log("Spawned worker", count=3)
    good = dict(sp.config)
    sp.write_config({**good, "queues": {"ai_processing": {"max_concurrent": 0}}})
    sp.signal(signal.SIGHUP)
    sp.wait_log("Config reload refused")
    assert "queues.ai_processing.max_concurrent: must be >= 1, got 0" in sp.text()
    good["queues"] = {"ai_processing": queue(SLEEPER, label="AI", max_concurrent=1)}
    sp.write_config(good)
    sp.signal(signal.SIGHUP)
    sp.wait_log("Config reloaded")
    sp.wait_log("exited with code 0", count=3, timeout_s=10)
    assert not sp.lines("Terminating worker")  # extra workers finished on their own
    sp.wait_log("AI: 1/1 workers")


def test_status_and_enqueue_commands(redis_url: str, r: TextRedis, spawner_factory: Any) -> None:
    sp = spawner_factory(redis_url, {"ai_processing": queue(SLEEPER, label="AI", max_concurrent=2)})
    cli = [sys.executable, "-m", "orchestrator"]
    cfg = ["-c", str(sp.config_path)]
    gone = subprocess.run([*cli, "status", *cfg], capture_output=True, text=True, cwd=ROOT)
    assert gone.returncode == 1 and "No spawner is alive" in gone.stderr
    sp.start()
    jobs = "\n".join(json.dumps({"id": i}) for i in range(3))
    done = subprocess.run(
        [*cli, "enqueue", *cfg, "ai_processing", "-"],
        input=jobs,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0 and "enqueued 3 job(s)" in done.stdout
    sp.wait_log("Spawned worker", count=2)

    def snapshot() -> Any:
        out = subprocess.run(
            [*cli, "status", *cfg, "--json"], capture_output=True, text=True, cwd=ROOT
        )
        data = json.loads(out.stdout)
        hosts = data["hosts"]
        q = hosts[0]["queues"][0] if hosts else None
        return data if q and q["live"] == 2 and len(hosts[0]["workers"]) == 2 else None

    data = wait_until(snapshot)
    q = data["hosts"][0]["queues"][0]
    assert (q["label"], q["max_concurrent"], q["backlog"]) == ("AI", 2, 3)
    bad = subprocess.run(
        [*cli, "enqueue", *cfg, "ai_processing", "{not json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "not JSON" in bad.stderr
    assert r.xlen("ai_processing") == 3


def test_no_zombies_while_workers_come_and_go(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp = spawner_factory(
        redis_url,
        # workers that idle out after 0.1 s: they come and go while the jobs wait
        {"ai_processing": queue(SLEEPER, label="AI", max_concurrent=3, idle_timeout=0.05)},
        env={"SLEEP_S": "0.1"},
    )
    sp.start()
    add_jobs(r, "ai_processing", 3)
    sp.wait_log("exited with code 0", count=9, timeout_s=20)
    exited = [pid for _, _, pid, _ in sp.spawned() if not pid_alive(pid)]
    assert len(exited) >= 9
    # each was reaped by the spawner: gone from the process table, not a zombie in it
    wait_until(lambda: not [pid for pid in exited if psutil.pid_exists(pid)], 2.0)


def _log_time(line: str) -> float:
    stamp = line.split(" | ")[0]
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + float(stamp[19:])


def test_redis_outage_is_waited_out(tmp_path: Any, spawner_factory: Any) -> None:
    from orchestrator.embedded import EmbeddedRedis

    server = EmbeddedRedis().start()
    try:
        sp = spawner_factory(
            server.url,
            {"ai_processing": queue(SLEEPER, label="AI", max_concurrent=2)},
            env={"SLEEP_S": "30"},
        )
        sp.start()
        r = redis.Redis.from_url(server.url)
        add_jobs(r, "ai_processing", 1)
        sp.wait_log("Spawned worker", count=1)
        worker_pid = sp.spawned()[0][2]
        port = server.port
        server.stop()
        sp.wait_log("Redis unavailable")
        # the spawner lives through the outage: it goes on with its status lines
        # (every 1 s here) while its probes fail and back off
        sp.wait_log("📊", count=len(sp.lines("📊")) + 3, timeout_s=10)
        assert len(sp.lines("Redis unavailable")) == 1  # logged once per state change
        assert pid_alive(worker_pid) and sp.proc is not None and sp.proc.poll() is None
        server = EmbeddedRedis(port=port).start()
        sp.wait_log("Redis reachable again", timeout_s=20)
        r = redis.Redis.from_url(server.url)
        add_jobs(r, "ai_processing", 2)
        sp.wait_log("Spawned worker", count=2)
        assert pid_alive(worker_pid)
        assert sp.stop() == 0
    finally:
        server.stop()


def test_worker_over_its_memory_cap_is_terminated_with_its_tree(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp = spawner_factory(
        redis_url,
        # a long cooldown: no new hog starts while the test looks for leftovers
        {
            "ai_processing": queue(
                worker_script("hog.py"), label="AI", max_memory_mb=120, cooldown=60
            )
        },
        env={"HOG_MB": "200"},
        spawner={"stop_grace": 0.5, "poll_interval": 0.1},
    )
    sp.start()
    add_jobs(r, "ai_processing", 1)
    line = sp.wait_log("Terminating worker", timeout_s=20)[0]
    assert "memory" in line and "> max_memory_mb 120" in line
    pid = sp.spawned()[0][2]
    sp.wait_log("for AI killed by signal", timeout_s=10)
    assert not pid_alive(pid)
    hogs = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "bytearray(200" in " ".join(p.info["cmdline"] or [])
    ]
    assert wait_gone([p.pid for p in hogs], 5.0) == []

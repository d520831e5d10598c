"""Nothing lost: 5,000 jobs through two stages while workers are SIGKILLed.

A random worker is SIGKILLed every 200 ms and the spawner itself once. At
the end every job id is in the table exactly once, nothing is pending on
either stream, and the dead letters are exactly the two poison jobs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

import psutil
import psycopg

from orchestrator.procs import pid_alive
from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import SpawnerProc, worker_script

JOBS = 5_000
RESTART_AFTER_KILLS = 8


def pending(r: TextRedis, stream: str) -> int:
    return int(r.xpending(stream, "workers")["pending"])


def workers_of(sp: SpawnerProc) -> list[int]:
    return [p.pid for p in sp.live_workers()]


QUEUE = {"max_concurrent": 3, "cooldown": 0, "idle_timeout": 2, "max_attempts": 4}
QUEUES = {
    "stage1": {
        **QUEUE,
        "script": worker_script("chaos_stage1.py"),
        "label": "ONE",
        "then": "stage2",
        "batch_size": 50,
    },
    "stage2": {
        **QUEUE,
        "script": worker_script("chaos_stage2.py"),
        "label": "TWO",
        "batch_size": 50,
    },
}


def test_chaos_nothing_lost(
    redis_url: str, r: TextRedis, pg_url: str, pg_schema: str, spawner_factory: Any
) -> None:
    table = f'"{pg_schema}".done'
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"create table {table} (job_id text primary key, deliveries int not null)")
    # 2 ms a job keeps stage 1 busy for seconds, so the chaos hits running work
    env = {"CHAOS_PG_URL": pg_url, "CHAOS_TABLE": table, "CHAOS_JOB_S": "0.002"}
    pipe = r.pipeline(transaction=False)
    for i in range(JOBS):
        pipe.xadd("stage1", {"payload": json.dumps({"id": f"job-{i}"})})
    pipe.xadd("stage1", {"payload": json.dumps({"id": "poison-raise", "poison": "raise"})})
    pipe.xadd("stage1", {"payload": json.dumps({"id": "poison-kill", "poison": "kill"})})
    pipe.execute()
    # the shipped crash-loop settings: the kills must not stall the queues
    sp = chaos(lambda: spawner_factory(redis_url, QUEUES, env=env), lambda: done(pg_url, table))
    wait_until(
        lambda: (
            done(pg_url, table) == JOBS
            and r.xlen("stage1:dead") == 2
            and pending(r, "stage1") == 0
            and pending(r, "stage2") == 0
        ),
        60,
        message=lambda: (
            f"done={done(pg_url, table)} dead={r.xlen('stage1:dead')} "
            f"pending={pending(r, 'stage1')}/{pending(r, 'stage2')}\n" + sp.text()[-3000:]
        ),
    )
    assert sp.lines("Recovered")  # the kills did strand work, and it was recovered
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(f"select job_id from {table}").fetchall()
    assert sorted(row[0] for row in rows) == sorted(f"job-{i}" for i in range(JOBS))
    dead = {json.loads(f["payload"])["id"]: f for _, f in r.xrange("stage1:dead")}
    assert set(dead) == {"poison-raise", "poison-kill"}
    assert dead["poison-raise"]["error"] == "RuntimeError: poison: raises every time"
    assert dead["poison-kill"]["error"] == "worker died: signal 9"
    assert r.xlen("stage2:dead") == 0
    assert sp.stop() == 0
    # Exec'd workers show their script, forked ones their title (orch-worker <label> <id>).
    left = [" ".join(_cmd(p)) for p in psutil.process_iter()]
    assert not [
        c
        for c in left
        if "chaos_stage" in c or c.startswith(("orch-worker ONE", "orch-worker TWO"))
    ]


def done(pg_url: str, table: str) -> int:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(f"select count(*) from {table}").fetchone()
    return int(row[0]) if row else 0


def chaos(make: Callable[[], SpawnerProc], finished: Callable[[], int]) -> SpawnerProc:
    """A random worker SIGKILLed every 200 ms, and the spawner once, until
    every job is done; the spawner running at the end."""
    sp = make().start()
    rng = random.Random(7)
    kills, restarted = 0, False
    started = time.monotonic()
    while finished() < JOBS and time.monotonic() - started < 150:
        victims = workers_of(sp)
        if victims:
            os.kill(rng.choice(victims), signal.SIGKILL)
            kills += 1
        if not restarted and kills == RESTART_AFTER_KILLS:
            old_workers = workers_of(sp)
            os.kill(sp.pid, signal.SIGKILL)
            sp.proc.wait()
            wait_until(lambda: not [p for p in old_workers if pid_alive(p)], 15)  # noqa: B023
            sp = make().start()
            restarted = True
        time.sleep(0.2)  # the chaos rhythm itself, not a synchronisation
    assert restarted and kills > RESTART_AFTER_KILLS
    return sp


def _cmd(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []

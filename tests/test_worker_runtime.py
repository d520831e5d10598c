"""The worker runtime on its own: a real worker process, no spawner.

What the spawner relies on: SIGTERM finishes the job in hand and leaves the
rest pending, uncounted; the worker stops taking work before its deadline;
its heartbeat names its pid and Redis client while it runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator import keys
from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import ROOT, worker_script

STREAM, GROUP, CONSUMER = "jobs", "workers", "testhost/jobs_1"


def start_worker(redis_url: str, tmp_path: Path, **env: str) -> subprocess.Popen[bytes]:
    variables = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "ORCH_QUEUE": STREAM,
        "ORCH_WORKER_ID": "jobs_1",
        "ORCH_REDIS_URL": redis_url,
        "ORCH_STREAM": STREAM,
        "ORCH_GROUP": GROUP,
        "ORCH_CONSUMER": CONSUMER,
        "ORCH_DEADLINE": f"{time.time() + 300:.3f}",
        "ORCH_IDLE_TIMEOUT": "30",
        "ORCH_MAX_ATTEMPTS": "3",
        "ORCH_BATCH_SIZE": "10",
        "TEST_OUT": str(tmp_path),
        **env,
    }
    return subprocess.Popen([sys.executable, worker_script("job_worker.py")], env=variables)


def add(r: TextRedis, *jobs: dict[str, Any]) -> list[str]:
    r.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    return [r.xadd(STREAM, {"payload": json.dumps(j)}) for j in jobs]


def pending_ids(r: TextRedis) -> list[str]:
    rows = r.xpending_range(STREAM, GROUP, "-", "+", 100, consumername=CONSUMER)
    return [str(row["message_id"]) for row in rows]


def parked(r: TextRedis) -> dict[str, int]:
    """Entries given back (on the parking consumer): id -> delivery count."""
    rows = r.xpending_range(STREAM, GROUP, "-", "+", 100, consumername=keys.PARKING_CONSUMER)
    return {str(row["message_id"]): int(row["times_delivered"]) for row in rows}


def test_sigterm_finishes_the_job_in_hand_and_what_waits_behind_it_goes_back_uncounted(
    redis_url: str, r: TextRedis, tmp_path: Path
) -> None:
    # Three entries handed to the worker before it starts (as the spawner
    # hands a gone worker's entries on): it reads them in one go, runs long
    # and gives b and c back while long runs.
    ids = add(r, {"id": "long", "action": "sleep", "seconds": 1.0}, {"id": "b"}, {"id": "c"})
    r.xreadgroup(GROUP, CONSUMER, {STREAM: ">"}, count=3)
    worker = start_worker(redis_url, tmp_path)
    try:
        wait_until(lambda: f"long {CONSUMER}" in r.lrange("test:started", 0, -1), 15)
        beat = json.loads(wait_until(lambda: r.get(keys.worker_heartbeat(CONSUMER))))
        assert beat["pid"] == worker.pid and isinstance(beat["client_id"], int)
        assert any(int(c["id"]) == beat["client_id"] for c in r.client_list())
        # given back with the delivery before this worker's (it never started them) ...
        assert wait_until(lambda: parked(r) or None, 5) == {ids[1]: 1, ids[2]: 1}
        # ... the spawner woken, and only the job in hand still this worker's
        assert r.xrevrange(keys.wake("testhost"), count=1)[0][1] == {"entries": "2"}
        assert pending_ids(r) == [ids[0]]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
    finally:
        worker.kill()
    assert r.smembers("test:done") == {"long"}  # long finished, though SIGTERM came
    assert r.lrange("test:started", 0, -1) == [f"long {CONSUMER}"]  # b, c not started here
    assert pending_ids(r) == []
    assert r.get(keys.worker_heartbeat(CONSUMER)) is None  # withdrawn on exit


def test_jobs_done_before_a_long_one_are_acknowledged_while_it_runs(
    redis_url: str, r: TextRedis, tmp_path: Path
) -> None:
    """Their outcomes do not wait for the long job (were the worker to die
    in it, they would be charged and run again): the heartbeat thread
    writes them once the long job has run 50 ms."""
    quick = [{"id": f"q{i}"} for i in range(6)]
    ids = add(r, *quick, {"id": "long", "action": "sleep", "seconds": 3.0})
    worker = start_worker(redis_url, tmp_path)
    try:
        wait_until(lambda: f"long {CONSUMER}" in r.lrange("test:started", 0, -1), 15)
        assert wait_until(lambda: pending_ids(r) == [ids[-1]] or None, 1.0)
        assert "long" not in r.smembers("test:done")  # it is still running
        assert r.exists(keys.worker_done(CONSUMER))  # its completed work is on record
    finally:
        worker.kill()


def test_sigterm_between_quick_jobs_leaves_the_rest_pending_uncounted(
    redis_url: str, r: TextRedis, tmp_path: Path
) -> None:
    """Stopped between two jobs of one read, the worker leaves the rest
    pending on itself, marked as never started (the spawner passes them on
    uncounted when it exits)."""
    ids = add(r, *({"id": f"j{i}", "action": "sleep", "seconds": 0.002} for i in range(400)))
    worker = start_worker(redis_url, tmp_path, ORCH_BATCH_SIZE="100")
    try:
        wait_until(lambda: r.llen("test:started") >= 50, 15)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
    finally:
        worker.kill()
    done = r.smembers("test:done")
    assert len(r.lrange("test:started", 0, -1)) == len(done) < 400  # none was cut short
    left, lag = pending_ids(r), r.xinfo_groups(STREAM)[0]["lag"]
    assert len(done) + len(left) + lag == len(ids)  # the rest: pending or never delivered
    if left:  # stopped between two jobs of a read: none of the rest counts as attempted
        assert r.get(keys.in_hand(CONSUMER)) == ""


def test_the_worker_stops_taking_work_before_its_deadline(
    redis_url: str, r: TextRedis, tmp_path: Path
) -> None:
    jobs = [{"id": f"j{i}", "action": "sleep", "seconds": 0.3} for i in range(10)]
    add(r, *jobs)
    deadline = time.time() + 2.0
    worker = start_worker(redis_url, tmp_path, ORCH_DEADLINE=f"{deadline:.3f}")
    try:
        assert worker.wait(timeout=10) == 0
    finally:
        worker.kill()
    assert time.time() < deadline + 0.5  # it left on its own, before the spawner's SIGTERM
    done = r.smembers("test:done")
    assert 1 <= len(done) < 10
    assert len(r.lrange("test:started", 0, -1)) == len(done)  # none was cut short
    assert pending_ids(r) == []  # slow jobs are never read ahead ...
    assert r.xinfo_groups(STREAM)[0]["lag"] == 10 - len(done)  # ... the rest is not delivered


def test_slow_jobs_are_read_one_at_a_time_quick_ones_in_batches(
    redis_url: str, r: TextRedis, tmp_path: Path
) -> None:
    slow = [{"id": f"s{i}", "action": "sleep", "seconds": 0.2} for i in range(3)]
    quick = [{"id": f"q{i}"} for i in range(200)]
    add(r, *slow)
    worker = start_worker(redis_url, tmp_path, ORCH_IDLE_TIMEOUT="1", ORCH_BATCH_SIZE="100")
    try:
        for i in range(3):  # while s<i> runs, nothing else is held by the worker
            started = f"s{i} {CONSUMER}"
            wait_until(lambda: started in r.lrange("test:started", 0, -1), 10)  # noqa: B023
            assert len(pending_ids(r)) == 1
        wait_until(lambda: len(r.smembers("test:done")) == 3, 10)
        r.config_resetstat()
        pipe = r.pipeline(transaction=False)
        for job in quick:
            pipe.xadd(STREAM, {"payload": json.dumps(job)})
        pipe.execute()
        wait_until(lambda: len(r.smembers("test:done")) == 203, 10)
        reads = int(r.info("commandstats")["cmdstat_xreadgroup"]["calls"])
        assert worker.wait(timeout=10) == 0
    finally:
        worker.kill()
    assert reads < 40  # quick jobs are read many at a time, not one per read


def test_a_read_takes_thousands_of_parked_entries_oldest_first(r: TextRedis) -> None:
    """first_read.lua claims parked entries in chunks (Lua's unpack() has a
    limit near 8,000), then reads them back as the worker's own."""
    from orchestrator.worker.streamreads import FIRST_READ

    pipe = r.pipeline(transaction=False)
    for i in range(9000):
        pipe.xadd(STREAM, {"payload": json.dumps({"id": i})})
    ids = pipe.execute()
    r.xgroup_create(STREAM, GROUP, "0")
    r.xreadgroup(GROUP, keys.PARKING_CONSUMER, {STREAM: ">"})  # all of them parked
    args = [GROUP, CONSUMER, 10, 0, 9000, keys.PARKING_CONSUMER]
    own, counts, fresh = r.eval(FIRST_READ, 1, STREAM, *args)
    assert [entry[0] for entry in own] == ids[:10] and fresh == []
    delivered = dict(counts)
    assert {delivered[i] for i in ids[:10]} == {2}  # the parked delivery, then this read
    assert len(pending_ids(r)) == 100 and parked(r) == {}  # 100: the helper's page

"""Work spreads and keeps flowing, as a user sees it with the shipped defaults.

Real spawner processes and workers on the session's redis-server; every
spawner and queue key is at its shipped default unless the test is about
that key. Timings are the handlers' own (``flow:started``), not spawn lines.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import redis

from orchestrator import keys
from orchestrator.procs import pid_alive, wait_gone
from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import ROOT, SpawnerProc, worker_script

FLOW = worker_script("flow_worker.py")
JOB_WORKER = worker_script("job_worker.py")
TREE = worker_script("tree_worker.py")


def stage(r: TextRedis, stream: str, jobs: list[dict[str, Any]], atomic: bool = False) -> float:
    """Add jobs in one round trip (one MULTI when ``atomic``); the time it was sent."""
    pipe = r.pipeline(transaction=atomic)
    for job in jobs:
        pipe.xadd(stream, {"payload": json.dumps(job)})
    sent = time.time()
    pipe.execute()
    return sent


def starts(r: TextRedis) -> list[tuple[str, str, str, float]]:
    """(id, queue, consumer, epoch) of each job start, in start order."""
    rows = [line.split() for line in r.lrange("flow:started", 0, -1)]
    return sorted(((i, q, c, float(t)) for i, q, c, t in rows), key=lambda row: row[3])


def test_slow_jobs_spread_over_the_workers(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp = spawner_factory(
        redis_url,
        {"ai_processing": {"script": FLOW, "label": "AI", "max_concurrent": 3}},
        shipped_defaults=True,
    ).start()
    sent = stage(r, "ai_processing", [{"id": i, "seconds": 1.5} for i in range(5)])
    wait_until(lambda: r.scard("flow:done") == 5, 20)
    began = starts(r)
    # min(N, M) = 3 start at once, on three workers, within the reaction time ...
    assert began[2][3] - sent < 1.0, began
    assert len({consumer for _, _, consumer, _ in began[:3]}) == 3
    # ... and the other two when the first three are done: two rounds, not five
    assert 1.4 < began[3][3] - sent < 2.5, began
    assert began[4][3] - sent < 2.5, began
    assert not sp.lines("keep failing")


def test_slow_jobs_behind_quick_ones_spread_too(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    """Workers that ran quick jobs read many at a time; the slow jobs that
    follow must not wait behind each other in one worker's read: what waits
    behind a long job is given back and handed to the idle workers."""
    sp = spawner_factory(
        redis_url,
        {"ai_processing": {"script": FLOW, "label": "AI", "max_concurrent": 3}},
        shipped_defaults=True,
    ).start()
    quick = [{"id": f"q{i}"} for i in range(600)]
    slow = [{"id": f"s{i}", "seconds": 1.0} for i in range(6)]
    stage(r, "ai_processing", quick + slow)
    wait_until(lambda: r.scard("flow:done") == len(quick) + len(slow), 30)
    began = [row for row in starts(r) if row[0].startswith("s")]
    first = began[0][3]
    # Two rounds of three, as if each slow job had been read by an idle worker.
    assert began[2][3] - first < 0.5, began
    assert 0.9 < began[3][3] - first < 1.5, began
    assert began[5][3] - first < 1.5, began
    assert len({consumer for _, _, consumer, _ in began[:3]}) == 3, began
    assert r.xpending("ai_processing", "workers")["pending"] == 0
    sp.wait_log("given back")  # the worker says so when it exits
    assert not sp.lines("keep failing")


def test_work_given_back_runs_before_newer_work_when_no_worker_is_free(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    """One worker (max_concurrent 1) gives back what it read behind a slow
    job; newer jobs arrive meanwhile. With no idle worker to hand them to,
    what it gave back is taken again as its next jobs, before the newer
    ones, not once they are done."""
    sp = spawner_factory(
        redis_url,
        {"ai_processing": {"script": FLOW, "label": "AI", "max_concurrent": 1}},
        shipped_defaults=True,
    ).start()
    behind = [{"id": f"b{i}", "seconds": 0.02} for i in range(4)]
    stage(r, "ai_processing", [{"id": f"q{i}"} for i in range(300)])
    stage(r, "ai_processing", [{"id": "slow", "seconds": 1.5}, *behind])
    wait_until(lambda: "slow" in [row[0] for row in starts(r)], 15)

    def nothing_behind_slow() -> bool:  # given back, or never read with it
        gave_back = r.xlen(keys.wake("test-spawner")) > 0
        return gave_back or int(r.xinfo_groups("ai_processing")[0]["lag"]) >= len(behind)

    wait_until(nothing_behind_slow, 5)
    stage(r, "ai_processing", [{"id": f"t{i}", "seconds": 0.1} for i in range(20)])
    wait_until(lambda: r.scard("flow:done") == 300 + 5 + 20, 30, message=sp.text)
    order = [row[0] for row in starts(r)]
    assert max(order.index(str(b["id"])) for b in behind) < order.index("t3"), order[298:]


def test_a_kill_storm_does_not_stall_the_queue(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    """Workers SIGKILLed every 250 ms after they did work, 30 times (an OOM
    killer, an operator): no crash-loop backoff, and the queue drains."""
    sp = spawner_factory(
        redis_url,
        {"ai_processing": {"script": FLOW, "label": "AI", "max_concurrent": 3}},
        shipped_defaults=True,
    ).start()
    total = 3000
    stage(r, "ai_processing", [{"id": i, "seconds": 0.01} for i in range(total)])
    rng = random.Random(7)
    kills, storm = 0, 30
    deadline = time.monotonic() + 30.0  # 7.5 s at the storm's pace; more on a loaded machine
    while kills < storm and time.monotonic() < deadline:
        worked = {consumer.rpartition("/")[2] for _, _, consumer, _ in starts(r)}
        victims = [pid for wid, _, pid, _ in sp.spawned() if wid in worked and pid in live_pids(sp)]
        if victims:
            os.kill(rng.choice(victims), signal.SIGKILL)
            kills += 1
        time.sleep(0.25)  # the storm's pace, not a wait for anything
    last_kill = time.monotonic()
    dead_stream = keys.dead_stream("ai_processing")
    wait_until(lambda: r.scard("flow:done") + r.xlen(dead_stream) >= total, 60)
    drained_s = time.monotonic() - last_kill
    assert kills == storm
    assert not sp.lines("keep failing"), sp.lines("keep failing")
    assert drained_s < 10.0, drained_s
    for _, fields in r.xrange(dead_stream):  # only a job killed max_attempts times
        assert fields["error"].startswith("worker died: signal 9")


def test_a_job_that_kills_its_worker_every_time_is_dead_lettered_not_backed_off(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    """The shipped crash settings: a job that SIGKILLs every worker that
    runs it is charged its attempts and dead-lettered; its deaths do not
    make the queue back off, and the jobs around it run."""
    sp = spawner_factory(
        redis_url,
        {"ai_processing": {"script": JOB_WORKER, "label": "AI", "max_concurrent": 2}},
        shipped_defaults=True,
    ).start()
    jobs = [{"id": "killer", "action": "kill"}, *({"id": f"ok{i}"} for i in range(20))]
    stage(r, "ai_processing", jobs[:1])  # alone first: it kills the first workers
    sp.wait_log("killed by signal 9")
    stage(r, "ai_processing", jobs[1:])
    dead_stream = keys.dead_stream("ai_processing")
    wait_until(lambda: r.xlen(dead_stream) == 1, 30, message=lambda: sp.text()[-3000:])
    wait_until(lambda: r.scard("test:done") == 20, 15, message=lambda: sp.text()[-3000:])
    (_, fields), *_ = r.xrange(dead_stream)
    assert json.loads(fields["payload"])["id"] == "killer"
    assert fields["attempts"] == "3" and fields["error"] == "worker died: signal 9"
    assert not sp.lines("keep failing"), sp.lines("keep failing")


def test_a_fixed_program_reloaded_with_sighup_starts_at_once(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    """A broken program backs its queue off (the shipped crash settings);
    the operator fixes the config and sends SIGHUP: the backoff is lifted
    for that queue and its job runs at once, not after the backoff."""
    sp = spawner_factory(
        redis_url,
        {"ai_processing": {"script": worker_script("crasher.py"), "label": "AI"}},
        shipped_defaults=True,
    ).start()
    stage(r, "ai_processing", [{"id": "waiting"}])
    sp.wait_log("(4 in a row): next spawn in 4s", timeout_s=20)
    config = dict(sp.config)
    config["queues"] = {"ai_processing": {"script": JOB_WORKER, "label": "AI"}}
    sp.write_config(config)
    sp.signal(signal.SIGHUP)
    reloaded = time.monotonic()
    wait_until(lambda: r.sismember("test:done", "waiting"), 10, message=sp.text)
    assert time.monotonic() - reloaded < 3.5, sp.text()  # the 4 s backoff did not hold it
    assert len(sp.lines("Config reloaded")) == 1


def live_pids(sp: SpawnerProc) -> set[int]:
    return {p.pid for p in sp.live_workers()}


def test_workers_stopping_for_a_short_max_runtime_are_no_crash_loop(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp = spawner_factory(
        redis_url,
        {"ai_processing": {"script": FLOW, "label": "AI", "max_runtime": 3}},
        shipped_defaults=True,
    ).start()
    total = 500
    sent = stage(r, "ai_processing", [{"id": i, "seconds": 0.01} for i in range(total)])
    wait_until(lambda: r.scard("flow:done") == total, 30)
    elapsed = time.time() - sent
    work_s = total * 0.01
    assert len(sp.lines("exited with code 0")) >= 1  # workers did stop for their deadline
    assert not sp.lines("keep failing")
    assert elapsed < 1.5 * work_s + 2.0, elapsed


def test_the_host_cap_is_shared_over_time(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    """20 queues of max_concurrent 3 behind max_total_workers 8: every queue
    gets a worker within seconds, and no job is cut short for it."""
    names = [f"q{i:02d}" for i in range(20)]
    sp = spawner_factory(
        redis_url,
        {name: {"script": FLOW, "max_concurrent": 3} for name in names},
        spawner={"max_total_workers": 8},
        shipped_defaults=True,
    ).start()
    sent = 0.0
    for name in names:
        sent = stage(r, name, [{"id": f"{name}-{i}", "seconds": 0.1} for i in range(100)])
    served: dict[str, float] = {}

    def all_served() -> bool:
        for _, queue, _, at in starts(r):
            served.setdefault(queue, at)
        return len(served) == len(names)

    wait_until(all_served, 15, message=lambda: f"served: {sorted(served)}")
    assert max(served.values()) - sent < 10.0, served
    assert sp.lines("gives its slot up")
    assert not sp.lines("killed by signal"), sp.lines("killed by signal")
    assert len(sp.live_workers()) <= 8


def test_a_second_spawner_with_the_same_host_name_refuses_to_start(
    redis_url: str, r: TextRedis, spawner_factory: Any, tmp_path: Path
) -> None:
    queues = {"ai_processing": {"script": FLOW, "label": "AI", "max_concurrent": 2}}
    first = spawner_factory(
        redis_url, queues, name="one", spawner={"host": "same"}, shipped_defaults=True
    ).start()
    first.wait_log("📊")
    second = spawner_factory(
        redis_url, queues, name="two", spawner={"host": "same"}, shipped_defaults=True
    )
    second.log_file = second.log_path.open("ab")
    second.proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "-c", str(second.config_path)],
        cwd=ROOT,
        env=second.env,
        stdout=second.log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert second.proc.wait(timeout=20) == 2
    refusal = second.text()
    assert "host name 'same' is held by a live spawner" in refusal
    assert f"machine {socket.gethostname()} (pid {first.pid})" in refusal
    assert r.zscore(keys.HOSTS, "same")  # the first one's heartbeat is untouched
    assert first.proc is not None and first.proc.poll() is None
    assert first.stop() == 0
    third = spawner_factory(
        redis_url, queues, name="three", spawner={"host": "same"}, shipped_defaults=True
    ).start()
    third.wait_log("📊")
    assert third.proc is not None and third.proc.poll() is None


def test_a_host_name_held_from_another_machine_is_free_once_its_heartbeat_expires(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    other = {"machine": "vm-2", "boot": "another-boot", "pid": 4242, "create_time": 1.0}
    r.set(keys.host("same"), json.dumps({**other, "instance": "x"}))
    r.zadd(keys.HOSTS, {"same": time.time() + 3600})
    queues = {"ai_processing": {"script": FLOW, "label": "AI"}}
    refused = spawner_factory(
        redis_url, queues, name="one", spawner={"host": "same"}, shipped_defaults=True
    )
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", "-c", str(refused.config_path)],
        cwd=ROOT,
        env=refused.env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2
    assert "held by a live spawner on machine vm-2 (pid 4242)" in done.stderr
    r.zadd(keys.HOSTS, {"same": time.time() - 1})  # its heartbeat expires
    sp = spawner_factory(
        redis_url, queues, name="two", spawner={"host": "same"}, shipped_defaults=True
    ).start()
    sp.wait_log("📊")
    assert json.loads(r.get(keys.host("same")))["pid"] == sp.pid


def test_check_refuses_a_host_name_that_breaks_consumer_names(tmp_path: Path) -> None:
    config = tmp_path / "workers.yaml"
    config.write_text(json.dumps({"spawner": {"host": "vm/1"}, "queues": {"q": {"script": FLOW}}}))
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "check", "-c", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "spawner.host: must be 1-128 letters, digits and . _ @ + -" in done.stderr
    assert "Traceback" not in done.stderr


def test_entries_that_are_not_utf8_reach_the_handler_or_the_dead_letters_intact(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    raw: Any = redis.Redis.from_url(redis_url)  # bytes in, bytes out
    sp = spawner_factory(
        redis_url, {"ai_processing": {"script": FLOW, "label": "AI"}}, shipped_defaults=True
    ).start()
    stage(r, "ai_processing", [{"id": "warm-up"}])  # teaches the worker to read in batches
    wait_until(lambda: r.sismember("flow:done", "warm-up"), 15)
    bad_payload = b'{"id": "bad-json", \xff\xfe'
    pipe = raw.pipeline(transaction=True)  # one batch: the worker reads them together
    for i in range(5):
        pipe.xadd("ai_processing", {"payload": json.dumps({"id": f"good{i}"})})
    pipe.xadd("ai_processing", {b"payload": bad_payload, b"note": b"\x00\xffraw"})
    pipe.xadd("ai_processing", {b"id": b"fields-\xe9", b"symbol": b"\xffX"})
    for i in range(5, 10):
        pipe.xadd("ai_processing", {"payload": json.dumps({"id": f"good{i}"})})
    ids = pipe.execute()
    bad_id = ids[5].decode()
    good = {f"good{i}".encode() for i in range(10)}
    wait_until(lambda: good <= set(raw.smembers("flow:done")), 15)
    # the non-UTF-8 fields reached the handler as str, their bytes as surrogates
    wait_until(lambda: raw.sismember("flow:done", b"fields-\xe9"), 15)
    # one worker read them all in one batch: the dead letter was made in it
    assert len({line.split()[2] for line in raw.lrange("flow:started", 0, -1)}) == 1
    dead = wait_until(lambda: raw.xrange("ai_processing:dead"), 10)
    assert len(dead) == 1  # only the entry that can never run; no good job charged
    letter = dead[0][1]
    assert letter[b"payload"] == bad_payload and letter[b"note"] == b"\x00\xffraw"
    assert letter[b"original_id"] == bad_id.encode()
    assert letter[b"error"].startswith(b"invalid JSON payload")
    assert not sp.lines("runtime failure")
    sp.stop()

    cli = [sys.executable, "-m", "orchestrator"]
    cfg = ["-c", str(sp.config_path)]
    listed = subprocess.run([*cli, "dlq", "list", *cfg, "ai_processing"], capture_output=True)
    assert listed.returncode == 0, listed.stderr
    assert b"\\xff\\xfe" in listed.stdout and b"1 dead letter(s)" in listed.stdout
    retried = subprocess.run([*cli, "dlq", "retry", *cfg, "ai_processing"], capture_output=True)
    assert retried.returncode == 0 and b"re-queued 1 job(s)" in retried.stdout
    back = raw.xrevrange("ai_processing", count=1)[0][1]
    assert back == {b"payload": bad_payload, b"note": b"\x00\xffraw"}  # byte for byte
    raw.xadd("ai_processing:dead", {b"payload": b"\xff"})
    purged = subprocess.run(
        [*cli, "dlq", "purge", *cfg, "ai_processing", "--yes"], capture_output=True
    )
    assert purged.returncode == 0 and raw.xlen("ai_processing:dead") == 0


def tree_of(out: Path, job_id: str) -> list[int]:
    return [int(p) for p in wait_until(lambda: _read(out / f"{job_id}.tree"), 15).split()]


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def guard_of(sp: SpawnerProc) -> psutil.Process:
    kids = psutil.Process(sp.pid).children()
    return next(k for k in kids if "orchestrator.guard" in " ".join(k.cmdline()))


def daemon_after_kill(out: Path, job_id: str) -> int:
    """Let the hung job start its setsid daemon now (the spawner is dead: no
    live subreaper takes it in); its pid, alive."""
    (out / f"{job_id}.go").touch()
    daemon = int(wait_until(lambda: _read(out / f"{job_id}.daemon"), 15))
    assert pid_alive(daemon)
    return daemon


def test_nothing_outlives_a_sigkilled_spawner(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    """A hung worker, its SIGTERM-ignoring grandchild and the setsid daemon
    it starts after the spawner died are gone by the worker's deadline plus
    stop_grace, with no restart (the guard finds the daemon by its
    environment)."""
    sp = spawner_factory(
        redis_url,
        {"ai_processing": {"script": TREE, "label": "AI", "max_runtime": 4}},
        spawner={"stop_grace": 1},
        shipped_defaults=True,
    ).start()
    stage(r, "ai_processing", [{"id": "hung", "action": "hang_late"}])
    pids = tree_of(sp.out, "hung")
    lease = json.loads(next(iter(r.hvals(keys.leases("test-spawner")))))
    guard = guard_of(sp)
    os.kill(sp.pid, signal.SIGKILL)
    sp.proc.wait()
    pids.append(daemon_after_kill(sp.out, "hung"))
    assert pid_alive(pids[0])  # the hung job goes on: its deadline is not up
    limit_s = lease["deadline"] + 1 - time.time()
    assert wait_gone(pids, limit_s + 2.0) == []
    assert wait_gone([guard.pid], 5.0) == []  # and the guard itself leaves


def test_a_restarted_spawner_kills_what_previous_workers_left_behind(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    queues = {"ai_processing": {"script": TREE, "label": "AI"}}
    sp = spawner_factory(redis_url, queues, shipped_defaults=True).start()
    stage(r, "ai_processing", [{"id": "hung", "action": "hang_late"}])
    worker, grandchild = tree_of(sp.out, "hung")
    for pid in (guard_of(sp).pid, sp.pid):  # spawner and guard die hard ...
        os.kill(pid, signal.SIGKILL)
    sp.proc.wait()
    daemon = daemon_after_kill(sp.out, "hung")
    os.kill(worker, signal.SIGKILL)  # ... and so does the worker, once it left a daemon
    assert wait_gone([worker], 5.0) == []
    assert pid_alive(grandchild) and pid_alive(daemon)  # orphans now, re-parented to init
    again = spawner_factory(redis_url, queues, name="spawner", shipped_defaults=True).start()
    line = again.wait_log("left behind by previous workers of test-spawner")[0]
    assert str(grandchild) in line and str(daemon) in line
    assert wait_gone([grandchild, daemon], 5.0) == []


def test_spawning_resumes_at_once_when_redis_returns(tmp_path: Path, spawner_factory: Any) -> None:
    """Workers exit EX_TEMPFAIL while Redis restarts; they wait for Redis,
    not for a doubling backoff, and their deliveries count as no attempt."""
    from orchestrator.embedded import EmbeddedRedis

    data = tmp_path / "redis-data"
    data.mkdir()
    server = EmbeddedRedis(data_dir=data).start()
    try:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        sp = spawner_factory(
            server.url,
            {"ai_processing": {"script": FLOW, "label": "AI", "max_concurrent": 3}},
            shipped_defaults=True,
        ).start()
        total = 2000
        stage(r, "ai_processing", [{"id": i, "seconds": 0.005} for i in range(total)])
        wait_until(lambda: r.scard("flow:done") > 300, 20)
        port = server.port
        server.stop()  # a clean shutdown: the append-only file keeps the queue
        sp.wait_log("Redis unavailable", timeout_s=10)
        server = EmbeddedRedis(port=port, data_dir=data).start()
        back = time.monotonic()
        r = redis.Redis.from_url(server.url, decode_responses=True)
        left = total - r.scard("flow:done")
        sp.wait_log("Redis reachable again", timeout_s=10)
        wait_until(lambda: r.scard("flow:done") == total, 30, message=sp.text)
        drained_s = time.monotonic() - back
        # three workers do about 500 jobs of 5 ms a second
        assert drained_s < left / 500 + 2.0, (drained_s, left)
        assert not sp.lines("keep failing")
        assert r.xlen("ai_processing:dead") == 0  # the outage charged no job an attempt
    finally:
        server.stop()

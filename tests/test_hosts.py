"""Many hosts on one Redis: global caps, rate limits, operator control.

Three spawners with distinct host names as real processes on the session's
redis-server; shipped defaults but for the keys under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from orchestrator import keys
from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import ROOT, SpawnerProc, worker_script

FLOW = worker_script("flow_worker.py")
HOSTS = ("one", "two", "three")


def three(
    spawner_factory: Any, redis_url: str, queue: dict[str, Any], **spawner: Any
) -> list[SpawnerProc]:
    queues = {"ai_processing": {"script": FLOW, "label": "AI", **queue}}
    procs = [
        spawner_factory(redis_url, queues, name=h, spawner=spawner, shipped_defaults=True)
        for h in HOSTS
    ]
    for sp in procs:
        sp.start()
    return procs


def stage(r: TextRedis, jobs: list[dict[str, Any]]) -> None:
    pipe = r.pipeline(transaction=False)
    for job in jobs:
        pipe.xadd("ai_processing", {"payload": json.dumps(job)})
    pipe.execute()


def live(procs: list[SpawnerProc]) -> list[int]:
    return [len(sp.live_workers()) for sp in procs]


def test_a_global_cap_holds_across_hosts_and_a_dead_hosts_slots_wait_for_its_heartbeat(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    procs = three(
        spawner_factory,
        redis_url,
        {"max_concurrent": 3, "global_max_concurrent": 4},
        heartbeat_ttl=3,  # the key under test: how long a dead host's slots stay its own
    )
    stage(r, [{"id": i, "seconds": 0.2} for i in range(400)])
    peak = 0
    for _ in range(40):  # 2 s sampled every 50 ms: never more than the cap
        peak = max(peak, sum(live(procs)))
        time.sleep(0.05)  # the sampling rhythm, not a synchronisation
    assert 3 <= peak <= 4, peak
    victim = wait_until(lambda: next((sp for sp in procs if sp.live_workers()), None), 5)
    held = len(victim.live_workers())
    expires = float(r.zscore(keys.HOSTS, victim.config["spawner"]["host"]))
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.wait()
    others = [sp for sp in procs if sp is not victim]
    victim_host = victim.config["spawner"]["host"]
    assert slots_of(r, victim_host) == held  # its slots, as Redis counts them
    while time.time() < expires - 0.2:  # until its heartbeat expires, its slots stay its
        assert sum(live(others)) <= 4 - held, (live(others), held)
        time.sleep(0.05)
    wait_until(lambda: sum(live(others)) == 4, 10)  # then they are taken over
    assert slots_of(r, victim_host) == 0
    for _ in range(20):  # and the cap still holds after the takeover
        assert sum(live(others)) <= 4 and r.hlen(keys.slots("ai_processing")) <= 4
        time.sleep(0.05)  # the sampling rhythm, not a synchronisation
    assert r.hlen(keys.slots("ai_processing")) <= 4


def slots_of(r: TextRedis, host: str) -> int:
    return sum(1 for h in r.hvals(keys.slots("ai_processing")) if h == host)


def test_a_spawner_restarted_under_its_host_name_gets_its_dead_workers_slots_back(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    """Killed with its workers, a spawner leaves their slots under its host
    name; restarted under the same name, it frees them (no slot leaks)."""
    queues = {
        "ai_processing": {
            "script": FLOW,
            "label": "AI",
            "max_concurrent": 2,
            "global_max_concurrent": 2,
        }
    }
    first = spawner_factory(redis_url, queues, name="first", shipped_defaults=True).start()
    stage(r, [{"id": i, "seconds": 30} for i in range(4)])
    wait_until(lambda: len(first.live_workers()) == 2 and slots_of(r, "test-first") == 2, 10)
    first.kill_everything()  # spawner, guard and workers: SIGKILL
    again = spawner_factory(
        redis_url, queues, name="again", spawner={"host": "test-first"}, shipped_defaults=True
    )
    again.start()
    # the dead workers' entries and slots go to two new workers
    wait_until(lambda: len(again.live_workers()) == 2, 15, message=again.text)
    assert slots_of(r, "test-first") == 2
    assert set(r.hkeys(keys.slots("ai_processing"))) == {
        consumer for consumer in r.hkeys(keys.slots("ai_processing")) if "test-first/" in consumer
    }
    assert len(r.hkeys(keys.slots("ai_processing"))) == 2


def test_a_rate_limit_is_shared_by_every_host_without_bursts(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    procs = three(
        spawner_factory, redis_url, {"max_concurrent": 2, "rate_limit": "20/s", "rate_burst": 5}
    )
    stage(r, [{"id": i} for i in range(100)])

    def throttled() -> bool:
        rows = [
            q for h in json.loads(cli(procs[0], "status", "--json"))["hosts"] for q in h["queues"]
        ]
        return any(q["throttled"] for q in rows)

    wait_until(throttled, 10)  # `status` says the rate limit holds the queue back
    wait_until(lambda: r.scard("flow:done") == 100, 30)
    starts = sorted(float(line.split()[3]) for line in r.lrange("flow:started", 0, -1))
    steady = starts[5:]  # after the first burst of 5
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    assert 18.0 <= rate <= 22.0, rate  # within 10% of 20/s
    for i, at in enumerate(starts):  # no window holds more than the burst and the rate allow
        within = [t for t in starts[i:] if t - at <= 1.0]
        assert len(within) <= 5 + 20 + 1, (at, len(within))
    status = cli(procs[0], "status", "--json")
    assert all(q["rate_limit"] == "20/s" for h in json.loads(status)["hosts"] for q in h["queues"])
    hosts = {line.split()[2].partition("/")[0] for line in r.lrange("flow:started", 0, -1)}
    assert hosts == {f"test-{h}" for h in HOSTS}  # one bucket, shared by every host


def cli(sp: SpawnerProc, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args, "-c", str(sp.config_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pause_resume_drain_and_scale_reach_every_host_within_a_tick(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    procs = three(spawner_factory, redis_url, {"max_concurrent": 2})
    tick_s = 1.0  # the shipped poll_interval

    def everywhere(needle: str, *command: str) -> None:
        """Run the command; every host says ``needle`` within a tick of it."""
        cli(procs[0], *command)
        written = time.monotonic()
        wait_until(lambda: all(sp.lines(needle) for sp in procs), tick_s + 1.0)
        assert time.monotonic() - written <= tick_s + 0.5

    everywhere("AI paused", "pause", "ai_processing")
    stage(r, [{"id": i, "seconds": 1.0} for i in range(30)])  # some still wait at the drain
    watch_until = time.monotonic() + tick_s * 1.5
    while time.monotonic() < watch_until:  # a paused queue starts nothing, however long
        assert r.scard("flow:done") == 0 and sum(live(procs)) == 0
        time.sleep(0.05)  # the sampling rhythm
    assert r.xinfo_groups("ai_processing")[0]["lag"] == 30  # its entries are kept
    everywhere("AI scaled: max_concurrent 1", "scale", "ai_processing", "1")
    everywhere("AI resumed", "resume", "ai_processing")
    wait_until(lambda: r.scard("flow:done") >= 3, 10)
    for _ in range(10):  # scaled to one a host, for as long as it holds
        assert all(n <= 1 for n in live(procs)), live(procs)
        time.sleep(0.05)  # the sampling rhythm
    cli(procs[0], "scale", "ai_processing", "--reset")
    drained = cli(procs[0], "drain", "ai_processing", "--timeout", "30")
    assert "drained: nothing held" in drained
    assert all(sp.lines("AI drained") for sp in procs)
    left = r.xinfo_groups("ai_processing")[0]
    started = r.llen("flow:started")
    assert left["pending"] == 0 and r.scard("flow:done") == started  # what was held finished
    assert left["lag"] > 0 and started + left["lag"] == 30  # and nothing new started
    status = json.loads(cli(procs[0], "status", "--json"))
    assert {q["control"] for h in status["hosts"] for q in h["queues"]} == {"drained"}

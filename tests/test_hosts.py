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
    while time.time() < expires - 0.2:  # until its heartbeat expires, its slots stay its
        assert sum(live(others)) <= 4 - held, (live(others), held)
        time.sleep(0.05)
    wait_until(lambda: sum(live(others)) == 4, 10)  # then they are taken over
    assert r.hlen(keys.slots("ai_processing")) <= 4


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
    stage(r, [{"id": i, "seconds": 0.05} for i in range(30)])
    watch_until = time.monotonic() + tick_s * 1.5
    while time.monotonic() < watch_until:  # a paused queue starts nothing, however long
        assert r.scard("flow:done") == 0 and sum(live(procs)) == 0
        time.sleep(0.05)  # the sampling rhythm
    assert r.xinfo_groups("ai_processing")[0]["lag"] == 30  # its entries are kept
    everywhere("AI scaled: max_concurrent 1", "scale", "ai_processing", "1")
    everywhere("AI resumed", "resume", "ai_processing")
    wait_until(lambda: r.scard("flow:done") >= 3, 10)
    assert all(n <= 1 for n in live(procs))  # scaled to one a host
    cli(procs[0], "scale", "ai_processing", "--reset")
    drained = cli(procs[0], "drain", "ai_processing", "--timeout", "30")
    assert "drained: nothing held" in drained
    assert all(sp.lines("AI drained") for sp in procs)
    left = r.xinfo_groups("ai_processing")[0]
    assert left["pending"] == 0 and r.scard("flow:done") + left["lag"] == 30
    status = json.loads(cli(procs[0], "status", "--json"))
    assert {q["control"] for h in status["hosts"] for q in h["queues"]} == {"drained"}

"""Spawner: reaction latency on an idle system, and its cost when idle.

Reaction latency: from the XADD of one job (zero workers alive) to the
worker's handler starting on it, over 40 trials at the default
poll_interval (1.0 s); split into XADD -> spawn (the spawner's share) and
spawn -> handler (a Python worker starting up). Reported beside
poll_interval, as the issue's target is relative to it.

Idle cost: a spawner with 20 queues and nothing to do, run in this process
for 20 s: CPU seconds per minute, and Redis round trips per tick (target 1)
counted at the client's socket.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
import yaml
from redis.connection import Connection

from orchestrator.config import parse_config
from orchestrator.embedded import EmbeddedRedis
from orchestrator.logs import Events
from orchestrator.spawner import WorkerSpawner

ROOT = Path(__file__).parent.parent
TRIALS = 40
SPAWN_RE = re.compile(r"^(\S+ \S+) .*Spawned worker")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def reaction_latency(url: str, workdir: Path) -> dict[str, Any]:
    config = {
        "redis": {"url": url},
        "spawner": {"poll_interval": 1.0, "status_interval": 3600, "host": "bench"},
        "queues": {
            "jobs": {
                "script": str(ROOT / "bench" / "workers" / "stamp_worker.py"),
                "max_concurrent": 1,
                "cooldown": 0,
                "idle_timeout": 0.05,
            }
        },
    }
    path = workdir / "reaction.yaml"
    path.write_text(yaml.safe_dump(config))
    log_path = workdir / "reaction.log"
    r = redis.Redis.from_url(url)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "-c", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            try:
                return _trials(r, proc, log_path)
            except TimeoutError:
                print(log_path.read_text()[-3000:])
                raise
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def _trials(r: redis.Redis, proc: subprocess.Popen[bytes], log_path: Path) -> dict[str, Any]:
    _wait(lambda: b"Spawner on" in log_path.read_bytes())
    total, spawn_share = [], []
    for trial in range(TRIALS):
        _wait(lambda t=trial: _idle(r, log_path, t))
        time.sleep(0.2)  # the worker is gone; let the system settle
        sent = time.time()
        r.xadd("jobs", {"payload": json.dumps({"id": trial})})
        handled = float(_wait(lambda t=trial: r.hget("bench:handled", str(t))))
        spawned = _spawn_times(log_path)[trial]
        total.append(handled - sent)
        spawn_share.append(spawned - sent)
    return {"total": total, "spawn": spawn_share}


def _idle(r: redis.Redis, log_path: Path, trial: int) -> bool:
    """Zero workers: every trial so far handled, no lease left."""
    return r.hlen("bench:handled") == trial and r.hlen("orch:leases:bench") == 0


def _spawn_times(log_path: Path) -> list[float]:
    out = []
    for line in log_path.read_text().splitlines():
        m = SPAWN_RE.match(line)
        if m:
            stamp = m.group(1)
            out.append(
                time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + float(stamp[19:])
            )
    return out


def _wait(predicate: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise TimeoutError("benchmark condition not met")


class CountingConnection(Connection):
    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def idle_cost(url: str, seconds: float = 30.0) -> dict[str, float]:
    """CPU and Redis round trips of a spawner with 20 idle queues, in steady
    state: from its second tick (the first loads the probe script) to the
    last, so one-off start-up and shutdown calls are not averaged in; the
    30-second consumer sweep is (once per run)."""
    queues = {f"queue_{i:02d}": {"command": ["true"], "max_concurrent": 2} for i in range(20)}
    config = parse_config(
        {
            "redis": {"url": url},
            "spawner": {"host": "bench-idle", "status_interval": 3600},
            "queues": queues,
        },
        env={},
    )
    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    spawner = WorkerSpawner(config, redis.Redis(connection_pool=pool), events=Events())
    marks: list[tuple[int, float, float]] = []  # (sends so far, CPU s, wall s) per tick
    original = spawner.tick

    def counted(now: float) -> None:
        marks.append((CountingConnection.sends, time.process_time(), time.monotonic()))
        original(now)

    spawner.tick = counted  # type: ignore[method-assign]
    threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM)).start()
    spawner.run()
    (sends1, cpu1, wall1), (sends_n, cpu_n, wall_n) = marks[1], marks[-1]
    ticks = len(marks) - 2
    return {
        "cpu_s_per_min": (cpu_n - cpu1) / (wall_n - wall1) * 60,
        "ticks": ticks,
        "round_trips_per_tick": (sends_n - sends1) / ticks,
    }


def main() -> None:
    from loguru import logger

    logger.remove()
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        lat = reaction_latency(server.url, Path(tmp))
        cost = idle_cost(server.url)
    poll = 1.0
    p50, p99 = percentile(lat["total"], 50), percentile(lat["total"], 99)
    s50, s99 = percentile(lat["spawn"], 50), percentile(lat["spawn"], 99)
    print(f"reaction latency over {TRIALS} trials, poll_interval {poll:.1f}s:")
    print(
        f"  XADD -> handler:  p50 {p50 * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms"
        f"   p50/poll_interval = {p50 / poll:.3f}   (target p50 < {poll / 2 + 0.25:.2f}s)"
    )
    print(
        f"  XADD -> spawned:  p50 {s50 * 1000:6.1f} ms  p99 {s99 * 1000:6.1f} ms"
        f"   (the spawner's share: {s50 / p50:.1%} of p50; the rest is worker start-up)"
    )
    print(f"  mean {statistics.mean(lat['total']) * 1000:.1f} ms")
    print(
        f"idle spawner, 20 queues: {cost['cpu_s_per_min']:.2f} CPU s per minute, "
        f"{cost['round_trips_per_tick']:.2f} Redis round trips per tick over {cost['ticks']} ticks"
    )

"""Telemetry: what metrics and history cost the spawner, as ratios in one run.

A spawner with 20 queues runs in this process, as ``bench_spawner.idle_cost``
runs it, under three settings:

- off: ``history: false``, no ``metrics_port`` (no ``Telemetry`` at all);
- default: ``history: auto`` with no dashboard running (a look for one
  every 10 s, on the tick's round trip);
- on: ``metrics_port`` set and scraped every 5 s by another process (as a
  Prometheus would), ``history: true``;

idle (nothing to do) and busy (a producer process adds 5 tiny jobs to each
queue every second; workers with ``idle_timeout`` 0.5 s come and go, about
20 spawns and exits a second). Measured from the spawner's second tick to
its last: CPU seconds per minute of this process (the spawner, its metrics
thread included; workers and the producer are other processes), and Redis
round trips per tick counted at the spawner client's socket. Settings
alternate (off, on, off, on...) so a neighbour's load falls on both.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

from bench.bench_spawner import CountingConnection
from orchestrator.config import parse_config
from orchestrator.embedded import EmbeddedRedis, free_port
from orchestrator.logs import Events
from orchestrator.spawner import WorkerSpawner

ROOT = Path(__file__).parent.parent
QUEUES = 20
SECONDS = 15.0
ROUNDS = 2
SCRAPE_EVERY_S = 5.0
PRODUCER = """
import json, sys, time, redis
r = redis.Redis.from_url(sys.argv[1])
queues = [f"queue_{i:02d}" for i in range(int(sys.argv[2]))]
while True:
    pipe = r.pipeline(transaction=False)
    for q in queues:
        for _ in range(5):
            pipe.xadd(q, {"payload": json.dumps({"n": 1})})
    pipe.execute()
    time.sleep(1.0)
"""
# Prometheus' part, in a process of its own: its CPU is not the spawner's.
SCRAPER = """
import sys, time, urllib.request
while True:
    time.sleep(float(sys.argv[2]))
    try:
        urllib.request.urlopen(sys.argv[1], timeout=5).read()
    except OSError:
        pass  # not listening yet, or stopped
"""


def _config(url: str, setting: str, busy: bool) -> tuple[Any, int | None]:
    worker = str(ROOT / "bench" / "workers" / "tiny_worker.py")
    env = {"PYTHONPATH": str(ROOT)}
    queue: dict[str, Any] = (
        {"script": worker, "max_concurrent": 1, "cooldown": 0, "idle_timeout": 0.5, "env": env}
        if busy
        else {"command": ["true"], "max_concurrent": 2}
    )
    spawner: dict[str, Any] = {"host": f"bench-{setting}", "status_interval": 3600}
    spawner["max_total_workers"] = QUEUES
    port = free_port() if setting == "on" else None
    spawner["history"] = {"off": False, "default": "auto", "on": True}[setting]
    if port is not None:
        spawner["metrics_port"] = port
    queues = {f"queue_{i:02d}": {**queue, "label": f"Q{i:02d}"} for i in range(QUEUES)}
    data = {"redis": {"url": url}, "spawner": spawner, "queues": queues}
    return parse_config(data, root=ROOT, env={}), port


def measure(url: str, setting: str, busy: bool) -> dict[str, float]:
    """One run of SECONDS: CPU s per minute, round trips per tick, ticks."""
    config, port = _config(url, setting, busy)
    redis.Redis.from_url(url).flushall()
    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    spawner = WorkerSpawner(config, redis.Redis(connection_pool=pool), events=Events())
    marks: list[tuple[int, float, float]] = []
    original = spawner.tick

    def counted(now: float) -> None:
        marks.append((CountingConnection.sends, time.process_time(), time.monotonic()))
        original(now)

    spawner.tick = counted  # type: ignore[method-assign]
    helpers = [_python(PRODUCER, url, str(QUEUES))] if busy else []
    if port is not None:
        helpers.append(_python(SCRAPER, f"http://127.0.0.1:{port}/metrics", str(SCRAPE_EVERY_S)))
    threading.Timer(SECONDS, os.kill, (os.getpid(), signal.SIGTERM)).start()
    try:
        spawner.run()
    finally:
        for helper in helpers:
            helper.kill()
            helper.wait()
    (sends1, cpu1, wall1), (sends_n, cpu_n, wall_n) = marks[1], marks[-1]
    ticks = len(marks) - 2
    return {
        "cpu_s_per_min": (cpu_n - cpu1) / (wall_n - wall1) * 60,
        "round_trips_per_tick": (sends_n - sends1) / ticks,
        "ticks": ticks,
    }


def _python(code: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code, *args])


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    from loguru import logger

    logger.remove()
    results: dict[tuple[str, bool], list[dict[str, float]]] = {}
    with EmbeddedRedis() as server:
        for busy in (False, True):
            settings = ("off", "default", "on") if not busy else ("off", "on")
            for _ in range(ROUNDS):
                for setting in settings:
                    results.setdefault((setting, busy), []).append(
                        measure(server.url, setting, busy)
                    )
    print(f"spawner with {QUEUES} queues, {ROUNDS} x {SECONDS:.0f} s per setting (medians):")
    for busy in (False, True):
        base = results["off", busy]
        cpu0, rt0 = _median(base, "cpu_s_per_min"), _median(base, "round_trips_per_tick")
        for setting in ("off", "default", "on"):
            runs = results.get((setting, busy))
            if not runs:
                continue
            cpu, rt = _median(runs, "cpu_s_per_min"), _median(runs, "round_trips_per_tick")
            print(
                f"  {'busy' if busy else 'idle'} {setting:<8} {cpu:6.3f} CPU s/min "
                f"({cpu / cpu0:4.2f} x off), {rt:5.2f} round trips/tick ({rt / rt0:4.2f} x off), "
                f"{_median(runs, 'ticks'):.0f} ticks"
            )

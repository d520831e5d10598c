"""Spawner: reaction latency from zero workers and with a live one, and idle cost.

Reaction latency: from the XADD of one job to the worker's handler starting
on it, over 100 trials each, on the shipped defaults (poll_interval 1 s):
- from zero workers, the spawner starting one (idle_timeout 0.2 s, so the
  worker is gone again before the next trial; the only key changed);
- with a live worker already waiting for work.
Each beside the machine's floor measured in the same run (``bench.floor``:
a blocked reader waking + a warm fork running its child + a connection's
first command), as ratios; and split into XADD -> spawn (the spawner's share)
and spawn -> handler (the worker starting up).

Idle cost: a spawner with 20 queues and nothing to do, run in this process
for 30 s: CPU seconds per minute, and Redis round trips per tick (target 1)
counted at the client's socket.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import redis
import yaml
from redis.connection import Connection

from bench import floor
from bench.harness import percentile
from orchestrator.config import parse_config
from orchestrator.embedded import EmbeddedRedis
from orchestrator.logs import Events
from orchestrator.spawner import WorkerSpawner

ROOT = Path(__file__).parent.parent
TRIALS = 100
SPAWN_RE = re.compile(r"^(\S+ \S+) .*Spawned worker")


def reaction_latency(
    url: str, workdir: Path, live: bool, queue_keys: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``queue_keys``: more keys of the queue's config (the one queue, ``jobs``)."""
    queue: dict[str, Any] = {"script": str(ROOT / "bench" / "workers" / "stamp_worker.py")}
    queue.update(queue_keys or {})
    if not live:
        queue["idle_timeout"] = 0.2  # gone before the next trial: each starts from zero
    config = {
        "redis": {"url": url},
        "spawner": {"status_interval": 3600, "host": "bench"},
        "queues": {"jobs": queue},
    }
    name = ("live" if live else "zero") + "".join(f"-{k}" for k in queue_keys or {})
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    log_path = workdir / f"{name}.log"
    r = redis.Redis.from_url(url)
    r.flushall()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "-c", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            try:
                return _trials(r, log_path, live)
            except TimeoutError:
                print(log_path.read_text()[-3000:])
                raise
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def _trials(r: redis.Redis, log_path: Path, live: bool) -> dict[str, Any]:
    _wait(lambda: b"Spawner on" in log_path.read_bytes())
    total, spawn_share = [], []
    if live:  # a first job brings the worker that then waits for the trials
        r.xadd("jobs", {"payload": json.dumps({"id": "warm"})})
        _wait(lambda: r.hget("bench:handled", "warm"))
        _wait(lambda: _waiting_worker(r))
        time.sleep(0.5)  # the fork server makes its next standby once requests pause
        memory = _memory(r)
    for trial in range(TRIALS):
        if live:
            _wait(lambda: _waiting_worker(r))
        else:
            _wait(lambda t=trial: r.hlen("bench:handled") == t and not r.hlen("orch:leases:bench"))
        time.sleep(0.05)  # let the system settle: the trial starts on an idle machine
        sent = time.time()
        r.xadd("jobs", {"payload": json.dumps({"id": trial})})
        handled = float(_wait(lambda t=trial: r.hget("bench:handled", str(t))))
        total.append(handled - sent)
        if not live:  # the spawn line may come after the handler started
            spawned = _wait(lambda t=trial: (times := _spawn_times(log_path))[t:] and times)
            spawn_share.append(spawned[trial] - sent)
    return {"total": total, "spawn": spawn_share, **(memory if live else {})}


def _memory(r: redis.Redis) -> dict[str, float]:
    """USS (MiB) of the live worker, and of the fork server's standby (the
    spawner's other Python child that is no worker, no fork server, no guard)."""
    lease = json.loads(next(iter(r.hvals("orch:leases:bench"))))
    worker = psutil.Process(int(lease["pid"]))
    spawner = worker.parent()
    assert spawner is not None
    children = spawner.children()
    fork_server = min(children, key=lambda p: p.create_time())  # started first
    others = [
        p
        for p in children
        if p.pid not in (worker.pid, fork_server.pid)
        and "orchestrator.guard" not in " ".join(p.cmdline())
    ]
    mib = 2**20
    return {
        "worker_uss_mib": worker.memory_full_info().uss / mib,
        "standby_uss_mib": sum(p.memory_full_info().uss for p in others) / mib,
    }


def _waiting_worker(r: redis.Redis) -> bool:
    return any(c.get("cmd") == "xreadgroup" for c in r.client_list())


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
    queues = {
        f"queue_{i:02d}": {"command": ["true"], "max_concurrent": 2, "label": f"Q{i:02d}"}
        for i in range(20)
    }
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


def _summary(name: str, values: list[float], base: float) -> str:
    p50, p99 = percentile(values, 50), percentile(values, 99)
    return (
        f"  {name:<28} p50 {p50 * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms   "
        f"p50/floor = {p50 / base:.2f}  p99/floor = {p99 / base:.2f}"
    )


def main() -> None:
    from loguru import logger

    logger.remove()
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        base = floor.measure(server.url)
        zero = reaction_latency(server.url, Path(tmp), live=False)
        live = reaction_latency(server.url, Path(tmp), live=True)
        cost = idle_cost(server.url)
    print(f"reaction latency, XADD -> handler, {TRIALS} trials each, shipped defaults:")
    print(f"  {base.describe()}")
    print(_summary("from zero workers", zero["total"], base.total_s))
    print(_summary("  of which XADD -> spawned", zero["spawn"], base.total_s))
    print(_summary("with a live worker", live["total"], base.total_s))
    print(
        f"  memory: a live worker {live['worker_uss_mib']:.1f} MiB USS; "
        f"the fork server's standby {live['standby_uss_mib']:.1f} MiB USS"
    )
    s50, z50 = percentile(zero["spawn"], 50), percentile(zero["total"], 50)
    print(f"  from zero: the spawner's share {s50 / z50:.0%} of p50, the rest is worker start-up")
    print(
        f"idle spawner, 20 queues: {cost['cpu_s_per_min']:.3f} CPU s per minute, "
        f"{cost['round_trips_per_tick']:.2f} Redis round trips per tick over {cost['ticks']} ticks"
    )

"""Many hosts on one Redis: what a global slot costs, how exact a rate limit is.

Global slot cost: trials of one job each from zero workers (the worker
exits 0.2 s after its job, so each trial spawns one), on the per-host path
(``max_concurrent`` only) and with ``global_max_concurrent`` (a slot taken
before the spawn and released after the exit, ``lua/slots.lua``), as
ratios: the spawner's Redis round trips per trial, counted at its socket
with the spawner run in this process (30 trials each), and the XADD ->
handler latency of ``orchestrator run`` (``bench_spawner``'s 100 trials).

Rate-limit accuracy: ``rate_limit: 20/s`` with ``rate_burst: 5`` over 60 s,
jobs staged before the clock starts (more than the window can take): the
handler starts counted by second from three spawners with distinct host
names, and from one (the per-host path), each against the configured
rate; the busiest second against rate + burst.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import redis

from bench.bench_spawner import CountingConnection, reaction_latency
from bench.harness import ROOT, Spawner, percentile, wait_for
from orchestrator import keys
from orchestrator.config import parse_config
from orchestrator.embedded import EmbeddedRedis
from orchestrator.logs import Events
from orchestrator.spawner import WorkerSpawner

STAMP = str(ROOT / "bench" / "workers" / "stamp_worker.py")
TRIALS = 30
RATE, BURST, WINDOW_S = 20, 5, 60.0


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Standard output and error to /dev/null (the workers' log lines)."""
    sys.stdout.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def round_trips(url: str, global_cap: bool) -> dict[str, float]:
    queue: dict[str, Any] = {"script": STAMP, "idle_timeout": 0.2}
    if global_cap:
        queue["global_max_concurrent"] = 4
    host = "bench-slots"
    config = parse_config(
        {
            "redis": {"url": url},
            "spawner": {"host": host, "status_interval": 3600},
            "queues": {"jobs": queue},
        },
        env={},
        root=ROOT,
    )
    r = redis.Redis.from_url(url)
    r.flushall()
    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    spawner = WorkerSpawner(config, redis.Redis(connection_pool=pool), events=Events())
    counts: list[int] = []
    failure: list[BaseException] = []

    def trials() -> None:
        try:
            wait_for(lambda: r.exists(keys.HOSTS), 30)
            for trial in range(TRIALS):
                wait_for(lambda: not r.hlen(keys.leases(host)), 30)
                time.sleep(0.05)  # settle: each trial starts on an idle machine
                sends = CountingConnection.sends
                r.xadd("jobs", {"payload": json.dumps({"id": trial})})
                wait_for(partial(r.hget, "bench:handled", str(trial)), 30)
                wait_for(lambda: not r.hlen(keys.leases(host)), 30)
                counts.append(CountingConnection.sends - sends)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=trials, daemon=True).start()
    with quiet():
        spawner.run()
    if failure:
        raise failure[0]
    return {"round_trips": sum(counts) / len(counts), "slots_left": r.hlen(keys.slots("jobs"))}


def latency_p50(url: str, workdir: Path, global_cap: bool) -> float:
    extra = {"global_max_concurrent": 4} if global_cap else {}
    return percentile(reaction_latency(url, workdir, False, extra)["total"], 50)


def rate_accuracy(url: str, workdir: Path, hosts: int) -> dict[str, float]:
    r = redis.Redis.from_url(url)
    r.flushall()
    jobs = int(RATE * (WINDOW_S + 20))
    pipe = r.pipeline(transaction=False)
    for i in range(jobs):
        pipe.xadd("jobs", {"payload": json.dumps({"id": i})})
    pipe.execute()
    queue = {"script": STAMP, "rate_limit": f"{RATE}/s", "rate_burst": BURST}
    spawners = [
        Spawner(
            workdir,
            f"rate-{hosts}-{n}",
            {
                "redis": {"url": url},
                "spawner": {"host": f"bench-rate-{n}", "status_interval": 3600},
                "queues": {"jobs": queue},
            },
        )
        for n in range(hosts)
    ]
    for sp in spawners:
        sp.__enter__()
    try:
        # the clock starts with the first handler: from then on the limit alone paces the jobs
        first = float(min(wait_for(lambda: r.hvals("bench:handled"), 30)))
        wait_for(lambda: time.time() > first + WINDOW_S + 1, WINDOW_S + 30, poll_s=0.5)
    finally:
        for sp in spawners:
            sp.__exit__()
    starts = [float(v) for v in r.hvals("bench:handled")]
    window = [t for t in starts if first + 1 <= t < first + 1 + WINDOW_S]  # past the burst
    per_second = Counter(int(t - first) for t in starts if t < first + 1 + WINDOW_S)
    return {
        "rate": len(window) / WINDOW_S,
        "busiest_second": max(per_second.values()),
    }


def main() -> None:
    from loguru import logger

    logger.remove()
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        local = round_trips(server.url, global_cap=False)
        shared = round_trips(server.url, global_cap=True)
        local["p50_s"] = latency_p50(server.url, Path(tmp), global_cap=False)
        shared["p50_s"] = latency_p50(server.url, Path(tmp), global_cap=True)
        many = rate_accuracy(server.url, Path(tmp), hosts=3)
        one = rate_accuracy(server.url, Path(tmp), hosts=1)
    print("global slot, one spawn from zero per trial (a slot taken and given back each):")
    for name, m in (("per-host max_concurrent", local), ("global_max_concurrent", shared)):
        print(
            f"  {name:<24} {m['round_trips']:.2f} spawner round trips per spawn, "
            f"XADD -> handler p50 {m['p50_s'] * 1000:.1f} ms"
        )
    print(
        f"  global/per-host: round trips {shared['round_trips'] / local['round_trips']:.2f}x "
        f"(+{shared['round_trips'] - local['round_trips']:.2f}), "
        f"p50 {shared['p50_s'] / local['p50_s']:.2f}x; slots left after: {shared['slots_left']}"
    )
    print(f"rate limit {RATE}/s, burst {BURST}, over {WINDOW_S:.0f} s:")
    for name, m in (("three hosts", many), ("one host (per-host path)", one)):
        print(
            f"  {name:<26} {m['rate']:.2f} jobs/s = {m['rate'] / RATE:.3f} of the limit; "
            f"busiest second {m['busiest_second']} = "
            f"{m['busiest_second'] / (RATE + BURST):.2f} of rate + burst"
        )

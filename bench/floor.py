"""The machine's floor for starting work on demand, measured in the run.

What no orchestrator can beat on this machine: a blocked reader waking
after an XADD, a warm Python (one that has imported what a worker imports)
forking a child that runs, and a new Redis connection answering its first
command. A reaction is reported as a ratio to their sum.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

import redis

from bench.harness import ROOT, percentile
from orchestrator.connections import connect

TRIALS = 100
# Each trial starts on an idle machine, as a reaction trial does: a CPU that
# has been idle wakes slower than one kept busy.
SETTLE_S = 0.05

READER = """
import sys, time, redis
r = redis.Redis.from_url(sys.argv[1])
last = "$"
while True:
    reply = r.xread({"floor": last}, block=0, count=1)
    woke = time.time()
    last = reply[0][1][0][0]
    if reply[0][1][0][1].get(b"stop"):
        break
    r.rpush("floor:woke", f"{woke:.6f}")
"""

FORKER = """
import os, sys, time
import orchestrator.worker  # as warm as the fork server
r, w = os.pipe()
for _ in range(int(sys.argv[1])):
    time.sleep(float(sys.argv[2]))
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.write(w, repr(time.perf_counter()).encode().ljust(32))
        os._exit(0)
    t1 = float(os.read(r, 32))
    os.waitpid(pid, 0)
    print(f"{t1 - t0:.6f}")
"""


@dataclass(frozen=True, slots=True)
class Floor:
    wake_s: float  # XADD -> a blocked reader returns (p50)
    fork_s: float  # warm fork -> the child runs (p50)
    connect_s: float  # connect + first command (p50)

    @property
    def total_s(self) -> float:
        return self.wake_s + self.fork_s + self.connect_s

    def describe(self) -> str:
        return (
            f"floor {self.total_s * 1000:.1f} ms = wake {self.wake_s * 1000:.2f} + warm fork "
            f"{self.fork_s * 1000:.2f} + connect and first command {self.connect_s * 1000:.2f} "
            "(p50 each)"
        )


def measure(url: str, trials: int = TRIALS) -> Floor:
    return Floor(_wake(url, trials), _fork(trials), _connect(url, trials))


def _wake(url: str, trials: int) -> float:
    r = redis.Redis.from_url(url)
    r.delete("floor", "floor:woke")
    reader = subprocess.Popen([sys.executable, "-c", READER, url])
    try:
        _wait_blocked(r)
        gaps = []
        for i in range(trials):
            time.sleep(SETTLE_S)  # as before a reaction trial: the machine idle
            sent = time.time()
            r.xadd("floor", {"n": i})
            woke = r.blpop(["floor:woke"], timeout=10)
            assert woke is not None, "the reader did not wake"
            gaps.append(float(woke[1]) - sent)
            _wait_blocked(r)
        r.xadd("floor", {"stop": 1})
        reader.wait(timeout=10)
    finally:
        reader.kill()
    return percentile(gaps, 50)


def _wait_blocked(r: redis.Redis) -> None:
    deadline = time.monotonic() + 10
    while not any(c.get("cmd") == "xread" for c in r.client_list()):
        if time.monotonic() > deadline:
            raise TimeoutError("the reader never blocked")
        time.sleep(0.001)


def _fork(trials: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", FORKER, str(trials), str(SETTLE_S)],
        env=env,
        capture_output=True,
        text=True,
    )
    return percentile([float(line) for line in out.stdout.split()], 50)


def _connect(url: str, trials: int) -> float:
    times = []
    for _ in range(trials):
        time.sleep(SETTLE_S)
        started = time.perf_counter()
        client = connect(url)
        client.ping()
        times.append(time.perf_counter() - started)
        client.close()
    return percentile(times, 50)

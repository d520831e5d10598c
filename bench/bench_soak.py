"""Soak: a million tiny jobs through a two-stage pipeline; Redis memory stays flat.

Queue ``soak_a`` (``then: soak_b``) and queue ``soak_b``, both on the shipped
defaults but for ``max_concurrent: 2`` and ``max_dead_letters: 100``, run
by the real spawner and workers (``bench/workers/soak_worker.py``: the
tiny job; stage B fails one job in 1,000, which is dead-lettered). The jobs
are produced while the pipeline runs, as fast as it takes them: 1,000 at a
time whenever fewer than 5,000 are in it (not finished by stage B; staging a
million first would measure the backlog draining, not the steady state, and
a backlog is never trimmed: it is not delivered yet). Every second:
Redis' ``used_memory`` and the length of each stream. Reported: jobs/s
through both stages, the samples over time, the first half against the
second (used memory second / first: 1.0 is flat), and the lengths against
the retention (10,000, trimmed every ``retention.TRIM_INTERVAL_S``).
``--jobs N`` (default 1,000,000) for a shorter run.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.harness import ROOT, Spawner
from orchestrator.embedded import EmbeddedRedis
from orchestrator.retention import TRIM_INTERVAL_S

A, B = "soak_a", "soak_b"
STREAMS = (A, B, f"{A}:dead", f"{B}:dead")
RETENTION, MAX_DEAD = 10_000, 100
CHUNK, BACKLOG = 1_000, 5_000
SAMPLE_S = 1.0
DROPPED_RE = re.compile(r"Dropped the (\d+) oldest dead letter")


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float
    used_memory: int
    lengths: tuple[int, ...]  # of STREAMS
    keys: int  # in the database
    done: int  # jobs stage B is done with


def config(url: str) -> dict[str, Any]:
    queue = {
        "script": str(ROOT / "bench" / "workers" / "soak_worker.py"),
        "max_concurrent": 2,
        "max_dead_letters": MAX_DEAD,
        "env": {"PYTHONPATH": str(ROOT)},
    }
    return {
        "redis": {"url": url},
        "spawner": {"host": "bench", "status_interval": 3600},
        "queues": {
            A: {**queue, "label": "SOAK_A", "then": B},
            B: {**queue, "label": "SOAK_B", "max_attempts": 1},
        },
    }


def group(r: redis.Redis, stream: str) -> dict[str, Any]:
    rows: Any = r.xinfo_groups(stream)
    return {k if isinstance(k, str) else k.decode(): v for k, v in rows[0].items()} if rows else {}


def done_count(r: redis.Redis) -> int:
    """Jobs stage B has finished: read by its group and not pending."""
    g = group(r, B)
    return int(g.get("entries-read") or 0) - int(g.get("pending", 0)) if g else 0


def sample(r: redis.Redis, started: float) -> Sample:
    pipe = r.pipeline(transaction=False)
    pipe.info("memory")
    pipe.dbsize()
    for stream in STREAMS:
        pipe.xlen(stream)
    memory, keys, *lengths = pipe.execute()
    used = int(memory["used_memory"])
    return Sample(time.monotonic() - started, used, tuple(lengths), int(keys), done_count(r))


def produce(r: redis.Redis, start: int, count: int) -> None:
    pipe = r.pipeline(transaction=False)
    for n in range(start, start + count):
        pipe.xadd(A, {"payload": json.dumps({"n": n})})
    pipe.execute()


@dataclass(frozen=True, slots=True)
class Run:
    elapsed_s: float
    samples: list[Sample]  # during the run
    final: Sample  # after the last trims
    dropped: int  # dead letters dropped, as the spawner's log counts them


def soak(url: str, workdir: Path, jobs: int) -> Run:
    r = redis.Redis.from_url(url)
    r.flushall()
    for stream in (A, B):
        r.xgroup_create(stream, "workers", "0", mkstream=True)
    with Spawner(workdir, "soak", config(url)) as spawner:
        samples: list[Sample] = []
        produced, started = 0, time.monotonic()
        next_sample = started
        while (done := done_count(r)) < jobs:
            now = time.monotonic()
            if now >= next_sample:
                samples.append(sample(r, started))
                next_sample += SAMPLE_S
            if produced < jobs and produced - done < BACKLOG:
                produce(r, produced, min(CHUNK, jobs - produced))
                produced += min(CHUNK, jobs - produced)
            else:
                time.sleep(0.005)
        elapsed = time.monotonic() - started
        samples.append(sample(r, started))
        time.sleep(TRIM_INTERVAL_S * 2)  # the trims after the last job
        final = sample(r, started)
        log = spawner.text()
    if "Traceback" in log:
        print(log[-3000:])
    dropped = sum(int(m.group(1)) for m in DROPPED_RE.finditer(log))
    return Run(elapsed, samples, final, dropped)


def halves(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    middle = samples[-1].t_s / 2
    return [s for s in samples if s.t_s < middle], [s for s in samples if s.t_s >= middle]


def report(jobs: int, run: Run) -> None:
    mib, elapsed, samples, final = 2**20, run.elapsed_s, run.samples, run.final
    print(f"{jobs:,} tiny jobs through {A} -> {B} (then), real spawner and workers:")
    print(
        f"  {jobs / elapsed:,.0f} jobs/s ({2 * jobs / elapsed:,.0f} stream entries/s) "
        f"over {elapsed:.0f} s"
    )
    streams = "  ".join(f"{s:>11}" for s in STREAMS)
    print(f"  {'t (s)':>7} {'done':>10} {'used MiB':>9} {'keys':>5}  {streams}")
    step = max(1, len(samples) // 10)
    for s in [*samples[::step], samples[-1]]:
        lengths = "  ".join(f"{n:>11,}" for n in s.lengths)
        print(f"  {s.t_s:7.0f} {s.done:10,} {s.used_memory / mib:9.2f} {s.keys:5}  {lengths}")
    first, second = halves(samples)
    for name, part in (("first half", first), ("second half", second)):
        memory = statistics.mean(s.used_memory for s in part) / mib
        longest = ", ".join(
            f"{stream} {max(s.lengths[i] for s in part):,}" for i, stream in enumerate(STREAMS)
        )
        print(f"  {name}: used memory mean {memory:.2f} MiB; longest {longest}")
    ratio = statistics.mean(s.used_memory for s in second) / statistics.mean(
        s.used_memory for s in first
    )
    print(f"  used memory, second half / first half = {ratio:.3f}   (flat: 1.0)")
    lengths = ", ".join(f"{stream} {n:,}" for stream, n in zip(STREAMS, final.lengths, strict=True))
    print(
        f"  after the last trim: {lengths} (retention {RETENTION:,}, max_dead_letters {MAX_DEAD}); "
        f"used memory {final.used_memory / mib:.1f} MiB"
    )
    failed = sum(1 for n in range(jobs) if n % 1000 == 999)
    print(
        f"  dead letters: {failed:,} made, {run.dropped:,} dropped (as logged), "
        f"{final.lengths[3]} kept"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench soak")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs to run (1,000,000)")
    args = parser.parse_args(argv or [])
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        run = soak(server.url, Path(tmp), args.jobs)
    report(args.jobs, run)

"""The announcement pipeline: 1,000 text announcements end to end, SQLite and Postgres.

Subject: the real spawner (``orchestrator run``) with ``config/workers.yaml``
as shipped (AI max 3, UPLOAD max 2 in batches of 50, INVESTOR max 1, the
seed's cooldowns and idle timeouts) but for the AI queue's ``rate_limit``
(the HTTP endpoint's quota: the offline analyser the bench runs has none,
and at 600/min the bench would measure the limit, 10 jobs/s) on a private Redis, against a fresh
database (a new SQLite file; a Postgres schema of its own, dropped after).
The 1,000 jobs are queued at once; the clock runs from the first XADD until
every queue is drained (nothing undelivered or pending, probed every 20 ms).

Baseline: the same three handlers (``AiHandler``, ``UploadHandler``,
``InvestorHandler``) in one loop in one process on the same 1,000 jobs, in
batches of the upload queue's ``batch_size``. The ratio pipeline/baseline is
the orchestration overhead (process start-up, Redis hops, JSON, batching
waits) net of what three AI workers on this machine's cores win back.

Stage split: for the baseline, the seconds spent in each handler; for the
pipeline, from the timestamps Redis puts in stream entry ids: a job's entry
on a stage's input stream and its result on the next stage's stream give
each job's latency through that stage (waiting + handling); the investor's
end is its notification's ``created_at``. Plus the stage's span (first job
in to last result out), when its first worker was spawned (spawner log)
and how many workers it used.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import redis
import yaml
from loguru import logger

from orchestrator.apps.announcements.analysers import make_analyser
from orchestrator.apps.announcements.demo import (
    SpawnerProcess,
    derive_config,
    load_samples,
    wait_until_drained,
)
from orchestrator.apps.announcements.handlers import (
    AiHandler,
    InvestorHandler,
    LazyStore,
    UploadHandler,
)
from orchestrator.apps.announcements.pipeline_settings import DatabaseSettings
from orchestrator.apps.announcements.store import open_store
from orchestrator.config import Config, load_config
from orchestrator.embedded import EmbeddedRedis
from orchestrator.queues import enqueue_jobs, ensure_group
from orchestrator.worker import Job

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "workers.yaml"
JOBS = 1_000
PG_URL_ENV = "ORCH_TEST_DATABASE_URL"  # as the test suite: a database of its own schemas
PG_URL_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
STAGES = (("ai_processing", "AI"), ("supabase_upload", "UPLOAD"), ("investor_processing", "INV"))
SPAWN_RE = re.compile(r"^(\S+ \S+) \|.*Spawned worker \S+ for (\S+) ")
DONE_RE = re.compile(r"\| (\w+?)_\d+\S*: exiting after [\d.]+s, (\d+) done")


@dataclass
class Run:
    backend: str
    mode: str
    wall_s: float
    cpu_s: float  # user + system, of this process (one process) or of the spawner's tree
    stored: int
    notifications: int
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.stored / self.wall_s if self.wall_s else 0.0


def bench_jobs(n: int = JOBS) -> list[dict[str, Any]]:
    """``n`` text announcements: the valid text samples, cycled, with ids of their own."""
    texts = [j for j in load_samples(ROOT) if "text" in j and j.get("symbol")]
    return [{**texts[i % len(texts)], "id": f"BENCH-{i:05d}"} for i in range(n)]


# -- the baseline: three handlers, one loop, one process ----------------------------


def in_process(backend: str, config: Config, db: DatabaseSettings, jobs: Sequence[Any]) -> Run:
    settings = config.sections["analysis"]
    ai = AiHandler(settings, make_analyser(settings, os.environ), config.root)
    upload = UploadHandler(LazyStore(db, config.root))
    investor = InvestorHandler(LazyStore(db, config.root), config.sections["watchlists"])
    size = config.queue("supabase_upload").batch_size
    spent = {"AI": 0.0, "UPLOAD": 0.0, "INV": 0.0}
    logger.disable("orchestrator")  # the investor's per-batch line; workers log to their own
    cpu0, started = time.process_time(), time.perf_counter()
    for start in range(0, len(jobs), size):
        t0 = time.perf_counter()
        records = [ai(dict(job)) for job in jobs[start : start + size]]
        t1 = time.perf_counter()
        results = upload([Job(str(i), {}, 1, r) for i, r in enumerate(records)])
        t2 = time.perf_counter()
        investor([Job(str(i), {}, 1, r) for i, r in enumerate(results) if isinstance(r, dict)])
        t3 = time.perf_counter()
        for stage, took in zip(spent, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            spent[stage] += took
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    logger.enable("orchestrator")
    upload.close()
    investor.close()
    stored, notes = _counts(db, config.root)
    stages = {s: {"busy_s": v} for s, v in spent.items()}
    return Run(backend, "one process", wall, cpu, stored, notes, stages)


def _counts(db: DatabaseSettings, root: Path) -> tuple[int, int]:
    with open_store(db, root) as store:
        return store.count_announcements(), len(store.notifications())


# -- the subject: the real spawner ------------------------------------------------


def pipeline(
    backend: str, config: Config, db: DatabaseSettings, jobs: Sequence[Any], work: Path
) -> Run:
    raw = yaml.safe_load(CONFIG.read_text())
    log_path = work / f"spawner-{backend}.log"
    cpu0 = _children_cpu_s()
    with EmbeddedRedis() as server, log_path.open("wb") as log:
        derived = derive_config(
            raw, config, db, server.url, f"bench-{os.getpid()}", queue_limits={},
            spawner_limits={"status_interval": 1.0},
        )  # fmt: skip
        for key in ("rate_limit", "rate_burst"):  # the endpoint's quota: see the docstring
            derived["queues"]["ai_processing"].pop(key, None)
        path = work / f"{backend}.yaml"
        path.write_text(yaml.safe_dump(derived, sort_keys=False))
        cfg = load_config(path)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        for queue in cfg.queues.values():
            ensure_group(client, queue)
        with SpawnerProcess(path, server.url, cfg, output=log) as spawner:
            _wait_for(lambda: b"Spawner on" in log_path.read_bytes(), 30.0)
            started = time.time()
            enqueue_jobs(client, cfg.queue("ai_processing"), jobs)
            wait_until_drained(client, cfg, spawner, 600.0, poll_s=0.02)
            wall = time.time() - started
            entries = {name: _entry_times(client, name) for name, _ in STAGES}
    cpu = _children_cpu_s() - cpu0  # the spawner, the workers it reaped, redis-server
    stored, notes = _counts(db, config.root)
    stages = _stage_split(entries, _notified_at(db, config.root), started, log_path.read_text())
    return Run(backend, "pipeline", wall, cpu, stored, notes, stages)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_for(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not met")
        time.sleep(0.01)


def _entry_times(client: redis.Redis, stream: str) -> dict[str, float]:
    """Job id -> when its entry was added (epoch seconds, from the entry id)."""
    out: dict[str, float] = {}
    for entry_id, fields in client.xrange(stream) or []:
        if not fields:
            continue
        ident = str(json.loads(fields["payload"])["id"])
        out.setdefault(ident, int(str(entry_id).partition("-")[0]) / 1000.0)
    return out


def _notified_at(db: DatabaseSettings, root: Path) -> dict[str, float]:
    with open_store(db, root) as store:
        return {n.announcement_id: n.created_at.timestamp() for n in store.notifications()}


def _stage_split(
    entries: Mapping[str, Mapping[str, float]],
    notified: Mapping[str, float],
    started: float,
    log: str,
) -> dict[str, dict[str, Any]]:
    ins = [entries[name] for name, _ in STAGES]
    outs = [entries["supabase_upload"], entries["investor_processing"], notified]
    spawns = _spawn_times(log)
    done = _done_counts(log)
    split: dict[str, dict[str, Any]] = {}
    for (_, label), got_in, got_out in zip(STAGES, ins, outs, strict=True):
        latency = [got_out[i] - t for i, t in got_in.items() if i in got_out]
        first_in = min(got_in.values(), default=started)
        first_out, last_out = min(got_out.values(), default=0), max(got_out.values(), default=0)
        split[label] = {
            "first_spawn_s": min(spawns.get(_log_label(label), [first_in])) - first_in,
            "first_out_s": first_out - first_in,
            "span_s": last_out - first_in,
            "steady_per_s": len(got_out) / (last_out - first_out) if last_out > first_out else 0,
            "p50_s": statistics.median(latency) if latency else float("nan"),
            "p95_s": _p95(latency),
            "workers": done.get(_log_label(label).lower(), []),
        }
    return split


def _log_label(label: str) -> str:
    return "INVESTOR" if label == "INV" else label


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))] if ordered else float("nan")


def _spawn_times(log: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for line in log.splitlines():
        m = SPAWN_RE.match(line)
        if m:
            when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            out.setdefault(m.group(2), []).append(when)
    return out


def _done_counts(log: str) -> dict[str, list[int]]:
    """Jobs done per worker, by worker-id prefix (ai, upload, investor)."""
    out: dict[str, list[int]] = {}
    for m in DONE_RE.finditer(log):
        out.setdefault(m.group(1), []).append(int(m.group(2)))
    return out


# -- databases ----------------------------------------------------------------------


@contextmanager
def database(backend: str, work: Path) -> Iterator[DatabaseSettings]:
    """A fresh database: a new SQLite file, or a Postgres schema dropped afterwards."""
    if backend == "sqlite":
        yield DatabaseSettings(url=f"sqlite:///{work}/{uuid.uuid4().hex[:8]}.db")
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    try:
        yield DatabaseSettings(url=pg_url(), schema=schema)
    finally:
        with psycopg.connect(pg_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pg_url() -> str:
    return os.environ.get(PG_URL_ENV) or PG_URL_DEFAULT


def postgres_available() -> str | None:
    try:
        with psycopg.connect(pg_url(), connect_timeout=3) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        return str(exc).splitlines()[0]
    return None


# -- report -------------------------------------------------------------------------


def print_runs(runs: Sequence[Run]) -> None:
    print(f"\n{'database':<9} {'mode':<12} {'wall s':>7} {'ann/s':>7} {'x loop':>7} "
          f"{'CPU s':>6} {'x CPU':>6} {'stored':>7} {'notes':>6}")  # fmt: skip
    base = {r.backend: r for r in runs if r.mode == "one process"}
    for r in runs:
        b = base.get(r.backend)
        ratio = r.wall_s / b.wall_s if b else float("nan")
        cpu_ratio = r.cpu_s / b.cpu_s if b and b.cpu_s else float("nan")
        print(f"{r.backend:<9} {r.mode:<12} {r.wall_s:>7.2f} {r.rate:>7.1f} {ratio:>7.2f} "
              f"{r.cpu_s:>6.2f} {cpu_ratio:>6.2f} {r.stored:>7} {r.notifications:>6}")  # fmt: skip


def print_stages(runs: Sequence[Run]) -> None:
    print("\nStage split. One process: seconds inside each handler (share of wall).")
    for r in (r for r in runs if r.mode == "one process"):
        parts = [
            f"{s} {v['busy_s']:.2f}s ({v['busy_s'] / r.wall_s:.0%})" for s, v in r.stages.items()
        ]
        print(f"  {r.backend:<9} " + "   ".join(parts))
    print("Pipeline, per stage, seconds after its first job arrived: first worker spawned,")
    print("first result out, last result out; steady = results/s from first to last; latency")
    print("per job = its entry on the stage's stream -> its result on the next (wait + work).")
    print(f"  {'database':<9} {'stage':<7} {'spawn':>6} {'1st out':>7} {'last':>6} "
          f"{'steady/s':>8} {'p50':>6} {'p95':>6}  jobs done per worker")  # fmt: skip
    for r in (r for r in runs if r.mode == "pipeline"):
        for label, v in r.stages.items():
            print(f"  {r.backend:<9} {label:<7} {v['first_spawn_s']:>6.2f} "
                  f"{v['first_out_s']:>7.2f} {v['span_s']:>6.2f} {v['steady_per_s']:>8.1f} "
                  f"{v['p50_s']:>6.2f} {v['p95_s']:>6.2f}  {v['workers']}")  # fmt: skip


def main() -> None:
    config = load_config(CONFIG)
    jobs = bench_jobs()
    load = os.getloadavg()
    print(f"{len(jobs)} text announcements; {os.cpu_count()} CPUs; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    backends = ["sqlite"]
    problem = postgres_available()
    if problem is None:
        backends.append("postgres")
    else:
        print(f"postgres skipped: {pg_url()}: {problem}")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        for backend in backends:
            with database(backend, Path(tmp)) as db:
                runs.append(in_process(backend, config, db, jobs))
            with database(backend, Path(tmp)) as db:
                runs.append(pipeline(backend, config, db, jobs, Path(tmp)))
            print(f"  {backend}: done", flush=True)
    print_runs(runs)
    print_stages(runs)
    print("x loop = pipeline wall / one-process wall: the orchestration overhead (< 1 would")
    print("mean the parallel AI workers win back more than the hops cost); x CPU likewise.")

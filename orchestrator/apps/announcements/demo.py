"""``orchestrator demo`` (what ``make run`` runs): the announcement pipeline end to end.

1. Redis: ``ORCH_REDIS_URL`` if set, else a private ``redis-server`` on a
   free loopback port (``EmbeddedRedis``), so the machine's own Redis is
   never touched. The database: ``database.url`` of the config, or
   ``ORCH_DATABASE_URL`` / ``ORCH_DATABASE_SCHEMA``; by default SQLite at
   ``var/demo.db``.
2. The config given (``config/workers.yaml``) is run with demo timings: a
   copy in a temporary directory with every queue's ``idle_timeout`` and
   ``cooldown`` cut to at most 1 s, a status line every second, a short
   ``stop_grace``, and a spawner host name of its own (``demo-<pid>``), so it
   can share a Redis with a real spawner of this host without touching its
   workers. The shipped file keeps seed 004's values (cooldowns 10/5/15 s);
   they are real, and only slow a demo that lasts seconds.
3. The sample announcements (``samples/announcements/announcements.jsonl``,
   PDF paths made absolute) are queued on ``ai_processing``, and the spawner
   (``orchestrator run``) starts as a child process whose log lines go
   straight to the terminal.
4. The demo polls every queue's depth through Redis (entries undelivered,
   entries pending) until all are zero in one consistent probe: every job
   is then stored, notified or dead-lettered, since the runtime forwards a
   result in the same MULTI/EXEC that acknowledges its job.
5. It stops the spawner (SIGTERM; SIGKILL of the whole tree if it outlives
   ``stop_grace`` + 10 s), then Redis, and prints the table read back from
   the database: per category, per symbol, notifications, and the dead
   letters of this run with their errors.

Exit codes: 0 done; 1 the pipeline did not finish within the deadline
(``ORCH_DEMO_TIMEOUT_S``, default 90 s), the spawner died, or Ctrl-C; 2 a bad
config. Nothing it started is left running in any case.

Re-runs are idempotent, nothing is deleted: announcements are upserted by
id and notifications are unique per (watchlist, announcement), so a second
run stores the same 15 announcements and prints the same table. Delete
``var/demo.db`` to start from an empty database.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psutil
import redis
import yaml

from orchestrator import codec, procs
from orchestrator.apps.announcements.demo_report import format_report, read_report
from orchestrator.apps.announcements.errors import AnnouncementError
from orchestrator.apps.announcements.pipeline_settings import DatabaseSettings, database_with_env
from orchestrator.apps.announcements.store import open_store, sqlite_path
from orchestrator.config import EMBEDDED, REDIS_URL_ENV, Config, ConfigError, load_config
from orchestrator.connections import connect, redact_url
from orchestrator.deadletters import DeadLetter, list_dead
from orchestrator.embedded import EmbeddedRedis, EmbeddedRedisError
from orchestrator.producer import Producer
from orchestrator.queues import DepthProbe

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

SAMPLES = Path("samples/announcements/announcements.jsonl")
FIRST_QUEUE = "ai_processing"
TIMEOUT_ENV = "ORCH_DEMO_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 90.0
POLL_INTERVAL_S = 0.1
STOP_MARGIN_S = 10.0
DEMO_TIMINGS = {"idle_timeout": 1.0, "cooldown": 1.0}  # per queue: at most these
DEMO_SPAWNER = {"status_interval": 1.0, "poll_interval": 0.5, "stop_grace": 3.0}


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


def run_demo(config_path: str | None, data_root: Path | None = None) -> int:
    """The demo pipeline end to end; the exit code (see the module docstring).

    ``data_root``: where a relative SQLite path lies, if not under the
    config's base directory (the shipped config's, inside an installed package)."""
    started = time.monotonic()
    try:
        config = load_config(config_path)
        db = database_with_env(config.sections["database"], os.environ)
        if data_root is not None and db.url.startswith("sqlite:///"):
            db = replace(db, url="sqlite:///" + sqlite_path(db.url, data_root))
        timeout_s = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
    except (ConfigError, ValueError) as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [f"{TIMEOUT_ENV}: {exc}"]
        for line in problems:
            say(line)
        return EXIT_USAGE
    if FIRST_QUEUE not in config.queues:
        say(f"{config.path}: the demo needs the queue {FIRST_QUEUE!r}")
        return EXIT_USAGE
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        table = _run(config, db, timeout_s)
    except (DemoError, AnnouncementError, EmbeddedRedisError) as exc:
        say(f"failed: {exc}")
        return EXIT_FAILURE
    except redis.RedisError as exc:
        say(f"failed: Redis unavailable: {exc}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        say("interrupted: everything it started was stopped")
        return EXIT_FAILURE
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(table, flush=True)
    say(f"finished in {time.monotonic() - started:.1f}s")
    return EXIT_OK


def _run(config: Config, db: DatabaseSettings, timeout_s: float) -> str:
    """Redis, spawner, samples, wait, stop; the final table."""
    with contextlib.ExitStack() as stack:
        redis_url = _redis_url(stack)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orch-demo-")))
        raw = yaml.safe_load(Path(str(config.path)).read_text())
        derived = derive_config(raw, config, db, redis_url, f"demo-{os.getpid()}")
        demo_path = workdir / "workers.yaml"
        demo_path.write_text(yaml.safe_dump(derived, sort_keys=False))
        demo = load_config(demo_path)
        client = connect(redis_url, timeout_s=10, decode=True, fail_fast=False)
        stack.callback(client.close)
        marks = dead_letter_marks(client, demo)
        jobs = load_samples(config.root)
        Producer(demo, client).enqueue_many(FIRST_QUEUE, jobs)
        say(f"queued {len(jobs)} sample jobs on {FIRST_QUEUE}; database {redact_url(db.url)}")
        spawner = stack.enter_context(SpawnerProcess(demo_path, redis_url, demo))
        wait_until_drained(client, demo, spawner, timeout_s)
        dead = dead_letters_since(client, demo, marks)
    with open_store(db, config.root) as store:
        report = read_report(store)
    return render(format_report(report, _count(dead)), dead)


def _redis_url(stack: contextlib.ExitStack) -> str:
    """``ORCH_REDIS_URL`` if set (``embedded`` means a private one), else a private server."""
    url = os.environ.get(REDIS_URL_ENV)
    if url and url != EMBEDDED:
        say(f"using Redis at {redact_url(url)} ({REDIS_URL_ENV})")
        return url
    server = stack.enter_context(EmbeddedRedis())
    say(f"started a private Redis on {server.url} (PID: {server.pid})")
    return server.url


def derive_config(
    raw: Mapping[str, Any],
    config: Config,
    db: DatabaseSettings,
    redis_url: str,
    host: str,
    *,
    queue_limits: Mapping[str, float] = DEMO_TIMINGS,
    spawner_limits: Mapping[str, float] = DEMO_SPAWNER,
) -> dict[str, Any]:
    """The config file ``raw`` (``config`` parsed) to run from anywhere (pure).

    Script paths and a relative SQLite path become absolute, so the copy can
    live in any directory (a ``command`` is kept as is: it runs in that
    directory, so it should name absolute paths); Redis, the database and the
    spawner's host name are set; the timings named in ``queue_limits`` and
    ``spawner_limits`` are capped at the values given (the demo's by default).
    """
    out = dict(raw)
    out["redis"] = {"url": redis_url}
    spawner = dict(out.get("spawner") or {})
    for key, limit in spawner_limits.items():
        spawner[key] = min(float(spawner.get(key, limit)), limit)
    out["spawner"] = {**spawner, "host": host}
    queues: dict[str, Any] = {}
    for name, entry in (raw.get("queues") or {}).items():
        queue = dict(entry)
        if "script" in queue:  # resolved against the root: (python, <root>/<script>)
            queue["script"] = config.queues[name].argv[-1]
        defaults = {"idle_timeout": config.queues[name].idle_timeout_s, "cooldown": 0.0}
        for key, limit in queue_limits.items():
            queue[key] = min(float(queue.get(key, defaults[key])), limit)
        queues[name] = queue
    out["queues"] = queues
    url = db.url
    if url.startswith("sqlite:///"):
        url = "sqlite:///" + sqlite_path(url, config.root)
    out["database"] = {**(raw.get("database") or {}), "url": url, "schema": db.schema}
    return out


def load_samples(root: Path, path: Path = SAMPLES) -> list[dict[str, Any]]:
    """The sample jobs, their ``pdf_path`` made absolute under ``root``."""
    jobs = []
    for line in (root / path).read_text().splitlines():
        if line.strip():
            job = json.loads(line)
            if isinstance(job.get("pdf_path"), str):
                job["pdf_path"] = str(root / job["pdf_path"])
            jobs.append(job)
    return jobs


class SpawnerProcess:
    """``orchestrator run -c <config>`` as a child; its log goes to ``output`` (else ours).

    It dies with us (PR_SET_PDEATHSIG), and its workers die with it. Leaving
    the context stops it: SIGTERM, then SIGKILL of the whole tree after
    ``stop_grace`` + 10 s; descendants seen alive at any point are killed if
    they outlive it. Start it from a single-threaded process only (the
    death signal is set up between fork and exec).
    """

    def __init__(
        self, config_path: Path, redis_url: str, config: Config, output: IO[bytes] | None = None
    ) -> None:
        env = {**os.environ, REDIS_URL_ENV: redis_url, "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "orchestrator", "run", "-c", str(config_path)]
        self.grace_s = config.spawner.stop_grace_s + STOP_MARGIN_S
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=str(config.root),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            preexec_fn=procs.die_with_parent,
        )
        self.seen: dict[int, psutil.Process] = {}

    def __enter__(self) -> SpawnerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def exit_code(self) -> int | None:
        self.remember_tree()
        return self.popen.poll()

    def remember_tree(self) -> None:
        for proc in procs.snapshot_tree(self.popen.pid):
            self.seen.setdefault(proc.pid, proc)

    def stop(self) -> int:
        self.remember_tree()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                say(f"spawner still running after {self.grace_s:.0f}s: killing its tree")
                procs.kill_tree(self.popen.pid, 0.0, reap=False)
                self.popen.wait()
        left = [p for p in self.seen.values() if p.pid != self.popen.pid and p.is_running()]
        procs.signal_tree(left, signal.SIGKILL)
        return int(self.popen.returncode)


def wait_until_drained(
    client: redis.Redis,
    config: Config,
    spawner: SpawnerProcess,
    timeout_s: float,
    poll_s: float = POLL_INTERVAL_S,
) -> float:
    """Poll every queue until none has entries undelivered or pending; the seconds it took.

    Raises ``DemoError`` when ``timeout_s`` passes first or the spawner exits.
    """
    probe = DepthProbe(config.queues.values())
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        depths = probe.measure(client)
        busy = {
            n: d.undelivered + d.pending for n, d in depths.items() if d.undelivered + d.pending
        }
        if not busy:
            return time.monotonic() - started
        code = spawner.exit_code()
        if code is not None:
            raise DemoError(f"the spawner exited with code {code} before the pipeline finished")
        if time.monotonic() >= deadline:
            left = ", ".join(f"{n}: {k}" for n, k in busy.items())
            raise DemoError(
                f"the pipeline did not finish within {timeout_s:g}s ({TIMEOUT_ENV}); "
                f"jobs still queued or in progress: {left}"
            )
        time.sleep(poll_s)


@dataclass(frozen=True, slots=True)
class DeadRow:
    queue: str
    job_id: str
    error: str


def dead_letter_marks(client: redis.Redis, config: Config) -> dict[str, str]:
    """The last dead letter of each queue now, so a run reports only its own."""
    marks = {}
    for name, queue in config.queues.items():
        last = client.xrevrange(queue.dead_stream, count=1)
        marks[name] = str(last[0][0]) if last else "0-0"
    return marks


def dead_letters_since(
    client: redis.Redis, config: Config, marks: Mapping[str, str]
) -> list[DeadRow]:
    rows = []
    for name, queue in config.queues.items():
        for letter in list_dead(client, queue, limit=10_000):
            if _id_after(letter.id, marks.get(name, "0-0")):
                rows.append(DeadRow(name, _job_id(letter), letter.error))
    return rows


def render(table: str, dead: list[DeadRow]) -> str:
    details = [f"  {d.queue:<20} {d.job_id:<28} {d.error}" for d in dead]
    return "\n".join(["", "=" * 72, table, *details, "=" * 72])


def _count(dead: list[DeadRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in dead:
        counts[row.queue] = counts.get(row.queue, 0) + 1
    return counts


def _job_id(letter: DeadLetter) -> str:
    with contextlib.suppress(codec.BadPayload):
        ident = codec.decode_payload(letter.original_fields.get(codec.PAYLOAD, "")).get("id")
        if ident is not None:
            return str(ident)
    return letter.original_id


def _id_after(entry_id: str, mark: str) -> bool:
    def key(i: str) -> tuple[int, int]:
        ms, _, seq = i.partition("-")
        return int(ms), int(seq or 0)

    return key(entry_id) > key(mark)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)

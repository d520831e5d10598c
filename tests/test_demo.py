"""``orchestrator demo`` run as a user runs it: exit code, the table, nothing left running.

Each run is a subprocess in a session of its own; while it runs, every
descendant is recorded (spawner, workers, redis-server), and once it has
exited none of them, and nothing else in its session, may still be alive.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from orchestrator.apps.announcements.pipeline_settings import DatabaseSettings
from orchestrator.apps.announcements.store import open_store
from orchestrator.embedded import free_port
from tests.helpers import TextRedis
from tests.spawn_harness import ROOT

DEMO_TIMEOUT_S = 100.0
DEAD_IDS = ("BSE-20241022-LT-01", "BSE-20241030-MALFORMED-01")


@dataclass
class DemoRun:
    code: int
    output: str
    seen: dict[int, tuple[psutil.Process, str]]  # pid -> (process, its command line)

    @property
    def commands(self) -> list[str]:
        return [cmd for _, cmd in self.seen.values()]

    def survivors(self, sid: int) -> list[psutil.Process]:
        alive = [p for p, _ in self.seen.values() if _alive(p)]
        in_session = [p for p in psutil.process_iter() if _sid(p.pid) == sid and _alive(p)]
        return alive + in_session


def run_demo(
    tmp_path: Path,
    env: Mapping[str, str],
    command: Sequence[str] = (sys.executable, "-m", "orchestrator"),
    cwd: Path = ROOT,
) -> DemoRun:
    """``command demo`` to completion in ``cwd``, recording its descendants as it goes."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    full_env.update(env)
    out_path = tmp_path / f"demo-{time.monotonic_ns()}.out"
    seen: dict[int, tuple[psutil.Process, str]] = {}
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "demo"],
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                record_tree(proc.pid, seen)
                time.sleep(0.02)  # sampling interval of the process tree, not a wait
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    run = DemoRun(proc.returncode, out_path.read_text(errors="replace"), seen)
    assert not run.survivors(proc.pid), f"left behind: {run.survivors(proc.pid)}"
    return run


def record_tree(pid: int, seen: dict[int, tuple[psutil.Process, str]]) -> None:
    """Add descendants; refresh command lines (a child seen before its exec shows ours)."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            known = seen.get(child.pid, (child, ""))[0]
            with contextlib.suppress(psutil.Error):
                seen[child.pid] = (known, " ".join(known.cmdline()))
            seen.setdefault(child.pid, (known, ""))


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def assert_table(output: str) -> None:
    assert "Announcements stored: 15" in output
    for heading in ("By category:", "By symbol:", "Notifications by watchlist:", "Dead letters:"):
        assert heading in output
    assert "financial_results" in output and "HDFCBANK" in output
    assert "ai_processing                     2" in output  # the dead-letter count
    for ident in DEAD_IDS:
        assert ident in output
    assert "PDF has no extractable text (scanned image?)" in output
    assert "symbol: is required" in output


def test_demo_on_embedded_redis_and_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    run = run_demo(tmp_path, {"ORCH_DATABASE_URL": f"sqlite:///{db}"})
    assert run.code == 0, run.output
    assert "started a private Redis" in run.output
    assert "📊 AI:" in run.output and "Spawned worker" in run.output  # status lines streamed
    assert_table(run.output)
    assert any("redis-server" in n for n in run.commands)
    spawner = re.search(r"Spawner on \S+ \(PID: (\d+)\)", run.output)
    assert spawner and int(spawner.group(1)) in run.seen  # watched, so checked for survival
    workers = {
        int(pid) for pid in re.findall(r"Spawned worker \S+ for \w+ \(PID: (\d+)", run.output)
    }
    assert len(workers) >= 3 and workers <= set(run.seen)  # every worker was watched
    with open_store(DatabaseSettings(url=f"sqlite:///{db}"), tmp_path) as store:
        assert store.count_announcements() == 15
        assert len(store.notifications()) > 0


def test_demo_on_real_redis_and_postgres_reruns_idempotently(
    tmp_path: Path, redis_url: str, r: TextRedis, pg_url: str, pg_schema: str
) -> None:
    env = {"ORCH_REDIS_URL": redis_url, "ORCH_DATABASE_URL": pg_url}
    env["ORCH_DATABASE_SCHEMA"] = pg_schema
    first = run_demo(tmp_path, env)
    assert first.code == 0, first.output
    second = run_demo(tmp_path, env)
    assert second.code == 0, second.output
    for run in (first, second):
        assert "using Redis at" in run.output and "started a private Redis" not in run.output
        assert_table(run.output)  # the second run reports its own two dead letters only
    assert r.xlen("ai_processing:dead") == 4
    table = second.output[second.output.index("Announcements stored") :]
    assert (
        table.split("Dead letters:")[0]
        == first.output[first.output.index("Announcements stored") :].split("Dead letters:")[0]
    )
    with open_store(DatabaseSettings(url=pg_url, schema=pg_schema), tmp_path) as store:
        assert store.count_announcements() == 15


def test_demo_that_cannot_finish_exits_1_and_stops_everything(tmp_path: Path) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    run = run_demo(tmp_path, {"ORCH_DATABASE_URL": closed, "ORCH_DEMO_TIMEOUT_S": "4"})
    assert run.code == 1, run.output
    assert "demo: failed: the pipeline did not finish within 4s" in run.output
    assert "jobs still queued or in progress:" in run.output  # named per queue

"""Run ``orchestrator run`` as a real process in tests, and read its log."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.helpers import wait_until

WORKERS = Path(__file__).parent / "workers"
ROOT = Path(__file__).parent.parent
# The harness' spawner keys, quicker than the shipped ones; tests of what a
# user sees pass ``shipped_defaults=True`` instead.
HARNESS_SPAWNER = {"poll_interval": 0.2, "status_interval": 1.0, "stop_grace": 2}
SPAWN_RE = re.compile(r"Spawned worker (\S+) for (\S+) \(PID: (\d+), Total: (\d+)\)")


def worker_script(name: str) -> str:
    return str(WORKERS / name)


class SpawnerProc:
    """A spawner subprocess with its own config file and log file."""

    def __init__(
        self,
        tmp: Path,
        redis_url: str,
        queues: Mapping[str, Any],
        spawner: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        name: str = "spawner",
        log: Mapping[str, Any] | None = None,
        shipped_defaults: bool = False,
    ) -> None:
        """``shipped_defaults``: the spawner keys a user gets (only ``host``
        and what ``spawner`` names are set); else the harness' quicker ones."""
        # The orchestrator it runs (an installed one's script), and from where.
        self.command: Sequence[str] = (sys.executable, "-m", "orchestrator")
        self.cwd = ROOT
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.out = self.dir / "out"
        self.config_path = self.dir / "workers.yaml"
        self.log_path = self.dir / "spawner.log"
        quick = {} if shipped_defaults else HARNESS_SPAWNER
        settings = {**quick, "host": f"test-{name}", **(spawner or {})}
        config: dict[str, Any] = {
            "redis": {"url": redis_url},
            "spawner": settings,
            "queues": dict(queues),
        }
        if log:
            config["log"] = dict(log)
        self.write_config(config)
        self.env = {**os.environ, "TEST_OUT": str(self.out), **(env or {})}
        self.env.pop("ORCH_REDIS_URL", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen_pids: set[int] = set()

    def write_config(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def start(self, ready: str | None = "Spawner on") -> SpawnerProc:
        """Start it; wait for the log line ``ready`` (None: a level above INFO hides it)."""
        self.log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.command, "run", "-c", str(self.config_path)],
            cwd=self.cwd,
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: see kill_everything
        )
        if ready is not None:
            self.wait_log(ready)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def lines(self, needle: str = "") -> list[str]:
        return [line for line in self.text().splitlines() if needle in line]

    def wait_log(self, needle: str, count: int = 1, timeout_s: float = 15.0) -> list[str]:
        return wait_until(
            lambda: (found := self.lines(needle)) and len(found) >= count and found,
            timeout_s,
            message=lambda: f"{count} x {needle!r} not in log:\n{self.text()[-3000:]}",
        )

    def spawned(self) -> list[tuple[str, str, int, int]]:
        out = []
        for m in SPAWN_RE.finditer(self.text()):
            pid = int(m.group(3))
            self.seen_pids.add(pid)
            out.append((m.group(1), m.group(2), pid, int(m.group(4))))
        return out

    def live_workers(self) -> list[psutil.Process]:
        """Workers the spawner logged as spawned that are its live children."""
        pids = {pid for _, _, pid, _ in self.spawned()}
        try:
            kids = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        return [k for k in kids if k.pid in pids and _alive(k)]

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout_s)
        self.log_file.close()
        return code

    def kill_everything(self) -> None:
        """Cleanup after a test, whatever state it left.

        The spawner runs in a session of its own, so its workers and their
        children share its process group: one killpg reaches them all, even
        those it started a moment ago (supervisord's killasgroup, in short).
        """
        self.spawned()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        for pid in self.seen_pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                _kill_tree(psutil.Process(pid))


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill_tree(p: psutil.Process) -> None:
    try:
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for q in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            q.kill()


@pytest.fixture
def spawner_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[SpawnerProc] = []

    def make(redis_url: str, queues: Mapping[str, Any], **kw: Any) -> SpawnerProc:
        proc = SpawnerProc(tmp_path, redis_url, queues, **kw)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.kill_everything()

"""The shipped supervisord.conf runs the orchestrator and stops it cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import yaml

from orchestrator.procs import pid_alive
from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import ROOT, SPAWN_RE, worker_script

BIN = Path(sys.executable).parent


def test_supervisord_starts_and_stops_the_orchestrator(
    tmp_path: Path, redis_url: str, r: TextRedis
) -> None:
    conf = (ROOT / "supervisord.conf").read_text()
    environment = [line for line in conf.splitlines() if line.startswith("environment=")]
    assert environment and all("ORCH_REDIS_URL" not in line for line in environment)
    conf = conf.replace("%(here)s/var", str(tmp_path)).replace("%(here)s", str(ROOT))
    conf = conf.replace(f"{ROOT}/.venv/bin/orchestrator", str(BIN / "orchestrator"))
    conf_path = tmp_path / "supervisord.conf"
    conf_path.write_text(conf)
    config = {
        "redis": {"url": redis_url},
        "spawner": {"poll_interval": 0.2, "stop_grace": 1, "host": "test-supervised"},
        "queues": {
            "ai_processing": {
                "label": "AI",
                "script": worker_script("stubborn.py"),
                "max_concurrent": 3,
                "cooldown": 0,
            }
        },
    }
    (tmp_path / "workers.yaml").write_text(yaml.safe_dump(config))
    env = {
        **{k: v for k, v in os.environ.items() if k != "ORCH_REDIS_URL"},
        "ORCH_CONFIG": str(tmp_path / "workers.yaml"),
        "TEST_OUT": str(tmp_path / "out"),
    }
    ctl = [str(BIN / "supervisorctl"), "-c", str(conf_path)]
    daemon = subprocess.Popen([str(BIN / "supervisord"), "-n", "-c", str(conf_path)], env=env)
    try:
        log = tmp_path / "orchestrator.log"
        wait_until(lambda: log.exists() and "Spawner on test-supervised" in log.read_text(), 20)
        for i in range(3):
            r.xadd("ai_processing", {"payload": json.dumps({"id": i})})
        wait_until(lambda: len(SPAWN_RE.findall(log.read_text())) == 3, 15)
        trees = wait_until(
            lambda: (t := list((tmp_path / "out").glob("*.tree"))) and len(t) == 3 and t
        )
        pids = [int(p) for t in trees for p in t.read_text().split()]
        assert all(pid_alive(p) for p in pids)
        shell = subprocess.run(  # the operator's shell: same file, so the same Redis
            [str(BIN / "orchestrator"), "status"], capture_output=True, text=True, env=env
        )
        assert shell.returncode == 0 and "test-supervised" in shell.stdout, shell.stderr
        stop = subprocess.run(
            [*ctl, "stop", "orchestrator"], capture_output=True, text=True, timeout=60
        )
        assert "stopped" in stop.stdout, stop.stdout + stop.stderr
        assert [p for p in pids if pid_alive(p)] == []
        assert "Spawner on test-supervised stopped" in log.read_text()
    finally:
        subprocess.run([*ctl, "shutdown"], capture_output=True, timeout=60)
        daemon.wait(timeout=30)
        for p in psutil.process_iter():
            if "stubborn.py" in " ".join(_cmdline(p)):
                p.kill()


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []

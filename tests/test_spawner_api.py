"""The seed's API, in process: count, can-spawn, spawn, terminate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config import parse_config
from orchestrator.logs import Events
from orchestrator.procs import pid_alive
from orchestrator.spawner import WorkerSpawner
from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import ROOT


def make(redis_url: str, **queue: Any) -> WorkerSpawner:
    config = parse_config(
        {
            "redis": {"url": redis_url},
            "spawner": {"host": "api-test", "stop_grace": 1},
            "queues": {
                "ai_processing": {
                    "command": ["sleep", "30"],
                    "label": "AI",
                    "max_concurrent": 2,
                    **queue,
                }
            },
        },
        env={},
    )
    return WorkerSpawner(config, events=Events())


def test_spawn_count_and_terminate(redis_url: str) -> None:
    spawner = make(redis_url)
    assert spawner.get_active_worker_count("ai_processing") == 0
    assert spawner.can_spawn_worker("ai_processing")
    first = spawner.spawn_worker("ai_processing")
    second = spawner.spawn_worker("ai_processing")
    assert first is not None and second is not None
    assert first.worker_id.startswith("ai_") and first.worker_id != second.worker_id
    assert spawner.get_active_worker_count("ai_processing") == 2
    assert not spawner.can_spawn_worker("ai_processing")  # max_concurrent reached
    assert spawner.spawn_worker("ai_processing") is None
    assert spawner.terminate_worker("ai_processing", first.worker_id) == 1

    def reaped_first() -> bool:
        spawner.step()
        return spawner.get_active_worker_count("ai_processing") == 1

    wait_until(reaped_first, 5)
    assert not pid_alive(first.pid) and pid_alive(second.pid)
    assert spawner.terminate_worker("ai_processing") == 1  # all of the queue

    def reaped_all() -> bool:
        spawner.step()
        return spawner.get_active_worker_count("ai_processing") == 0

    wait_until(reaped_all, 5)
    assert not pid_alive(second.pid)


def test_cooldown_blocks_can_spawn(redis_url: str) -> None:
    spawner = make(redis_url, cooldown=60, max_concurrent=1)
    worker = spawner.spawn_worker("ai_processing")
    assert worker is not None
    spawner.terminate_worker("ai_processing")

    def gone() -> bool:
        spawner.step()
        return spawner.get_active_worker_count("ai_processing") == 0

    wait_until(gone, 5)
    assert not spawner.can_spawn_worker("ai_processing")  # its slot is cooling


def test_json_logs_without_pictographs(tmp_path: Path, redis_url: str, r: TextRedis) -> None:
    config = {
        "redis": {"url": redis_url},
        "log": {"format": "json", "emoji": False},
        "spawner": {"host": "json-test", "poll_interval": 0.2},
        "queues": {"ai_processing": {"command": ["true"], "label": "AI", "cooldown": 60}},
    }
    path = tmp_path / "workers.yaml"
    path.write_text(yaml.safe_dump(config))
    r.xadd("ai_processing", {"payload": "{}"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "-c", str(path)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[dict[str, Any]] = []
    assert proc.stderr is not None
    for raw in proc.stderr:
        lines.append(json.loads(raw))
        if lines[-1].get("event") == "exit":
            break
    proc.terminate()
    assert proc.wait(timeout=10) == 0
    spawn = next(line for line in lines if line.get("event") == "spawn")
    assert spawn["message"].startswith("Spawned worker ai_")
    assert spawn["queue"] == "ai_processing" and isinstance(spawn["pid"], int)
    assert {"time", "level", "message", "event"} <= set(spawn)
    exit_line = next(line for line in lines if line.get("event") == "exit")
    assert exit_line["code"] == 0 and exit_line["runtime_s"] >= 0
    assert not any(ch in line["message"] for line in lines for ch in "🚀🏁📊🟢💀")

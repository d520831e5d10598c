"""config/workers.yaml: defaults, validation with key paths, orchestrator check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import Backend, ConfigError, load_config, parse_config

ROOT = Path(__file__).parent.parent


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_shipped_config_has_the_seed_queues() -> None:
    config = load_config(ROOT / "config" / "workers.yaml")
    got = {
        n: (q.label, q.max_concurrent, q.cooldown_s, q.max_runtime_s)
        for n, q in config.queues.items()
    }
    assert got["ai_processing"] == ("AI", 3, 10.0, 300.0)
    assert got["supabase_upload"] == ("UPLOAD", 2, 5.0, 180.0)
    assert got["investor_processing"] == ("INVESTOR", 1, 15.0, 240.0)
    assert config.queues["ai_processing"].then == "supabase_upload"
    assert config.queues["ai_processing"].argv == (
        sys.executable,
        str(ROOT / "workers" / "ephemeral_ai_worker.py"),
    )


def test_defaults() -> None:
    config = parse_config({"queues": {"q": {"command": ["true"]}}}, env={})
    q = config.queues["q"]
    assert (q.label, q.backend, q.stream, q.group) == ("Q", Backend.STREAM, "q", "workers")
    assert (q.max_concurrent, q.cooldown_s, q.max_runtime_s, q.jobs_per_worker) == (1, 0, 300, 1)
    assert (q.idle_timeout_s, q.max_attempts, q.then) == (5.0, 3, None)
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.spawner.poll_interval_s == 1.0
    assert config.spawner.max_total_workers >= 4


def test_env_overrides_redis_url() -> None:
    config = parse_config(
        {"queues": {"q": {"command": ["true"]}}}, env={"ORCH_REDIS_URL": "redis://elsewhere:1/2"}
    )
    assert config.redis_url == "redis://elsewhere:1/2"


def test_every_problem_is_named_with_its_path() -> None:
    got = problems(
        {
            "spawner": {"poll_interval": "fast", "max_total_workers": 0, "stop_grace": -1},
            "queues": {
                "ai": {"script": __file__, "max_concurrent": 0, "bogus": 1, "then": "nowhere"},
                "up": {"command": "not-a-list"},
                "none": {},
                "both": {"script": "a", "command": ["b"]},
                "kind": {"script": __file__, "backend": "kafka"},
            },
            "extra": 1,
        }
    )
    assert set(got) == {
        "spawner.poll_interval: must be a number, got str 'fast'",
        "spawner.max_total_workers: must be 'auto' or an integer 1-100000, got 0",
        "spawner.stop_grace: must be >= 0, got -1",
        "queues.ai.max_concurrent: must be >= 1, got 0",
        "queues.ai.bogus: unknown key",
        "queues.ai.then: names unknown queue 'nowhere'",
        "queues.up.command: must be a list of strings, got str 'not-a-list'",
        "queues.none: exactly one of 'script' or 'command' is required",
        "queues.both: exactly one of 'script' or 'command' is required",
        "queues.kind.backend: must be one of stream, rq, got 'kafka'",
        "extra: unknown key",
    }


def test_booleans_are_not_numbers() -> None:
    assert problems({"queues": {"q": {"command": ["true"], "max_concurrent": True}}}) == [
        "queues.q.max_concurrent: must be an integer, got bool True"
    ]


def test_two_queues_cannot_share_a_stream() -> None:
    assert problems(
        {"queues": {"a": {"command": ["true"]}, "b": {"command": ["true"], "stream": "a"}}}
    ) == ["queues.b.stream: 'a' is used by 'a' too"]


def test_check_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("queues:\n  ai: {script: a.py, max_concurrent: 0, cooldwn: 3}\n")
    (tmp_path / "a.py").touch()
    run = [sys.executable, "-m", "orchestrator", "check", "-c"]
    out = subprocess.run([*run, str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "queues.ai.max_concurrent: must be >= 1, got 0 (line 2)",
        "queues.ai.cooldwn: unknown key (line 2)",
    ]
    good = subprocess.run(
        [*run, str(ROOT / "config" / "workers.yaml")], capture_output=True, text=True
    )
    assert good.returncode == 0, good.stderr
    assert "max_concurrent: 3" in good.stdout and "poll_interval: 1.0" in good.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text("queues: [\n")
    out = subprocess.run([*run, str(broken)], capture_output=True, text=True)
    assert out.returncode == 2 and "invalid YAML" in out.stderr


def test_check_prints_a_config_that_loads_back_the_same(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "orchestrator", "check", "-c"]
    first = subprocess.run(
        [*run, str(ROOT / "config" / "workers.yaml")], capture_output=True, text=True, check=True
    ).stdout
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(first)
    second = subprocess.run([*run, str(resolved)], capture_output=True, text=True, check=True)
    assert second.stdout == first

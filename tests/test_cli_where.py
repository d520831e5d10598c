"""The CLI says where it looks: which config file, which Redis, which host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from orchestrator.cli import where
from orchestrator.config import parse_config
from tests.spawn_harness import ROOT


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env if env is not None else clean_env(cwd),
        timeout=30,
    )


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    return {**env, "HOME": str(home), **extra}


def write(path: Path, host: str, redis_url: str = "redis://127.0.0.1:6379/0") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "redis": {"url": redis_url},
        "spawner": {"host": host},
        "queues": {"ai_processing": {"command": ["true"], "label": "AI"}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def found(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    host: str = yaml.safe_load(out.stdout)["spawner"]["host"]
    return host


def test_the_config_is_searched_for_in_the_documented_order(tmp_path: Path) -> None:
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    env = clean_env(home)
    missing = cli("check", cwd=work, env=env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "no config file: give -c FILE or set ORCH_CONFIG; looked for " in missing.stderr
    for place in (
        work / "config" / "workers.yaml",
        work / "workers.yaml",
        home / ".config" / "orchestrator" / "workers.yaml",
        Path("/etc/orchestrator/workers.yaml"),
    ):
        assert str(place) in missing.stderr

    write(home / ".config" / "orchestrator" / "workers.yaml", "from-home")
    assert found(cli("check", cwd=work, env=env)) == "from-home"
    write(work / "workers.yaml", "from-cwd")
    assert found(cli("check", cwd=work, env=env)) == "from-cwd"
    write(work / "config" / "workers.yaml", "from-cwd-config")
    out = cli("check", cwd=work, env=env)
    assert found(out) == "from-cwd-config"
    assert f"{work / 'config' / 'workers.yaml'}: valid; relative paths are from {work}" in (
        out.stderr
    )
    named = write(tmp_path / "named.yaml", "from-env")
    with_env = clean_env(home, ORCH_CONFIG=str(named))
    assert found(cli("check", cwd=work, env=with_env)) == "from-env"
    given = write(tmp_path / "given.yaml", "from-option")
    assert found(cli("check", "-c", str(given), cwd=work, env=with_env)) == "from-option"
    gone = cli("check", cwd=work, env=clean_env(home, ORCH_CONFIG=str(tmp_path / "gone.yaml")))
    assert gone.returncode == 2 and f"{tmp_path / 'gone.yaml'}: cannot read" in gone.stderr


def test_the_shipped_config_works_from_any_directory(tmp_path: Path) -> None:
    shipped = ROOT / "config" / "workers.yaml"
    out = cli("check", cwd=tmp_path, env=clean_env(tmp_path, ORCH_CONFIG=str(shipped)))
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    script = Path(resolved["queues"]["ai_processing"]["command"][-1])
    assert script == ROOT / "workers" / "ephemeral_ai_worker.py" and script.is_file()


def test_commands_with_nothing_to_show_name_the_redis_and_host(
    tmp_path: Path, redis_url: str
) -> None:
    config = str(write(tmp_path / "workers.yaml", "vm-where", redis_url))
    on = f"on {redis_url} (host vm-where)"
    empty = {
        ("status",): on,
        ("dlq", "list", "ai_processing"): f"0 dead letter(s) in ai_processing:dead {on}",
        ("dlq", "retry", "ai_processing"): f"re-queued 0 job(s) on ai_processing of {redis_url}",
        ("dlq", "purge", "--yes", "ai_processing"): "deleted 0 dead letter(s) of ai_processing",
        ("reap",): f"no dead consumers {on}",
        ("streams",): f"Redis {redis_url} (host vm-where)",
        ("batch", "status", "nope"): f"no orch:batch:nope in Redis {redis_url} (host vm-where)",
    }
    for args, says in empty.items():
        out = cli(*args, "-c", config, cwd=tmp_path)
        assert says in out.stdout + out.stderr, (args, out.stdout, out.stderr)
        assert "(host vm-where)" in out.stdout + out.stderr, args


def test_where_redacts_the_password() -> None:
    config = parse_config(
        {
            "redis": {"url": "redis://orch:hunter2@10.0.0.5:6379/0"},
            "spawner": {"host": "vm1"},
            "queues": {"q": {"command": ["true"]}},
        }
    )
    assert where(config) == "redis://orch:***@10.0.0.5:6379/0 (host vm1)"

"""Whatever ``check`` accepts, ``run`` runs: each bad config is refused by both.

Every case is a real file given to the real CLI: ``orchestrator check -c FILE``
and ``orchestrator run -c FILE`` must exit 2 naming the key path and its line
in the file, with no traceback, before anything starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

QUEUE = "queues:\n  ai:\n    command: ['true']\n"


@dataclass(frozen=True)
class Bad:
    text: str | bytes  # the config file
    says: str  # a line of the output starts with it: the key path and the problem
    line: int | None = None  # and ends with " (line N)"
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)  # created next to it, with this mode


CASES = {
    "nan percentage": Bad(
        "spawner:\n  max_memory_percent: .nan\n" + QUEUE,
        "spawner.max_memory_percent: must be a finite number, got nan",
        2,
    ),
    "infinite duration": Bad(
        "spawner:\n  stop_grace: .inf\n" + QUEUE,
        "spawner.stop_grace: must be a finite number, got inf",
        2,
    ),
    "nan in a queue": Bad(
        QUEUE + "    cooldown: -.inf\n", "queues.ai.cooldown: must be a finite number, got -inf", 4
    ),
    "nan in an app section": Bad(
        QUEUE + "database:\n  timeout: .nan\n",
        "database.timeout: must be a finite number, got nan",
        5,
    ),
    "overflowing ttl": Bad(
        "spawner:\n  heartbeat_ttl: 1.0e+300\n" + QUEUE,
        "spawner.heartbeat_ttl: must be <= 86400",
        2,
    ),
    "1e300 is text in YAML": Bad(
        "spawner:\n  heartbeat_ttl: 1e300\n" + QUEUE,
        "spawner.heartbeat_ttl: must be a number, got str '1e300'",
        2,
    ),
    "huge integer": Bad(
        QUEUE + "    max_attempts: " + "9" * 40 + "\n", "queues.ai.max_attempts: must be <= 1000", 4
    ),
    "number past any timer": Bad(
        QUEUE + "scanner:\n  patterns:\n    cooloff: 1.0e+12\n",
        "scanner.patterns.cooloff: must be <= 86400",
        6,
    ),
    "second queues block": Bad(
        QUEUE + "queues:\n  other:\n    command: ['true']\n",
        "queues: duplicate key, on line 1 and line 4",
    ),
    "duplicate nested key": Bad(
        QUEUE + "    cooldown: 1\n    cooldown: 2\n",
        "queues.ai.cooldown: duplicate key, on line 4 and line 5",
    ),
    "not UTF-8": Bad(b"# caf\xe9\n" + QUEUE.encode(), "bad.yaml: not UTF-8: byte 0xe9 at offset 5"),
    "redis url of another scheme": Bad(
        "redis:\n  url: http://127.0.0.1:6379/0\n" + QUEUE,
        "redis.url: must start with one of redis://",
        2,
    ),
    "bad ORCH_REDIS_URL": Bad(
        QUEUE, "$ORCH_REDIS_URL: must start with one of", env={"ORCH_REDIS_URL": "http://x:1"}
    ),
    "empty ORCH_REDIS_URL leaves the file's url checked": Bad(
        "redis:\n  url: http://127.0.0.1:6379/0\n" + QUEUE,
        "redis.url: must start with one of",
        2,
        env={"ORCH_REDIS_URL": ""},
    ),
    "database url of another scheme": Bad(
        QUEUE + "database:\n  url: mysql://app@db/x\n", "database.url: ", 5
    ),
    "script that does not exist": Bad(
        "queues:\n  ai:\n    script: workers/nowhere.py\n",
        "queues.ai.script: no such file: ",
        3,
    ),
    "command not found": Bad(
        "queues:\n  ai:\n    command: [no-such-program-here, x]\n",
        "queues.ai.command: 'no-such-program-here' is not an executable file",
        3,
    ),
    "command not executable": Bad(
        "queues:\n  ai:\n    command: [./tool.sh]\n",
        "queues.ai.command: './tool.sh' is not an executable file",
        3,
        files={"tool.sh": 0o644},
    ),
    "two queues with one label": Bad(
        QUEUE + "    label: AI\n  other:\n    command: ['true']\n    label: AI\n",
        "queues.other.label: 'AI' is the label of 'ai' too",
        7,
    ),
    "two queues with one default label": Bad(
        "queues:\n  ai_fast:\n    command: ['true']\n  ai_slow:\n    command: ['true']\n",
        "queues.ai_slow.label: 'AI' is the label of 'ai_fast' too",
        4,
    ),
    "rate past any bucket": Bad(
        QUEUE + "    rate_limit: 1.0e+300/s\n", "queues.ai.rate_limit: must be like 120/min", 4
    ),
    "a mapping that holds itself": Bad(
        QUEUE + "database: &loop\n  timeout: 5\n  again: *loop\n", "database.again: unknown key", 6
    ),
    "host name with a slash": Bad(
        "spawner:\n  host: vm/1\n" + QUEUE, "spawner.host: must be 1-128 letters", 2
    ),
}


def cli(path: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", command, "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=path.parent,
        env=env,
        timeout=30,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    return {**env, **extra}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
@pytest.mark.parametrize("command", ["check", "run"])
def test_a_bad_config_is_refused_by_check_and_run(tmp_path: Path, case: Bad, command: str) -> None:
    path = tmp_path / "bad.yaml"
    if isinstance(case.text, bytes):
        path.write_bytes(case.text)
    else:
        path.write_text(case.text)
    for name, mode in case.files.items():
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(mode)
    out = cli(path, command, clean_env(**case.env))
    assert out.returncode == 2, out.stdout + out.stderr
    said = [line for line in out.stderr.splitlines() if case.says in line]
    assert said, out.stderr
    if case.line is not None:
        assert said[0].endswith(f" (line {case.line})"), said
    assert "Traceback" not in out.stderr + out.stdout
    assert out.stdout == ""


def test_check_prints_secrets_redacted(tmp_path: Path) -> None:
    config = {
        "redis": {"url": "redis://orch:redis-secret@127.0.0.1:6379/0"},
        "queues": {"ai": {"command": ["true"], "env": {"API_TOKEN": "token-secret"}}},
        "database": {"url": "postgresql://app:pg-secret@db.internal:5432/announcements"},
    }
    path = tmp_path / "workers.yaml"
    path.write_text(yaml.safe_dump(config))
    out = cli(path, "check", clean_env())
    assert out.returncode == 0, out.stderr
    for secret in ("redis-secret", "pg-secret", "token-secret"):
        assert secret not in out.stdout + out.stderr
    shown = yaml.safe_load(out.stdout)
    assert shown["redis"]["url"] == "redis://orch:***@127.0.0.1:6379/0"
    assert shown["database"]["url"] == "postgresql://app:***@db.internal:5432/announcements"
    assert shown["queues"]["ai"]["env"] == {"API_TOKEN": "***"}

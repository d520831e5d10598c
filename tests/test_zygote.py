"""The fork server: warm workers that are still the spawner's own children."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import WORKERS, worker_script


def reports(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.report"))]


def report_queue(**queue_kw: Any) -> dict[str, Any]:
    """A queue of workers that report how they were started and exit with 3."""
    return {
        "script": worker_script("env_report.py"),
        "label": "AI",
        "cooldown": 60,
        "env": {"PYTHONPATH": str(WORKERS / "pathdir"), "EXIT_CODE": "3"},
        **queue_kw,
    }


def run_one(redis_url: str, r: TextRedis, spawner_factory: Any, **queue_kw: Any) -> Any:
    sp = spawner_factory(redis_url, {"ai_processing": report_queue(**queue_kw)})
    sp.start()
    r.xadd("ai_processing", {"payload": "{}"})
    sp.wait_log("exited with code 3")
    return sp, reports(sp.out)[0]


def test_forked_worker_is_warm_and_the_spawners_child(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp, report = run_one(redis_url, r, spawner_factory)
    assert report["warm"] is True  # forked from the fork server, imports done
    assert report["ppid"] == sp.pid  # re-parented: the spawner reaps it
    assert report["value"] == "from PYTHONPATH"
    assert report["main"] == "__main__"
    assert report["argv"] == [worker_script("env_report.py")]
    assert report["pid"] == sp.spawned()[0][2]


def test_interpreter_startup_settings_force_an_exec(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    env = {"PYTHONPATH": str(WORKERS / "pathdir"), "EXIT_CODE": "3", "PYTHONHASHSEED": "7"}
    sp, report = run_one(redis_url, r, spawner_factory, env=env)
    assert report["warm"] is False and report["hashseed"] == "7"
    assert report["ppid"] == sp.pid and report["value"] == "from PYTHONPATH"


def test_fork_server_can_be_switched_off(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp = spawner_factory(
        redis_url, {"ai_processing": report_queue()}, spawner={"fork_server": False}
    )
    sp.start()
    r.xadd("ai_processing", {"payload": "{}"})
    sp.wait_log("exited with code 3")
    assert wait_until(lambda: reports(sp.out))[0]["warm"] is False


def test_workers_planned_together_are_forked_together_each_with_its_own_identity(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp = spawner_factory(redis_url, {"ai_processing": report_queue(max_concurrent=3)})
    sp.start()
    for _ in range(3):
        r.xadd("ai_processing", {"payload": "{}"})
    sp.wait_log("exited with code 3", count=3)
    got = reports(sp.out)
    assert len(got) == 3 and all(rep["warm"] and rep["ppid"] == sp.pid for rep in got)
    spawned = {pid: worker_id for worker_id, _, pid, _ in sp.spawned()}
    assert {rep["pid"] for rep in got} == set(spawned)
    assert {rep["worker_id"] for rep in got} == set(spawned.values())  # its own ORCH_WORKER_ID

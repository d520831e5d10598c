"""The fork server: warm workers that are still the spawner's own children."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from tests.helpers import TextRedis, process_title, wait_until
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
    assert report["ppid"] == sp.pid  # the spawner's own child: it reaps it
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


def test_workers_are_the_spawners_children_from_their_first_instruction() -> None:
    """``procs.fork_sibling`` (clone with CLONE_PARENT): the child's first
    getppid() is already our parent, who reaps it; no re-parenting."""
    import os
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "from orchestrator import procs\n"
        "pid = procs.fork_sibling()\n"
        "if pid == 0:\n"
        "    os.write(2, f'{os.getppid()}\\n'.encode())\n"
        "    os._exit(7)\n"
        "print(pid, flush=True)\n"
    )  # each says its line on its own pipe: the two writes race
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = child.communicate(timeout=30)
    first_ppid, grandchild = int(err), int(out)
    assert first_ppid == os.getpid()  # our child's child is ours
    pid, status = os.waitpid(grandchild, 0)  # and we, not it, reap it
    assert pid == grandchild and os.waitstatus_to_exitcode(status) == 7


def test_the_standby_is_no_worker_and_leaves_with_the_spawner(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    import psutil

    from orchestrator.procs import wait_gone

    sp = spawner_factory(redis_url, {"ai_processing": report_queue(cooldown=0)})
    sp.start()

    def standbys() -> list[psutil.Process]:  # by their process title
        kids = psutil.Process(sp.pid).children()
        return [k for k in kids if process_title(k.pid) == "orch-standby"]

    standby = wait_until(standbys, 10)[0]
    sp.wait_log("📊")
    assert "AI: 0/1 workers" in sp.lines("📊")[-1]  # a standby is never counted
    r.xadd("ai_processing", {"payload": "{}"})
    sp.wait_log("exited with code 3")
    assert reports(sp.out)[0]["pid"] == standby.pid  # it became the worker
    assert sp.spawned()[0][2] == standby.pid
    following = wait_until(lambda: [s for s in standbys() if s.pid != standby.pid], 10)[0]
    assert sp.stop() == 0
    assert wait_gone([following.pid], 5.0) == []  # gone with the spawner


def test_the_fork_server_and_its_standby_leave_with_a_sigkilled_spawner(
    redis_url: str, spawner_factory: Any
) -> None:
    import psutil

    from orchestrator.procs import wait_gone

    sp = spawner_factory(redis_url, {"ai_processing": report_queue(cooldown=0)}).start()

    def titled(title: str) -> list[psutil.Process]:
        return [k for k in psutil.Process(sp.pid).children() if process_title(k.pid) == title]

    standby = wait_until(lambda: titled("orch-standby"), 10)[0]
    server = wait_until(lambda: titled("orch-forkserver"), 10)[0]
    os.kill(sp.pid, signal.SIGKILL)
    assert sp.proc is not None and sp.proc.wait(timeout=10) == -signal.SIGKILL
    assert wait_gone([standby.pid, server.pid], 5.0) == []

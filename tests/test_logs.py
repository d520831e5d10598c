"""One log format: with ``log.format: json`` every line a run writes is one
JSON object (spawner, stream workers, RQ workers, tracebacks); ``log.level``
holds for the workers too; processes carry titles an operator can read."""

from __future__ import annotations

import json
from typing import Any

import psutil
import pytest
import redis
from rq import Queue
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from tests.helpers import TextRedis, process_title, wait_until
from tests.spawn_harness import ROOT, worker_script
from tests.test_rq import rq_queue


def pipeline(**log: Any) -> dict[str, Any]:
    quick = {"cooldown": 0, "idle_timeout": 1, "max_runtime": 60}
    return {
        "jobs": {"label": "JOBS", "script": worker_script("job_worker.py"), **quick},
        "logs": {"label": "LOGS", "script": worker_script("log_worker.py"), **quick},
        "crashy": {"label": "CRASHY", "script": worker_script("crash_worker.py"), **quick},
        "reports": rq_queue(label="REPORTS", max_attempts=1),
    }


def start(
    redis_url: str, spawner_factory: Any, log: dict[str, Any], fork_server: bool = True
) -> tuple[Any, Queue]:
    sp = spawner_factory(
        redis_url,
        pipeline(),
        env={"PYTHONPATH": str(ROOT)},
        log=log,
        spawner={"fork_server": fork_server},
    )
    sp.start(ready=None if log.get("level") == "WARNING" else "Spawner on")
    client = redis.Redis.from_url(redis_url)
    return sp, Queue("reports", connection=client, serializer=JSONSerializer)


def enqueue(r: TextRedis, stream: str, job: dict[str, Any]) -> None:
    r.xadd(stream, {"payload": json.dumps(job)})


def objects(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object (fails on the first that is not one)."""
    lines = text.splitlines()
    assert lines
    parsed = []
    for number, line in enumerate(lines, 1):
        try:
            value = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(value, dict), f"line {number} is not an object: {line!r}"
        parsed.append(value)
    return parsed


@pytest.mark.parametrize("fork_server", [True, False], ids=["forked", "execd"])
def test_json_log_is_one_object_per_line_tracebacks_included(
    redis_url: str, r: TextRedis, spawner_factory: Any, fork_server: bool
) -> None:
    sp, rq = start(redis_url, spawner_factory, {"format": "json"}, fork_server)
    enqueue(r, "jobs", {"id": "fine"})
    enqueue(r, "jobs", {"id": "bad", "action": "raise"})
    enqueue(r, "logs", {"id": "l1"})
    enqueue(r, "crashy", {"id": "c1"})
    rq.enqueue("tests.rqjobs.tasks.record", "rq-fine")
    rq.enqueue("tests.rqjobs.tasks.fail_until_allowed", "rq-bad")
    failed = FailedJobRegistry("reports", connection=rq.connection, serializer=JSONSerializer)
    wait_until(lambda: r.sismember("test:done", "fine") and r.sismember("test:done", "rq-fine"))
    wait_until(lambda: failed.count == 1 and r.xlen("jobs:dead") == 1, 30, message=sp.text)
    sp.wait_log("crash-marker", timeout_s=30)
    sp.wait_log("warning-marker l1")
    assert sp.stop() == 0
    lines = objects(sp.text())
    crashes = [o for o in lines if "crash-marker" in o.get("traceback", "")]
    assert crashes, sp.text()[-3000:]
    crash = crashes[0]
    assert crash["level"] == "CRITICAL" and crash["exception_type"] == "RuntimeError"
    assert crash["traceback"].startswith("Traceback (most recent call last):")
    assert "in load_model" in crash["traceback"]  # the whole traceback, frames and all
    assert not [o for o in lines if o is not crash and o["message"].startswith("  File ")]
    rq_lines = [o for o in lines if str(o.get("logger", "")).startswith("rq.")]
    assert [o for o in rq_lines if "rq-bad not allowed yet" in json.dumps(o)]  # its traceback
    assert [o for o in lines if o["message"] == "info-marker l1" and o["level"] == "INFO"]
    assert [o for o in lines if o["message"] == "print-marker l1" and o["stream"] == "stdout"]
    retried = [o for o in lines if "failed (attempt 1/3), will retry" in o["message"]]
    assert retried and retried[0]["level"] == "WARNING"  # the runtime's own lines
    assert retried[0]["queue"] == "jobs" and retried[0]["worker_id"].startswith("jobs_")
    assert [o for o in lines if o.get("event") == "spawn" and o.get("queue") == "jobs"]


def test_log_level_warning_silences_the_workers_info_lines(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp, rq = start(redis_url, spawner_factory, {"level": "WARNING"})
    enqueue(r, "logs", {"id": "l1"})
    rq.enqueue("tests.rqjobs.tasks.record", "rq-fine")
    wait_until(lambda: r.sismember("test:done", "rq-fine"), 30, message=sp.text)
    sp.wait_log("warning-marker l1", timeout_s=30)
    assert sp.stop() == 0
    text = sp.text()
    assert "info-marker" not in text
    levels = {line.split(" | ")[1].strip() for line in text.splitlines() if " | " in line}
    assert levels and levels <= {"WARNING", "ERROR", "CRITICAL"}, text[-3000:]


def test_processes_carry_titles_an_operator_can_read(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp, rq = start(redis_url, spawner_factory, {})
    enqueue(r, "jobs", {"id": "slow", "action": "sleep", "seconds": 30})
    rq.enqueue("tests.rqjobs.tasks.record", "rq-slow", 30)

    def started() -> set[str]:
        return {entry.split()[0] for entry in r.lrange("test:started", 0, -1)}

    wait_until(lambda: started() == {"slow", "rq-slow"}, 30, message=sp.text)
    assert process_title(sp.pid) == "orch-spawner test-spawner"
    kids = psutil.Process(sp.pid).children()
    assert "orch-forkserver" in {process_title(k.pid) for k in kids}
    by_label = {label: (wid, pid) for wid, label, pid, _ in sp.spawned()}
    worker_id, pid = by_label["JOBS"]
    assert process_title(pid) == f"orch-worker JOBS {worker_id}"
    worker_id, pid = by_label["REPORTS"]
    assert process_title(pid).startswith(f"orch-worker REPORTS {worker_id}: ")

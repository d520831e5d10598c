"""``spawner.metrics_port`` and the history, on a real spawner and real workers.

The exposition is scraped over HTTP while the spawner runs and parsed with
``prometheus_client``'s own parser; its counters are checked against what
happened (the log's spawn and exit lines, the dead-letter stream's length,
the jobs the handlers started), and the history's buckets against the same.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator import keys
from orchestrator.config import SpawnerConfig
from orchestrator.embedded import free_port
from orchestrator.fleet import StopReason
from orchestrator.history import FIELDS, SLOTS, Bucket, History, read_history
from orchestrator.procs import ExitStatus
from orchestrator.status import HostStatus, QueueStatus
from orchestrator.telemetry import Telemetry, exit_cause
from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import ROOT, worker_script

EXIT_RE = re.compile(r"Worker \S+ for JOBS (exited|killed|gone)")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``: (name, labels) -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def test_metrics_count_what_happened(redis_url: str, r: TextRedis, spawner_factory: Any) -> None:
    port = free_port()
    queues = {
        "jobs": {
            "script": worker_script("job_worker.py"),
            "max_concurrent": 2,
            "cooldown": 0,
            "idle_timeout": 0.5,
            "max_attempts": 2,
            "batch_size": 1,
        }
    }
    settings = {"metrics_port": port, "history": True}
    sp = spawner_factory(redis_url, queues, spawner=settings).start()
    sp.wait_log(f"Metrics on http://127.0.0.1:{port}/metrics")
    jobs = [{"id": f"ok{i}"} for i in range(6)] + [{"id": "fails", "action": "raise"}]
    jobs += [{"id": "kills", "action": "kill"}]  # SIGKILLs its worker: the spawner dead-letters it
    for job in jobs:
        r.xadd("jobs", {"payload": json.dumps(job)})

    def settled() -> Samples | None:
        if (
            r.scard("test:done") < 6
            or r.xlen("jobs:dead") < 2
            or r.hlen("orch:leases:test-spawner")
        ):
            return None
        samples = scrape(port)
        exits = len(EXIT_RE.findall(sp.text()))
        counted = total(samples, "orch_worker_exits_total") == exits
        # The gauges are the snapshot the last tick published: a tick behind.
        ticked = total(samples, "orch_queue_dead_letters") == r.xlen("jobs:dead")
        return samples if counted and ticked and total(samples, "orch_queue_workers") == 0 else None

    samples = wait_until(settled, 30, interval_s=0.2, message=lambda: sp.text()[-3000:])
    host = {"host": "test-spawner", "queue": "jobs"}
    assert total(samples, "orch_spawns_total", **host) == len(sp.spawned()) >= 2
    assert total(samples, "orch_worker_exits_total", cause="signal", status="SIGKILL") == 2
    assert total(samples, "orch_queue_dead_letters", **host) == r.xlen("jobs:dead") == 2
    assert total(samples, "orch_dead_lettered_entries_total", **host) == 1  # "kills", twice
    assert total(samples, "orch_recovered_entries_total", **host) == 1  # its first death
    assert total(samples, "orch_recovery_seconds_count", **host) == 1
    assert total(samples, "orch_queue_workers_max", **host) == 2
    assert total(samples, "orch_redis_up") == 1
    assert total(samples, "orch_redis_round_trip_seconds_count") > 1
    # Reaction: the first delivery of every job whose worker lived to report it.
    assert total(samples, "orch_reaction_seconds_count", **host) == 7
    inf = total(samples, "orch_reaction_seconds_bucket", le="+Inf", **host)
    assert inf == 7 and total(samples, "orch_reaction_seconds_sum", **host) < 7 * 5
    assert ("process_cpu_seconds_total", frozenset()) in samples

    # History writes are paced (one a second): wait for the write that holds
    # the last exit, then check that every figure adds up.
    exits = len(EXIT_RE.findall(sp.text()))

    def recorded() -> list[Bucket] | None:
        b = read_history(r, ["test-spawner"])
        seen = (sum(x.queues["jobs"][f] for x in b) for f in ("spawns", "exits"))
        return b if tuple(seen) == (len(sp.spawned()), exits) else None

    buckets = wait_until(recorded, 5, message=lambda: str(r.hgetall("orch:history:test-spawner")))
    assert sum(b.queues["jobs"]["recovered"] for b in buckets) == 1
    assert buckets[-1].queues["jobs"]["dead_letters"] == 2
    assert sp.stop() == 0


def test_grafana_dashboard_names_only_exported_metrics() -> None:
    """Every ``orch_`` name the shipped dashboard queries is one we export."""
    text = (ROOT / "deploy" / "grafana-dashboard.json").read_text()
    dashboard = json.loads(text)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", n) for e in exprs for n in re.findall(r"orch_\w+", e)
    }
    exported = set(re.findall(r'"(orch_\w+)"', (ROOT / "orchestrator" / "metrics.py").read_text()))
    for app in ("scanner", "batch"):
        app_file = next((ROOT / "orchestrator" / "apps" / app).glob("*_app.py"))
        exported |= set(re.findall(r'"(orch_\w+)"', app_file.read_text()))
        exported |= {
            f"orch_scanner_{f}_total"
            for f in re.findall(r'_counter\("(\w+)"', app_file.read_text())
        }
    assert used and used <= exported, used - exported


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        (
            "metrics_port",
            0,
            "spawner.metrics_port: must be a port number 1-65535 (or null: off), got 0",
        ),
        ("metrics_port", "9100", "spawner.metrics_port: must be a port number 1-65535"),
        ("history", "sometimes", "spawner.history: must be auto, true or false, got 'sometimes'"),
    ],
)
def test_bad_telemetry_keys_refused(tmp_path: Path, key: str, value: object, problem: str) -> None:
    config = tmp_path / "workers.yaml"
    config.write_text(json.dumps({"spawner": {key: value}, "queues": {"q": {"command": ["true"]}}}))
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert out.returncode == 2
    assert problem in out.stderr and "Traceback" not in out.stderr


def test_off_means_no_telemetry_at_all() -> None:
    """Metrics and history off: no observer, and the tick's probe has no extra."""
    off = SpawnerConfig(host="h", history="false")
    assert Telemetry.configured(off) is None
    on = Telemetry.configured(SpawnerConfig(host="h", metrics_port=9108, history="false"))
    assert on is not None and on.history is None
    auto = Telemetry.configured(SpawnerConfig(host="h"))
    assert auto is not None and auto.history is not None and not auto.history.watched


def test_exit_causes() -> None:
    killed = ExitStatus(code=None, signal=9)
    assert exit_cause(None, ExitStatus(0, None)) == ("code", "0")
    assert exit_cause(None, killed) == ("signal", "SIGKILL")
    assert exit_cause(StopReason.MAX_RUNTIME, killed) == ("max_runtime", "SIGKILL")
    assert exit_cause(StopReason.MEMORY, ExitStatus(0, None)) == ("memory", "0")
    assert exit_cause(StopReason.SHUTDOWN, ExitStatus(0, None)) == ("stopped", "0")
    assert exit_cause(None, ExitStatus(None, None)) == ("gone", "")


def test_history_is_bounded_to_an_hour(r: TextRedis) -> None:
    """Two hours of buckets leave one hour in the hash; counts are per bucket."""
    now = [1_800_000_000.0]
    telemetry = Telemetry("h1", History("h1", "true", clock=lambda: now[0]))
    snapshot = HostStatus("h1", 1, 0.0, 0.0, [QueueStatus("q", "Q", 1, 2, backlog=5)])
    for _ in range(2 * SLOTS):
        telemetry.spawned("q")
        pipe = r.pipeline(transaction=False)
        telemetry.took(pipe.execute() if telemetry.queue_on(pipe, snapshot) else [], 0.001)
        now[0] += 10.0
    assert r.hlen(keys.history("h1")) == SLOTS
    assert 0 < r.ttl(keys.history("h1")) <= SLOTS * 10 + 10
    buckets = read_history(r, ["h1"], now=now[0])
    assert len(buckets) == SLOTS and buckets[0].t < buckets[-1].t
    assert {b.queues["q"]["spawns"] for b in buckets[:-1]} == {1}
    assert set(buckets[0].queues["q"]) == set(FIELDS) and buckets[0].queues["q"]["backlog"] == 5

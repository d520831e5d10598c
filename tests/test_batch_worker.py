"""The batch worker under a real spawner: results, progress, shards, crashes, stops.

A synthetic dataset (60 symbols x 300 daily bars) is generated once. The
workers load it through ``tests.test_engine_batch.FaultyRepository`` (set
as ``batch.repository``): a symbol named ``FAULT.SYMBOL`` misbehaves as
FAULT says (SLEEP, SPIN, BLOCK hang; EXIT, KILL crash; SLOW sleeps 0.4 s),
then loads SYMBOL. Expected results come from ``scan_serially``.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

from orchestrator.apps.batch.batch_record import ShardRecord
from orchestrator.apps.batch.batch_settings import BatchSettings, parse_batch_settings
from orchestrator.apps.batch.batch_status import BatchStatus, format_line
from orchestrator.apps.batch.engine import ProcessingResult, ScanSpec, scan_serially
from orchestrator.apps.batch.engine.synthetic import symbol_names, write_dataset
from orchestrator.apps.batch.progress import Pacer, ShardProgress
from orchestrator.apps.batch.request import BatchRejected, BatchRequest, shard_bounds
from orchestrator.apps.batch.results import result_line
from orchestrator.apps.batch.submit import build_payload
from orchestrator.cli import cli
from orchestrator.procs import wait_gone
from orchestrator.validate import Problems, Section
from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import ROOT, SpawnerProc
from tests.test_engine_batch import FaultyRepository

SYMBOLS = symbol_names(60)
FORMULA = "rsi(14) < 45 and close > sma(50) or crosses_above(macd(), macd_signal())"
WORKER = str(ROOT / "workers" / "batch_engine_worker.py")
REPOSITORY = "tests.test_engine_batch:FaultyRepository"

# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def candles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("candles")
    write_dataset(root, SYMBOLS, "1d", 300)
    return root


@pytest.fixture(scope="module")
def serial(candles: Path) -> dict[str, dict[str, Any]]:
    """What each plain symbol's result line holds, from a serial run (no timing)."""
    job = BatchRequest("serial", tuple(SYMBOLS), "1d", FORMULA).processing_job()
    spec = ScanSpec.for_job(FaultyRepository(candles), job)
    return {r.symbol: essence(result_line(r)) for r in scan_serially(spec, SYMBOLS)}


def essence(line: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(line)
    record.pop("time_ms")
    return record


def expected(serial: dict[str, dict[str, Any]], symbol: str) -> dict[str, Any]:
    """A faulty symbol that survives its fault answers as its real one."""
    real = symbol.partition(".")[2] or symbol
    return {**serial[real], "symbol": symbol}


class Batches:
    """A spawner with a ``batch_jobs`` queue, and ways to submit and read batches."""

    def __init__(self, sp: SpawnerProc, r: TextRedis, results: Path) -> None:
        self.sp = sp
        self.r = r
        self.results = results

    def submit(self, symbols: list[str], *options: str) -> str:
        cli_args = ["batch", "submit", "-c", str(self.sp.config_path), "--timeframe", "1d"]
        cli_args += ["--symbols", ",".join(symbols), "--formula", FORMULA, *options]
        out = CliRunner().invoke(cli, cli_args)
        assert out.exit_code == 0, out.output
        return out.stdout.strip()

    def hash(self, batch_id: str) -> dict[str, str]:
        key = f"orch:batch:{batch_id}"
        names = [k for k in self.r.hkeys(key) if not k.startswith("part:")]  # parts are binary
        return dict(zip(names, self.r.hmget(key, names), strict=True)) if names else {}

    def wait_state(self, batch_id: str, state: str, timeout_s: float = 30) -> dict[str, str]:
        return wait_until(
            lambda: h if (h := self.hash(batch_id)).get("state") == state else None,
            timeout_s,
            message=lambda: f"{self.hash(batch_id)}\n{self.sp.text()[-3000:]}",
        )

    def lines(self, batch_id: str) -> list[dict[str, Any]]:
        text = (self.results / batch_id / "results.jsonl").read_text()
        return [essence(line) for line in text.splitlines()]

    def summary(self, batch_id: str) -> dict[str, Any]:
        summary: dict[str, Any] = json.loads((self.results / batch_id / "summary.json").read_text())
        return summary

    def shard(self, batch_id: str, index: int) -> dict[str, Any] | None:
        raw = self.r.hget(f"orch:batch:{batch_id}", f"shard:{index}")
        return None if raw is None else dict(json.loads(raw))

    def worker_pid(self, worker_id: str) -> int:
        return next(pid for wid, _, pid, _ in self.sp.spawned() if wid == worker_id)


@pytest.fixture
def batches(
    spawner_factory: Any, redis_url: str, r: TextRedis, candles: Path, tmp_path: Path
) -> Iterator[Any]:
    """``batches(queue=..., batch=...)``: a started spawner for batch jobs."""

    def start(
        queue: dict[str, Any] | None = None,
        batch: dict[str, Any] | None = None,
        log: dict[str, Any] | None = None,
    ) -> Batches:
        batch_queue = {
            "script": WORKER,
            "label": "BATCH",
            "batch_size": 1,
            "cooldown": 0,
            "idle_timeout": 3,
            "max_runtime": 60,
            "env": {"PYTHONPATH": str(ROOT)},
            **(queue or {}),
        }
        sp = spawner_factory(redis_url, {"batch_jobs": batch_queue}, log=log)
        section = {
            "data_root": str(candles),
            "results_dir": str(tmp_path / "results"),
            "repository": REPOSITORY,
            "timeout": 1,
            "max_workers": 2,
            "shard_size": 0,
            **(batch or {}),
        }
        sp.write_config({**sp.config, "batch": section})
        return Batches(sp.start(), r, tmp_path / "results")

    yield start


def with_faults(faults: dict[int, str]) -> list[str]:
    """SYMBOLS with symbol i renamed FAULT.S00ii for each (i, FAULT)."""
    return [f"{faults[i]}.{s}" if i in faults else s for i, s in enumerate(SYMBOLS)]


def tree(pid: int) -> list[int]:
    try:
        return [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


# ------------------------------------------------------------ end to end


def test_json_log_covers_the_batch_worker_and_its_engine(batches: Any) -> None:
    """With ``log.format: json`` the batch worker's lines, and its engine's
    about symbols that crash or time out, are JSON objects, one per line."""
    b = batches(log={"format": "json"})
    batch_id = b.submit(with_faults({1: "KILL", 2: "RAISE", 3: "SLEEP"}))
    b.wait_state(batch_id, "done")
    assert b.sp.stop() == 0
    lines = [json.loads(line) for line in b.sp.text().splitlines()]
    assert all(isinstance(o, dict) and o["message"] for o in lines)
    mine = [o for o in lines if o.get("queue") == "batch_jobs" and o.get("worker_id")]
    assert [o for o in mine if batch_id in o["message"]]


def test_a_batch_gives_the_results_of_a_serial_run(
    batches: Any, serial: dict[str, dict[str, Any]]
) -> None:
    b = batches()
    batch_id = b.submit(SYMBOLS)
    done = b.wait_state(batch_id, "done")
    assert b.lines(batch_id) == [serial[s] for s in SYMBOLS]  # all, once, in order
    summary = b.summary(batch_id)
    matched = [s for s in SYMBOLS if serial[s]["matches"]]
    assert summary["matched_symbols"] == matched and summary["errors"] == 0
    assert (summary["symbols"], summary["ok"], summary["formula"]) == (60, 60, FORMULA)
    assert done["total"] == done["completed"] == "60" and done["errors"] == "0"
    assert done["matched"] == str(len(matched)) and done["results"] == str(b.results / batch_id)
    assert float(done["started_at"]) <= float(done["finished_at"])
    assert b.r.xpending("batch_jobs", "workers")["pending"] == 0  # acknowledged
    status = CliRunner().invoke(cli, ["batch", "status", "-c", str(b.sp.config_path), batch_id])
    assert status.exit_code == 0 and "100.0%" in status.stdout and "60/60" in status.stdout
    assert f"results: {b.results / batch_id}" in status.stdout
    as_json = CliRunner().invoke(
        cli, ["batch", "status", "--json", "-c", str(b.sp.config_path), batch_id]
    )
    reading = json.loads(as_json.stdout)
    assert (reading["state"], reading["percent"], reading["matched"]) == (
        "done",
        100.0,
        len(matched),
    )


def test_progress_is_published_at_most_twice_a_second(batches: Any, r: TextRedis) -> None:
    b = batches()
    symbols = with_faults({i: "SLOW" for i in range(0, 60, 2)})  # about 3 s of sleeping
    before = r.config_get("notify-keyspace-events")["notify-keyspace-events"]
    r.config_set("notify-keyspace-events", "Kh")  # the test sees each write to the hash
    events = r.pubsub()
    try:
        events.subscribe("__keyspace@0__:orch:batch:paced")
        seen: list[tuple[float, int]] = []  # (when, completed)
        batch_id = b.submit(symbols, "--id", "paced")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and b.hash(batch_id).get("state") != "done":
            message = events.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if message is not None:
                when = time.monotonic()
                seen.append((when, int(b.hash(batch_id).get("completed", 0))))
    finally:
        events.close()
        r.config_set("notify-keyspace-events", before)
    writes = [seen[0]]  # one Lua call makes several events at once
    for when, done in seen[1:]:
        if when - writes[-1][0] > 0.1:
            writes.append((when, done))
    pairs = list(itertools.pairwise(writes))
    gaps = [later[0] - earlier[0] for earlier, later in pairs]
    span = writes[-1][0] - writes[0][0]
    assert len(writes) >= 4, writes  # progress while it ran, not only at the end
    assert len(writes) <= 2 * span + 1, writes  # at most twice a second...
    assert min(gaps) >= 0.3, gaps  # ...and never bunched (0.5 s apart, less delivery jitter)
    assert max(done for _, done in writes) == 60
    assert any(later[1] - earlier[1] > 2 for earlier, later in pairs)  # not one per result


def test_hanging_and_crashing_symbols_are_exactly_the_errors(
    batches: Any, serial: dict[str, dict[str, Any]]
) -> None:
    b = batches()
    faults = {5: "SLEEP", 15: "SPIN", 25: "BLOCK", 35: "EXIT", 45: "KILL"}
    symbols = with_faults(faults)
    batch_id = b.submit(symbols)
    done = b.wait_state(batch_id, "done")
    errors = {line["symbol"]: line["error"] for line in b.lines(batch_id) if line["error"]}
    assert errors == {
        "SLEEP.S0005": "Processing timeout",
        "SPIN.S0015": "Processing timeout",
        "BLOCK.S0025": "Processing timeout",
        "EXIT.S0035": "worker died: code 3",
        "KILL.S0045": "worker died: signal 9 (SIGKILL)",
    }
    ok = [line for line in b.lines(batch_id) if not line["error"]]
    assert ok == [expected(serial, s) for s in symbols if s not in errors]
    assert done["errors"] == "5" and b.summary(batch_id)["error_symbols"] == errors


def test_a_large_job_is_sharded_shared_by_two_workers_and_merged_once(
    batches: Any, r: TextRedis, serial: dict[str, dict[str, Any]]
) -> None:
    b = batches(queue={"max_concurrent": 2}, batch={"shard_size": 15, "max_workers": 1})
    symbols = with_faults({i: "SLOW" for i in range(0, 60, 3)})  # each shard takes a while
    payload = {"symbols": symbols, "timeframe": "1d", "formula": FORMULA, "batch_id": "big"}
    r.xadd("batch_jobs", {"payload": json.dumps(payload)})  # no shards: the worker splits it
    done = b.wait_state("big", "done", timeout_s=40)
    assert b.lines("big") == [expected(serial, s) for s in symbols]
    assert (done["shards"], done["shards_done"], done["completed"]) == ("4", "4", "60")
    shards = [b.shard("big", i) for i in range(4)]
    assert all(s is not None and s["state"] == "done" and s["total"] == 15 for s in shards)
    assert len({s["worker"] for s in shards if s}) == 2  # both workers took shards
    assert not [k for k in r.hkeys("orch:batch:big") if k.startswith("part:")]
    assert len(b.sp.lines("batch big done:")) == 1  # merged and marked done once
    assert len(b.sp.lines("batch big: split into 4 shards")) == 1
    assert r.xlen("batch_jobs") == 5 and r.xpending("batch_jobs", "workers")["pending"] == 0


def test_a_killed_worker_s_shard_runs_again_and_nothing_is_duplicated(
    batches: Any, r: TextRedis, serial: dict[str, dict[str, Any]]
) -> None:
    b = batches()
    symbols = with_faults({i: "SLOW" for i in range(30, 50)})  # the second shard is slow
    batch_id = b.submit(symbols, "--shard-size", "30")
    running = wait_until(
        lambda: (
            (s := b.shard(batch_id, 1)) and s["state"] == "running" and s["completed"] >= 3 and s
        ),
        30,
        message=lambda: f"{b.hash(batch_id)}\n{b.sp.text()[-3000:]}",
    )
    victim = b.worker_pid(running["worker"])
    doomed = tree(victim)  # the worker, its pool's launcher and workers
    assert len(doomed) >= 3
    os.kill(victim, signal.SIGKILL)
    b.sp.wait_log("Recovered 1 entry")
    b.wait_state(batch_id, "done")
    assert b.lines(batch_id) == [expected(serial, s) for s in symbols]
    assert wait_gone(doomed, timeout_s=5) == []
    assert len(b.sp.lines("shard 1/2: 30 symbols")) == 1  # its part was kept: not run again
    assert len(b.sp.lines("shard 2/2: 30 symbols")) == 1
    assert r.xlen("batch_jobs:dead") == 0


def test_sigterm_stops_the_engine_and_the_batch_runs_again_uncounted(
    batches: Any, r: TextRedis, spawner_factory: Any, serial: dict[str, dict[str, Any]]
) -> None:
    # max_attempts 1: were the stopped run counted, the rerun would be dead-lettered.
    b = batches(queue={"max_attempts": 1})
    symbols = with_faults({i: "SLOW" for i in range(0, 60, 3)})
    batch_id = b.submit(symbols)
    running = wait_until(
        lambda: (
            (s := b.shard(batch_id, 0)) and s["state"] == "running" and s["completed"] >= 3 and s
        ),
        30,
    )
    doomed = tree(b.worker_pid(running["worker"]))
    started = time.monotonic()
    assert b.sp.stop() == 0  # SIGTERM to the spawner, which SIGTERMs its workers
    assert time.monotonic() - started < 5
    assert wait_gone(doomed, timeout_s=5) == []
    assert b.hash(batch_id)["state"] != "done"
    assert r.xpending("batch_jobs", "workers")["pending"] == 1  # not acknowledged
    assert b.sp.lines("stopped after") and not b.sp.lines("max_runtime reached")
    b.sp.start()  # the next worker runs it
    b.wait_state(batch_id, "done")
    assert b.lines(batch_id) == [expected(serial, s) for s in symbols]
    assert r.xlen("batch_jobs:dead") == 0


def test_a_shard_longer_than_max_runtime_is_dead_lettered_saying_so(
    batches: Any, r: TextRedis
) -> None:
    b = batches(queue={"max_runtime": 5, "max_attempts": 1})
    batch_id = b.submit(with_faults({i: "SLOW" for i in range(60)}))  # some 6 s of work
    wait_until(lambda: r.xlen("batch_jobs:dead") == 1, 20, message=lambda: b.sp.text()[-3000:])
    error = r.xrange("batch_jobs:dead")[0][1]["error"]
    assert error.startswith(f"ShardOverran: batch {batch_id} shard 1/1 stopped after ")
    assert error.endswith(
        "max_runtime reached; raise queues.batch_jobs.max_runtime or lower batch.shard_size"
    )
    assert b.wait_state(batch_id, "failed")["error"] == error
    assert not b.sp.lines("max_runtime 5s exceeded")  # it stopped before the spawner had to
    status = CliRunner().invoke(
        cli, ["batch", "status", "--once", "-c", str(b.sp.config_path), batch_id]
    )
    assert status.exit_code == 1 and "shard 1/1 dead-lettered" in status.stdout
    assert "orchestrator dlq retry batch_jobs" in status.stdout


def test_a_bad_formula_or_timeframe_is_dead_lettered_at_once(batches: Any, r: TextRedis) -> None:
    b = batches()
    bad = [
        {"batch_id": "typo", "symbols": ["S0001"], "timeframe": "1d", "formula": "close > smaa(2)"},
        {"batch_id": "weekly", "symbols": ["S0001"], "timeframe": "1w", "formula": "close > 1"},
        {"batch_id": "empty", "timeframe": "1d", "formula": "close > 1"},
    ]
    for job in bad:
        r.xadd("batch_jobs", {"payload": json.dumps(job)})
    wait_until(lambda: r.xlen("batch_jobs:dead") == 3, 20, message=lambda: b.sp.text()[-3000:])
    dead = {json.loads(f["payload"])["batch_id"]: f for _, f in r.xrange("batch_jobs:dead")}
    assert dead["typo"]["error"].startswith("BatchRejected: formula: unknown function 'smaa'")
    assert "unknown timeframe '1w'" in dead["weekly"]["error"]
    assert "give either symbols" in dead["empty"]["error"]
    assert all(f["attempts"] == "1" for f in dead.values())
    for batch_id, letter in dead.items():
        record = b.hash(batch_id)
        assert record["state"] == "failed" and record["error"] == letter["error"]
    status = CliRunner().invoke(
        cli, ["batch", "status", "--once", "-c", str(b.sp.config_path), "typo"]
    )
    assert status.exit_code == 1 and "unknown function 'smaa'" in status.stdout


def test_a_formula_failing_at_evaluation_fails_its_batch_with_one_error(
    batches: Any, r: TextRedis
) -> None:
    b = batches()
    batch_id = b.submit(with_faults({30: "DEEP"}))  # its worker's stack overflows
    record = b.wait_state(batch_id, "failed")
    assert record["error"].startswith("BatchRejected: formula: the formula is nested too deep")
    assert "Traceback" not in record["error"]
    wait_until(lambda: r.xlen("batch_jobs:dead") == 1, 10, message=lambda: b.sp.text()[-3000:])
    (_, letter), *_ = r.xrange("batch_jobs:dead")
    assert letter["attempts"] == "1" and letter["error"] == record["error"]
    assert "Traceback" not in b.sp.text()


# ------------------------------------------------------------ commands


def config_file(tmp_path: Path, redis_url: str, candles: Path) -> Path:
    path = tmp_path / "workers.yaml"
    batch = {"data_root": str(candles), "results_dir": str(tmp_path / "results")}
    queues = {"batch_jobs": {"script": WORKER, "batch_size": 1}}
    path.write_text(json.dumps({"redis": {"url": redis_url}, "queues": queues, "batch": batch}))
    return path


def test_submit_refuses_what_a_worker_would_and_queues_the_rest(
    tmp_path: Path, redis_url: str, r: TextRedis, candles: Path
) -> None:
    config = str(config_file(tmp_path, redis_url, candles))
    base = ["batch", "submit", "-c", config, "--timeframe", "1d", "--symbols", "S0001,S0002"]
    refused = {
        "unknown function 'smaa'": ["--formula", "close > smaa(3)"],
        "unknown timeframe '4h'": ["--formula", "close > 1", "--timeframe", "4h"],
        "expected NAME=NUMBER": ["--formula", "close > x", "--param", "x"],
        "nests too deep": ["--formula", "(" * 500 + "close > 1" + ")" * 500],
        "too large: more than 256 terms": ["--formula", " and ".join(["close > open"] * 100)],
        "must be <= 100000": ["--formula", "close > sma(close, 1e6)"],
    }
    for message, extra in refused.items():
        out = CliRunner().invoke(cli, [*base, *extra])
        assert out.exit_code == 2 and message in out.output, out.output
        assert "Traceback" not in out.output and isinstance(out.exception, SystemExit)
    universe = tmp_path / "universe.txt"
    universe.write_text("# three\nS0001, S0002\nS0003  # last\n")
    args = ["batch", "submit", "-c", config, "--timeframe", "1d", "--universe", str(universe)]
    args += ["--formula", "close > level", "--param", "level=10", "--shard-size", "2", "--id", "u"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0 and out.stdout == "u\n" and "2 shard(s)" in out.stderr
    payloads = [json.loads(f["payload"]) for _, f in r.xrange("batch_jobs")]
    assert [p["symbols"] for p in payloads] == [["S0001"], ["S0002", "S0003"]]
    assert [(p["shard"], p["shards"], p["parameters"]) for p in payloads] == [
        (0, 2, {"level": 10.0}),
        (1, 2, {"level": 10.0}),
    ]
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "exists already" in again.output
    status = CliRunner().invoke(cli, ["batch", "status", "--once", "-c", config, "u"])
    assert status.exit_code == 0 and "queued" in status.stdout and "0/3" in status.stdout


def test_status_says_when_a_batch_is_unknown(tmp_path: Path, redis_url: str, candles: Path) -> None:
    config = str(config_file(tmp_path, redis_url, candles))
    for extra in ([], ["--once"], ["--json"]):
        out = CliRunner().invoke(cli, ["batch", "status", *extra, "-c", config, "nope"])
        assert out.exit_code == 1
        assert "unknown batch id 'nope': no orch:batch:nope in Redis" in out.stderr


# ------------------------------------------------------------ pure parts


def test_shards_are_contiguous_and_even() -> None:
    request = BatchRequest("b", tuple(symbol_names(10)), "1d", "close > 1")
    shards = request.split(4)
    assert [len(s.symbols) for s in shards] == [3, 3, 4]
    assert [s for shard in shards for s in shard.symbols] == list(request.symbols)
    assert {(s.shard, s.shards) for s in shards} == {(0, 3), (1, 3), (2, 3)}
    assert request.split(0) == [request] == request.split(10)
    assert shard_bounds(5, 5) == [(i, i + 1) for i in range(5)]


def test_a_payload_reads_back_unchanged_and_every_problem_is_named(tmp_path: Path) -> None:
    settings = BatchSettings(timeout_s=7)
    payload = build_payload(
        {"symbols": ["A,B", "C A"], "universe": None, "timeframe": "5m", "formula": "close > x",
         "params": ["x=1.5"], "start": "2024-01-02", "end": "2024-02-01", "memory_mb": 512}
    )  # fmt: skip
    request = BatchRequest.from_payload(payload, "entry-1", settings, tmp_path)
    assert (request.batch_id, request.symbols, request.timeout_s) == ("entry-1", ("A", "B", "C"), 7)
    again = BatchRequest.from_payload(request.payload(), "other", settings, tmp_path)
    assert again == request
    with pytest.raises(BatchRejected) as info:
        BatchRequest.from_payload(
            {"symbols": [], "timeframe": "1x", "start": "2024-13-01", "colour": 1},
            "bad id!",
            settings,
            tmp_path,
        )
    problems = str(info.value).split("; ")
    assert problems == [
        "job.batch_id: must be letters, digits, '.', '_' or '-' (1-128), got 'bad id!'",
        "job.symbols: names no symbol",
        "job.timeframe: unknown timeframe '1x' (e.g. 1d, 1h, 5m)",
        "job.start: must be a date YYYY-MM-DD, got '2024-13-01'",
        "job.formula: is required",
        "job.colour: unknown key",
    ]


def test_updates_are_paced_and_skipped_when_the_end_is_near() -> None:
    now = [100.0]
    pacer = Pacer(0.5, clock=lambda: now[0])
    progress = ShardProgress(100, pacer, "w", wall=lambda: 1e9 + now[0])
    ok = ProcessingResult("X", (), {}, 1.0)
    seen: list[ShardRecord] = []
    for i in range(1, 101):
        now[0] = 100 + i / 16  # 16 results a second (exact in binary): 6.25 s in all
        progress.add(ok)
        if progress.due():
            seen.append(progress.update())
            pacer.wrote()
    times = [r.updated_at - 1e9 for r in seen]
    assert all(b - a >= 0.5 for a, b in itertools.pairwise(times))
    assert len(seen) == 11  # every 0.5 s from 0.5 s, not one per result
    assert times[-1] == 105.5  # none within 0.5 s of the end
    assert all(r.rate == 16 for r in seen) and seen[-1].completed == 88
    assert pacer.wait_s() == 0.0  # the last write need not wait


def test_updates_go_out_at_least_every_two_intervals_when_the_estimate_is_wrong() -> None:
    now = [0.0]
    pacer = Pacer(0.5, clock=lambda: now[0])
    progress = ShardProgress(100, pacer, "w", wall=lambda: now[0])
    ok = ProcessingResult("X", (), {}, 1.0)
    written = []
    for i in range(1, 101):  # 90 fast results in 0.5 s, then 10 slow ones over 5 s
        now[0] = i / 180 if i <= 90 else 0.5 + (i - 90) / 2
        progress.add(ok)
        if progress.due():
            written.append(progress.update().updated_at)
            pacer.wrote()
    assert written and written[0] <= 1.5
    assert all(b - a <= 1.0 for a, b in itertools.pairwise([*written, now[0]]))


def test_the_batch_section_is_checked() -> None:
    problems = Problems()
    raw = {"max_workers": 0, "shard_size": -1, "progress_interval": 0.1, "repository": "x", "y": 1}
    parse_batch_settings(Section(raw, "batch", problems))
    assert problems.lines == [
        "batch.repository: must be 'package.module:Class', got 'x'",
        "batch.max_workers: must be 'auto' or an integer >= 1, got 0",
        "batch.shard_size: must be >= 0, got -1",
        "batch.progress_interval: must be >= 0.5, got 0.1",
        "batch.y: unknown key",
    ]
    defaults = parse_batch_settings(Section({}, "batch", Problems()), cpu_count=6)
    assert (defaults.max_workers, defaults.shard_size, defaults.memory_mb) == (6, 500, 1024)
    uncapped = parse_batch_settings(Section({"memory_mb": None}, "batch", Problems()))
    assert uncapped.memory_mb is None


def test_the_progress_line_shows_rate_eta_and_shards() -> None:
    running = BatchStatus(
        "b1", "running", total=600, completed=150, errors=3, rate=50.0, shards=4, shards_done=1,
        started_at=1000.0,
    )  # fmt: skip
    line = format_line(running, now=1003.0, width=20)
    assert "[#####...............]" in line and " 25.0%" in line and "150/600" in line
    assert "errors 3" in line and "50.0/s" in line and "ETA 9.0s" in line  # 450 left at 50/s
    assert "shards 1/4" in line
    between_shards = BatchStatus("b1", "running", total=600, completed=150, started_at=1000.0)
    assert "15.0/s" in format_line(between_shards, now=1010.0)  # the average since the start
    assert "ETA 30s" in format_line(between_shards, now=1010.0)
    done = BatchStatus(
        "b1", "done", total=600, completed=600, rate=40.0, started_at=1000.0, finished_at=1015.0
    )
    assert "100.0%" in format_line(done, now=2000.0) and "in 15s" in format_line(done, now=2000.0)
    assert "ETA" not in format_line(done, now=2000.0)

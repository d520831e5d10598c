"""The scanner worker end to end: a real spawner, Redis and pool processes.

What a crash may repeat, precisely (asserted below):

- A tick is acknowledged only in the MULTI/EXEC that writes its alerts, so
  no alert is written twice for the same (tick id, pattern), whatever is
  killed when: an acknowledged tick is never delivered again, and an
  unacknowledged one has none of its alerts written.
- SIGKILL of a pool process: the pool replays the lost process's state and
  resends what it held; the alerts are exactly those of one uninterrupted
  engine over the same ticks.
- SIGKILL of the whole scanner: its pending ticks go (uncharged: its in-hand
  marker is empty) to the next scanner, which restores the cool-off clocks
  from the alert stream and replays the acknowledged ticks muted before
  taking the pending ones. With ``warmup_history`` reaching back to the
  stream's start, the alerts are again exactly the uninterrupted engine's;
  in any case consecutive alerts of a (symbol, pattern) are at least
  ``cooloff`` apart in tick time, across the crash.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import redis
import yaml
from click.testing import CliRunner

from orchestrator.apps.scanner.detection import PatternEngine
from orchestrator.apps.scanner.frames import flat_rows
from orchestrator.apps.scanner.metrics_report import Reporter, read_scanners, scanner_line
from orchestrator.apps.scanner.outbox import GIVEN_UP, Outbox
from orchestrator.apps.scanner.reader import GroupReader
from orchestrator.apps.scanner.scanner_pool import BatchResult
from orchestrator.apps.scanner.scanner_settings import PatternSettings
from orchestrator.apps.scanner.warmup import (
    acknowledged_history,
    cooloff_checkpoints,
    cooloff_clocks,
)
from orchestrator.cli import cli
from orchestrator.worker import Settings
from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import ROOT, SpawnerProc
from tests.test_scanner_patterns import DAY, scripted_rows

STREAM, GROUP, ALERTS = "ticks:intraday:processed", "scanner_group", "alerts:intraday"
SCANNER = str(ROOT / "workers" / "scanner_worker.py")
PATTERNS_YAML = {
    "warmup_ticks": 10, "volume_window": 20, "lookback_ticks": 20,
    "ema_fast": 3, "ema_slow": 8, "cooloff": 20,
}  # fmt: skip
PATTERNS = PatternSettings(
    warmup_ticks=10, volume_window=20, lookback_ticks=20, ema_fast=3, ema_slow=8, cooloff_s=20
)
Row = tuple[str, str, str, str]
AlertKey = tuple[str, str, float, float, float, str]


def random_rows(n: int, symbols: int, seed: int = 7) -> list[Row]:
    """A random walk per symbol with jumps and volume bursts: plenty of alerts."""
    rng = random.Random(seed)
    names = [f"S{k:03d}" for k in range(symbols)]
    price = dict.fromkeys(names, 100.0)
    rows: list[Row] = []
    for i in range(n):
        sym = rng.choice(names)
        price[sym] *= 1 + rng.gauss(0, 0.004) + (rng.random() < 0.02) * rng.choice((-0.02, 0.02))
        volume = rng.randint(50, 150) * (10 if rng.random() < 0.02 else 1)
        rows.append((sym, f"{price[sym]:.4f}", str(volume), f"{DAY + i * 0.5:.1f}"))
    return rows


def add(r: TextRedis, rows: Sequence[Row]) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for sym, price, volume, ts in rows:
        pipe.xadd(STREAM, {"symbol": sym, "price": price, "volume": volume, "ts": ts})
    return [str(i) for i in pipe.execute()]


def reference(ids: Sequence[str], rows: Sequence[Row], patterns: PatternSettings) -> list[AlertKey]:
    """The alerts of one uninterrupted engine over the same ticks."""
    out = PatternEngine(patterns).process(rows)
    return sorted((ids[a[0]], a[2], round(a[3], 4), a[4], a[5], a[6]) for a in out.alerts)


def written(r: TextRedis) -> list[AlertKey]:
    return sorted(
        (f["tick_id"], f["pattern"], float(f["confidence"]), float(f["price"]),
         float(f["time"]), f["direction"])
        for _, f in r.xrange(ALERTS)
    )  # fmt: skip


def group(r: TextRedis) -> dict[str, Any]:
    return next(g for g in r.xinfo_groups(STREAM) if g["name"] == GROUP)


def all_acked(r: TextRedis, n: int) -> bool:
    g = group(r)
    return bool(g["entries-read"] == n and g["lag"] == 0 and g["pending"] == 0)


def metrics(r: TextRedis) -> dict[str, Any]:
    rows = read_scanners(r)
    return rows[0] if rows else {}


def start_scanner(
    factory: Any,
    redis_url: str,
    r: TextRedis,
    scanner: dict[str, Any],
    *,
    log: dict[str, Any] | None = None,
    **queue: Any,
) -> SpawnerProc:
    r.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    q = {
        "script": SCANNER, "label": "SCANNER", "stream": STREAM, "group": GROUP,
        "max_concurrent": 1, "cooldown": 0, "idle_timeout": 60, "max_runtime": 120,
        "batch_size": 50, **queue,
    }  # fmt: skip
    sp: SpawnerProc = factory(redis_url, {"scanner": q}, log=log)
    section = {"warmup_history": 100_000, "log_interval": 1, "stall_timeout": 120, **scanner}
    sp.write_config({**sp.config, "scanner": section})
    return sp.start()


def pool_of(sp: SpawnerProc, processes: int) -> tuple[int, list[psutil.Process]]:
    """The running scanner's pid and its pool processes."""
    pid = wait_until(lambda: sp.spawned()[-1][2] if sp.spawned() else None, message=sp.text)

    def kids() -> list[psutil.Process]:
        try:
            found = [
                k for k in psutil.Process(pid).children() if "poolproc" in " ".join(k.cmdline())
            ]
        except psutil.Error:
            return []
        return found if len(found) == processes else []

    return pid, wait_until(kids, message="pool processes not found")


def held_pool_fills(r: TextRedis, batches: int) -> dict[str, Any]:
    """Wait until the scanner reports ``batches`` in flight (the pool is stopped)."""
    return wait_until(
        lambda: (m := metrics(r)).get("batches_in_flight", 0) >= batches and m,
        message=lambda: f"in flight never reached {batches}: {metrics(r)}",
    )


def assert_cooloff_holds(alerts: Sequence[AlertKey], symbol_of: dict[str, str]) -> None:
    by_pair: dict[tuple[str, str], list[float]] = {}
    for tick_id, pattern, _, _, ts, _ in alerts:
        by_pair.setdefault((symbol_of[tick_id], pattern), []).append(ts)
    for times in by_pair.values():
        times.sort()
        assert all(b - a >= PATTERNS.cooloff_s for a, b in itertools.pairwise(times))


# -- the worker under the spawner ---------------------------------------------------

EXPECTED = [  # tests/test_scanner_patterns.py's script, per symbol
    (60, "VOLUME_SPIKE", "down", 1.0),
    (130, "BREAKOUT", "up", round(0.5 + 0.25 / 1.5 + 0.25, 4)),
    (203, "MOMENTUM", "up", None),
    (251, "MOMENTUM", "down", None),
    (300, "BREAKOUT", "down", round(0.5 + 0.25 / 1.5 + 0.25, 4)),
]


def test_scripted_ticks_raise_exactly_the_expected_alerts(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    symbols = ("AAA", "BBB", "CCC")
    scripts = {sym: scripted_rows(sym) for sym in symbols}
    rows = [scripts[sym][k] for k in range(320) for sym in symbols]
    rows.insert(100, ("BAD", "x", "1", str(DAY)))
    sp = start_scanner(
        spawner_factory, redis_url, r, {"processing_workers": 2, "patterns": {"opening_range": 300}}
    )
    ids = add(r, rows)
    wait_until(lambda: all_acked(r, len(rows)), 20, message=sp.text)
    id_of = {(row[0], float(row[3])): tick_id for row, tick_id in zip(rows, ids, strict=True)}
    expected = {
        (sym, id_of[(sym, DAY + 10.0 * i)], pattern): (direction, DAY + 10.0 * i, scripts[sym][i])
        for sym in symbols
        for i, pattern, direction, _ in EXPECTED
    }
    confidence = {pattern: c for _, pattern, _, c in EXPECTED if c is not None}
    entries = [f for _, f in r.xrange(ALERTS)]
    got = {(f["symbol"], f["tick_id"], f["pattern"]): f for f in entries}
    assert len(got) == len(entries) and got.keys() == expected.keys()
    for key, (direction, ts, row) in expected.items():
        f = got[key]
        assert (f["direction"], float(f["time"]), float(f["price"])) == (
            direction,
            ts,
            float(row[1]),
        )
        assert float(f["confidence"]) == confidence.get(key[2], float(f["confidence"])) <= 1.0
    dead = r.xrange(f"{STREAM}:dead")
    assert [(f["symbol"], f["original_id"]) for _, f in dead] == [("BAD", ids[100])]
    assert dead[0][1]["error"] == "price, volume and ts must be numbers, got 'x', '1', '1700006400'"
    m = wait_until(lambda: (m := metrics(r)).get("acked") == len(rows) and m)
    assert (m["submitted"], m["completed"], m["alerts"], m["invalid"]) == (961, 961, 15, 1)
    status = CliRunner().invoke(cli, ["status", "-c", str(sp.config_path)])
    assert status.exit_code == 0, status.output
    assert "scanner scanner_" in status.output and "alerts 15, lag 0" in status.output
    assert sp.stop() == 0
    assert "961 ticks acknowledged, 15 alerts, 0 shed, 1 dead-lettered, 0 left pending" in sp.text()


def test_sigkill_of_a_pool_process_loses_and_repeats_nothing(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    rows = random_rows(6000, 20)
    scanner = {
        "processing_workers": 2, "processing_backlog": 8, "batch_size_max": 100,
        "checkpoint_batches": 5, "patterns": PATTERNS_YAML,
    }  # fmt: skip
    sp = start_scanner(spawner_factory, redis_url, r, scanner)
    ids = add(r, rows[:3000])
    wait_until(lambda: all_acked(r, 3000), 20, message=sp.text)
    _, pool = pool_of(sp, 2)
    for p in pool:
        p.suspend()
    ids += add(r, rows[3000:])
    held_pool_fills(r, 7)
    pool[0].kill()
    pool[1].resume()
    wait_until(lambda: all_acked(r, 6000), 30, message=sp.text)
    assert written(r) == reference(ids, rows, PATTERNS)  # nothing lost, nothing twice
    assert r.xlen(f"{STREAM}:dead") == 0
    assert wait_until(lambda: metrics(r).get("acked") == 6000 and metrics(r))["crash_restarts"] == 1
    assert "crashed: restarting, replaying" in sp.text()
    assert sp.stop() == 0


def test_sigkill_of_the_scanner_loses_nothing_and_keeps_the_cooloff(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    rows = random_rows(6000, 20, seed=11)
    scanner = {
        "processing_workers": 2, "processing_backlog": 8, "batch_size_max": 100,
        "patterns": PATTERNS_YAML,
    }  # fmt: skip
    # max_attempts 1: had the crash been charged to the ticks in hand, they would be
    # dead-lettered at once. The scanner's empty in-hand marker says none was at fault.
    sp = start_scanner(spawner_factory, redis_url, r, scanner, max_attempts=1)
    ids = add(r, rows[:3000])
    wait_until(lambda: all_acked(r, 3000), 20, message=sp.text)
    pid, pool = pool_of(sp, 2)
    for p in pool:
        p.suspend()
    ids += add(r, rows[3000:])
    in_hand = held_pool_fills(r, 7)["held"]
    os.kill(pid, signal.SIGKILL)
    for p in pool:
        p.resume()  # end of file on stdin: they exit
    sp.wait_log("Recovered")
    wait_until(lambda: all_acked(r, 6000), 30, message=sp.text)
    alerts = written(r)
    assert len(set(a[:2] for a in alerts)) == len(alerts)  # never twice for a (tick, pattern)
    assert_cooloff_holds(alerts, {i: row[0] for i, row in zip(ids, rows, strict=True)})
    assert alerts == reference(ids, rows, PATTERNS)  # the state was rebuilt exactly
    assert r.xlen(f"{STREAM}:dead") == 0
    assert in_hand > 0 and len(sp.spawned()) == 2
    restarted = sp.lines("acknowledged ticks")[-1]
    assert "replaying 0 acknowledged" not in restarted and "restored 0 cool-off" not in restarted
    assert psutil.wait_procs(pool, timeout=10)[1] == []
    assert sp.stop() == 0


def test_a_full_backlog_stops_reading_instead_of_dropping(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    rows = random_rows(2000, 20)
    scanner = {"processing_workers": 1, "processing_backlog": 4, "batch_size_max": 20}
    sp = start_scanner(spawner_factory, redis_url, r, {**scanner, "patterns": PATTERNS_YAML})
    ids = add(r, rows[:200])
    wait_until(lambda: all_acked(r, 200), 20, message=sp.text)
    _, pool = pool_of(sp, 1)
    pool[0].suspend()
    ids += add(r, rows[200:])
    first = held_pool_fills(r, 4)
    before = group(r)
    # Two more publications (a second apart) while the pool is held: nothing more read.
    later = wait_until(lambda: (m := metrics(r)).get("at", 0) >= first["at"] + 1.5 and m)
    after = group(r)
    assert after["entries-read"] == before["entries-read"] < 2000
    assert after["lag"] == 2000 - after["entries-read"] >= 1500  # the excess waits in Redis
    assert after["pending"] <= 4 * 20 and later["batches_in_flight"] == 4
    assert later["skipped_backlog"] == 0
    pool[0].resume()
    wait_until(lambda: all_acked(r, 2000), 20, message=sp.text)
    assert written(r) == reference(ids, rows, PATTERNS)
    assert metrics(r)["skipped_backlog"] == 0
    assert sp.stop() == 0


def test_shed_oldest_acknowledges_and_counts_shed_ticks(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    rows = random_rows(2000, 20)
    scanner = {
        "processing_workers": 1, "processing_backlog": 4, "batch_size_max": 20,
        "on_backlog_full": "shed_oldest", "patterns": PATTERNS_YAML,
    }  # fmt: skip
    sp = start_scanner(spawner_factory, redis_url, r, scanner)
    ids = add(r, rows[:200])
    wait_until(lambda: all_acked(r, 200), 20, message=sp.text)
    _, pool = pool_of(sp, 1)
    pool[0].suspend()
    ids += add(r, rows[200:])
    wait_until(lambda: group(r)["lag"] == 0, 20, message=sp.text)  # it kept reading
    pool[0].resume()
    wait_until(lambda: all_acked(r, 2000), 20, message=sp.text)
    m = wait_until(lambda: (m := metrics(r)).get("acked") == 2000 and m)
    assert m["skipped_backlog"] > 1000
    assert m["submitted"] == 2000 == m["completed"] + m["skipped_backlog"]
    alerted = {a[0] for a in written(r)}
    assert alerted and alerted <= set(ids)
    assert "shedding the oldest ticks" in sp.text()
    assert sp.stop() == 0
    assert (
        f"2000 ticks acknowledged, {m['alerts']} alerts, {m['skipped_backlog']} shed" in sp.text()
    )


# -- the pieces, against Redis alone ------------------------------------------------


def test_reader_takes_own_pending_once_then_new(redis_url: str, r: TextRedis) -> None:
    r.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    handed = add(r, random_rows(5, 2))
    r.xreadgroup(GROUP, "me", {STREAM: ">"})  # pending on "me", as if handed to it
    r.xdel(STREAM, handed[2])
    fresh = add(r, random_rows(3, 2, seed=2))
    client = redis.Redis.from_url(redis_url)
    reader = GroupReader(client, STREAM, GROUP, "me", first_size=2, low=1, high=2)
    reads = [reader.read(held=0) for _ in range(4)]  # 2 entries a read at most
    assert [read.own for read in reads] == [True, True, True, False]
    own = [i.decode() for read in reads[:3] for i in read.ids]
    assert own == [handed[0], handed[1], handed[3], handed[4]]
    assert [g.decode() for read in reads for g in read.gone] == [handed[2]]  # deleted
    assert [i.decode() for i in reads[3].ids] == fresh[:2]
    assert reads[3].rows[0] == tuple(x.encode() for x in random_rows(3, 2, seed=2)[0])
    counts = {row["message_id"]: row["times_delivered"] for row in r.xpending_range(
        STREAM, GROUP, "-", "+", 100, "me")}  # fmt: skip
    assert [counts[i] for i in handed if i != handed[2]] == [2, 2, 2, 2]  # read once more each
    assert reader.read(held=3).ids[0].decode() == fresh[2]
    assert not reader.read(held=4, block_ms=10) and reader.own_due
    assert reader.read(held=4).own is False  # the cursor restarts only once nothing is held
    client.close()


def test_uneven_fields_take_the_slow_path(redis_url: str, r: TextRedis) -> None:
    r.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    r.xadd(STREAM, {"symbol": "A", "price": "1", "volume": "2", "ts": "3"})
    r.xadd(STREAM, {"ts": "4", "volume": "5", "price": "6", "symbol": "B", "venue": "X"})
    r.xadd(STREAM, {"symbol": "C", "price": "7"})
    reader = GroupReader(redis.Redis.from_url(redis_url), STREAM, GROUP, "me",
                         first_size=10, low=1, high=10)  # fmt: skip
    got = reader.read(held=0)
    assert got.ids == [] and [f[b"symbol"] for _, f in got.entries] == [b"A", b"B", b"C"]
    assert flat_rows([[b"ts", b"4", b"symbol", b"B", b"volume", b"5", b"price", b"6"]]) == [
        (b"B", b"6", b"5", b"4")
    ]


def test_json_log_covers_the_scanner_and_its_pool(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    """With ``log.format: json`` the scanner's lines, its pool's and a pool
    process's death are JSON objects too, one per line."""
    rows = scripted_rows("AAA")[:320]
    rows.insert(10, ("BAD", "x", "1", str(DAY)))
    sp = start_scanner(
        spawner_factory, redis_url, r, {"processing_workers": 2}, log={"format": "json"}
    )
    add(r, rows[:5])
    _, pool = pool_of(sp, 2)
    os.kill(pool[0].pid, signal.SIGKILL)  # a pool process dies: the scanner says so
    add(r, rows[5:])
    wait_until(lambda: all_acked(r, len(rows)), 20, message=sp.text)
    assert sp.stop() == 0
    lines = [json.loads(line) for line in sp.text().splitlines()]
    assert all(isinstance(o, dict) and o["message"] for o in lines)
    assert [o for o in lines if "ticks acknowledged" in o["message"]]
    assert [o for o in lines if o.get("queue") == "scanner" and o.get("worker_id")]


def test_outbox_writes_alerts_dead_letters_and_acks_together(redis_url: str, r: TextRedis) -> None:
    r.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    ids = add(r, random_rows(6, 2))
    r.xreadgroup(GROUP, "me", {STREAM: ">"})
    alert = {"symbol": "S000", "pattern": "BREAKOUT", "confidence": 0.75, "price": 101.5,
             "tick_id": ids[0], "time": 1.5, "direction": "up"}  # fmt: skip
    results = [
        BatchResult(1, (ids[0], ids[1]), (alert,), invalid=((ids[1], "bad tick"),)),
        BatchResult(2, shed_ids=(ids[2], ids[3])),
        BatchResult(3, failed_ids=(ids[4],)),
    ]
    outbox = Outbox(redis.Redis.from_url(redis_url), STREAM, GROUP, ALERTS, 1000)
    done = outbox.commit(results, gone=[ids[5]])
    assert (done.acked, done.alerts, done.dead_lettered, done.shed) == (6, 1, 2, 2)
    assert group(r)["pending"] == 0
    assert [f for _, f in r.xrange(ALERTS)] == [
        {"symbol": "S000", "pattern": "BREAKOUT", "confidence": "0.75", "price": "101.5",
         "tick_id": ids[0], "time": "1.5", "direction": "up"}
    ]  # fmt: skip
    dead = {f["original_id"]: f for _, f in r.xrange(f"{STREAM}:dead")}
    assert dead[ids[1]]["error"] == "bad tick" and dead[ids[4]]["error"] == GIVEN_UP
    assert dead[ids[1]]["symbol"] == r.xrange(STREAM, ids[1], ids[1])[0][1]["symbol"]


def test_the_alert_stream_keeps_its_newest_and_what_a_group_has_not_read(
    redis_url: str, r: TextRedis
) -> None:
    r.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    r.xgroup_create(ALERTS, "readers", "0", mkstream=True)  # a downstream consumer
    outbox = Outbox(redis.Redis.from_url(redis_url), STREAM, GROUP, ALERTS, 10)

    def commit_alerts(n: int) -> None:
        ids = add(r, random_rows(n, 2))
        r.xreadgroup(GROUP, "me", {STREAM: ">"})
        alerts = tuple(
            {"symbol": "S000", "pattern": "BREAKOUT", "confidence": 0.5, "price": 1.0,
             "tick_id": i, "time": 1.0, "direction": "up"} for i in ids
        )  # fmt: skip
        outbox.trim_at = 0.0  # the trim is due (it runs every TRIM_INTERVAL_S)
        outbox.commit([BatchResult(1, tuple(ids), alerts)])

    commit_alerts(50)
    assert r.xlen(ALERTS) == 50  # the readers have read none: all kept
    read = r.xreadgroup("readers", "r1", {ALERTS: ">"}, count=45)[0][1]
    r.xack(ALERTS, "readers", *(i for i, _ in read[:30]))
    commit_alerts(5)
    # newest 10 kept, and nothing the group still needs: from the oldest unacknowledged
    assert r.xrange(ALERTS, count=1)[0][0] == read[30][0]
    assert r.xlen(ALERTS) == 55 - 30


def test_cooloff_clocks_come_back_from_the_alert_stream(redis_url: str, r: TextRedis) -> None:
    settings = PatternSettings(opening_range_s=300)  # the scripted sequence's
    for symbol, pattern, ts in [
        ("AAA", "BREAKOUT", DAY - 10_000.0),  # beyond 2 x cooloff of the newest: not read
        ("AAA", "VOLUME_SPIKE", DAY + 595.0),
        ("BBB", "MOMENTUM", DAY + 590.0),
    ]:
        r.xadd(ALERTS, {"symbol": symbol, "pattern": pattern, "time": repr(ts), "price": "1"})
    clocks = cooloff_clocks(redis.Redis.from_url(redis_url), ALERTS, settings.cooloff_s)
    assert clocks == {b"AAA": {"VOLUME_SPIKE": DAY + 595.0}, b"BBB": {"MOMENTUM": DAY + 590.0}}
    [blob] = cooloff_checkpoints(clocks, settings, partitions=1)
    engine = PatternEngine(settings)
    engine.restore(blob)
    rows = [tuple(x.encode() for x in row) for row in scripted_rows("AAA")]
    got = [(a[0], a[2]) for a in engine.process(rows).alerts]
    # Tick 60 (DAY + 600) spikes 5 s after the restored VOLUME_SPIKE: held back.
    assert got == [(130, "BREAKOUT"), (203, "MOMENTUM"), (251, "MOMENTUM"), (300, "BREAKOUT")]


def test_history_is_the_acknowledged_ticks_oldest_first(redis_url: str, r: TextRedis) -> None:
    r.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    ids = add(r, random_rows(12, 3))
    r.xreadgroup(GROUP, "other", {STREAM: ">"}, count=10)  # delivered: 0..9; 10, 11 not yet
    r.xack(STREAM, GROUP, *(i for k, i in enumerate(ids[:10]) if k not in (3, 7)))
    client = redis.Redis.from_url(redis_url)
    pages = list(acknowledged_history(client, STREAM, GROUP, limit=6, page=4))
    assert [[e[0].decode() for e in p] for p in pages] == [ids[4:7], ids[8:10]]  # 7 is pending
    pages = list(acknowledged_history(client, STREAM, GROUP, 100))
    everything = [e[0].decode() for p in pages for e in p]
    assert everything == [i for k, i in enumerate(ids[:10]) if k not in (3, 7)]
    assert list(acknowledged_history(client, STREAM, GROUP, 0)) == []


def test_reporter_publishes_for_status_and_notices_handed_entries(
    redis_url: str, r: TextRedis
) -> None:
    r.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    add(r, random_rows(5, 2))
    r.xreadgroup(GROUP, "h/scanner_1", {STREAM: ">"}, count=3)
    worker = Settings.from_env(
        {"ORCH_QUEUE": "scanner", "ORCH_REDIS_URL": redis_url, "ORCH_STREAM": STREAM,
         "ORCH_GROUP": GROUP, "ORCH_CONSUMER": "h/scanner_1", "ORCH_WORKER_ID": "scanner_1"}
    )  # fmt: skip
    reporter = Reporter(redis.Redis.from_url(redis_url), worker, log_interval_s=60)
    published = reporter.publish({"submitted": 3, "ticks_per_s": 1234.5, "backlog": 100}, held=3)
    assert (published.lag, published.pending, published.handed) == (2, 3, False)
    [row] = read_scanners(r)
    assert (row["consumer"], row["submitted"], row["lag"], row["held"]) == ("h/scanner_1", 3, 2, 3)
    assert scanner_line(row).startswith("scanner_1: 1,234 ticks/s, submitted 3, completed 0")
    r.xreadgroup(GROUP, "h/scanner_1", {STREAM: ">"}, count=1)  # as if handed to it
    assert reporter.publish({}, held=3).handed
    reporter.withdraw()
    assert read_scanners(r) == []


# -- discovery scanners from the command line --------------------------------------


def discover_movers(state: dict[str, Any]) -> list[dict[str, Any]]:
    state["tool_logs"].append("movers: scanned")
    return [{"symbol": s, "source": "movers"} for s in state.get("universe", [])]


def discover_broken(state: dict[str, Any]) -> list[dict[str, Any]]:
    raise RuntimeError("HTTP 500")


def test_scan_discovery_prints_candidates_and_fails_when_a_scanner_does(
    tmp_path: Path,
) -> None:
    here = "tests.test_scanner_worker"
    config = {
        "queues": {"scanner": {"script": SCANNER}},
        "scanner": {"discovery": {"scanners": [f"{here}:discover_movers"]}},
    }
    path = tmp_path / "workers.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    ok = runner.invoke(cli, ["scan-discovery", "-c", str(path), "--state", '{"universe": ["A"]}'])
    assert ok.exit_code == 0, ok.output
    assert [json.loads(line) for line in ok.stdout.splitlines()] == [
        {"symbol": "A", "source": "movers"}
    ]
    config["scanner"]["discovery"]["scanners"].append(f"{here}:discover_broken")
    path.write_text(yaml.safe_dump(config))
    failed = runner.invoke(
        cli, ["scan-discovery", "-c", str(path), "--state", '{"universe": ["B"]}']
    )
    assert failed.exit_code == 1 and json.loads(failed.stdout) == {
        "symbol": "B",
        "source": "movers",
    }
    config["scanner"]["discovery"]["scanners"] = [f"{here}:no_such_scanner"]
    path.write_text(yaml.safe_dump(config))
    bad = runner.invoke(cli, ["scan-discovery", "-c", str(path)])
    assert bad.exit_code == 2 and "scanner.discovery.scanners[0]: cannot load" in bad.output

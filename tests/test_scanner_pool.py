"""The partitioned process pool: order, crashes, backpressure, memory (real processes)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from orchestrator.apps.scanner.detection import PatternEngine
from orchestrator.apps.scanner.frames import Entry, partition_of, split_entries
from orchestrator.apps.scanner.partitions import GIVE_UP_AFTER_CRASHES, Ledger, TickBatch
from orchestrator.apps.scanner.scanner_pool import (
    MEMORY_CHECKS_OVER,
    BatchResult,
    ScannerPool,
    ScannerPoolError,
    dispatch_window,
)
from orchestrator.apps.scanner.scanner_settings import (
    BacklogPolicy,
    PatternSettings,
    ScannerSettings,
)
from orchestrator.procs import pid_alive, wait_gone
from tests.helpers import wait_until

PATTERNS = PatternSettings(
    warmup_ticks=10, volume_window=20, lookback_ticks=20, ema_fast=3, ema_slow=8, cooloff_s=20
)
T0 = 1_700_006_400


def make_entries(n: int, symbols: int, seed: int = 7, as_bytes: bool = False) -> list[Entry]:
    """A random walk per symbol with jumps and volume bursts: plenty of alerts."""
    rng = random.Random(seed)
    names = [f"S{k:03d}" for k in range(symbols)]
    price = dict.fromkeys(names, 100.0)
    out: list[Entry] = []
    for i in range(n):
        sym = rng.choice(names)
        price[sym] *= 1 + rng.gauss(0, 0.004) + (rng.random() < 0.02) * rng.choice((-0.02, 0.02))
        volume = rng.randint(50, 150) * (10 if rng.random() < 0.02 else 1)
        fields = {"symbol": sym, "price": f"{price[sym]:.4f}", "volume": str(volume)}
        fields["ts"] = f"{T0 + i * 0.5:.1f}"
        if as_bytes:
            out.append((f"{i}-0".encode(), {k.encode(): v.encode() for k, v in fields.items()}))
        else:
            out.append((f"{i}-0", fields))
    return out


def reference_alerts(entries: Sequence[Entry], patterns: PatternSettings) -> list[tuple[Any, ...]]:
    """What one in-process engine raises over the same ticks, in order."""
    rows = [(f["symbol"], f["price"], f["volume"], f["ts"]) for _, f in entries]
    out = PatternEngine(patterns).process(rows)
    return sorted((entries[a[0]][0], a[2], round(a[3], 4), a[4], a[5]) for a in out.alerts)


def alert_keys(results: Sequence[BatchResult]) -> list[tuple[Any, ...]]:
    return sorted(
        (a["tick_id"], a["pattern"], a["confidence"], a["price"], a["time"])
        for r in results
        for a in r.alerts
    )


def settings(**overrides: Any) -> ScannerSettings:
    base: dict[str, Any] = {
        "processing_workers": 2,
        "processing_backlog": 8,
        "checkpoint_batches": 3,
        "memory_check_interval_s": 60.0,
        "patterns": PATTERNS,
    }
    return ScannerSettings(**(base | overrides))


def feed(
    pool: ScannerPool,
    entries: Sequence[Entry],
    batch: int,
    between: Callable[[int], list[BatchResult]] | None = None,
) -> list[BatchResult]:
    """Submit in reads of ``batch`` entries, collecting as the scanner will.

    ``between(k)`` runs after the k-th read and returns any results it collected.
    """
    results: list[BatchResult] = []
    for k, start in enumerate(range(0, len(entries), batch)):
        pool.submit(entries[start : start + batch])
        results += pool.collect()
        if between is not None:
            results += between(k)
    results += pool.drain(timeout_s=30)
    assert pool.in_flight == 0
    return results


def processed(results: Sequence[BatchResult]) -> list[Any]:
    return [tick_id for r in results for tick_id in r.processed_ids]


@pytest.fixture
def pools() -> Iterator[list[ScannerPool]]:
    """Pools a test starts; closed (and their processes gone) afterwards."""
    started: list[ScannerPool] = []
    yield started
    for pool in started:
        pids = pool.pids()
        pool.close()
        assert wait_gone(pids, timeout_s=5) == []


def start(pools: list[ScannerPool], s: ScannerSettings, **kwargs: Any) -> ScannerPool:
    pool = ScannerPool(s, **kwargs).start()
    pools.append(pool)
    return pool


# -- pure parts ------------------------------------------------------------


def test_partition_is_stable_crc32() -> None:
    assert partition_of("AAA", 4) == partition_of(b"AAA", 4) == zlib.crc32(b"AAA") % 4
    entries = make_entries(500, 20)
    split = split_entries([*entries, ("x-0", {"price": "1"})], 3)
    assert split.no_symbol == ["x-0"]
    for part in range(3):
        ids = split.ids[part]
        assert ids == sorted(ids, key=lambda i: int(str(i).split("-")[0]))  # entry order kept
        assert {row[0] for row in split.rows[part]} <= {
            f["symbol"] for _, f in entries if partition_of(f["symbol"], 3) == part
        }
    assert sum(len(ids) for ids in split.ids) == 500


def test_dispatch_window_leaves_half_the_backlog_sheddable() -> None:
    assert dispatch_window(100, 1) == 4
    assert dispatch_window(4, 1) == 2
    assert dispatch_window(2, 1) == 1
    assert dispatch_window(2, 4) == 1


def test_ledger_checkpoints_tail_and_give_up() -> None:
    ledger = Ledger.empty(0, checkpoint_every=2)
    for i in (1, 2, 3):
        ledger.waiting.append(TickBatch(i, [f"{i}-0"], b""))
    first, second = ledger.next_to_send(4, 0.0), ledger.next_to_send(4, 0.0)
    assert first is not None and second is not None and ledger.next_to_send(2, 0.0) is None
    assert not first.flags and second.flags  # every 2nd dispatch asks for a checkpoint
    ledger.complete(1, None, 1.0)
    assert [b.id for b in ledger.tail] == [1]
    ledger.complete(2, b"state", 2.0)
    assert ledger.tail == [] and ledger.checkpoint == b"state"
    ledger.next_to_send(4, 3.0)
    assert ledger.stalled(10.0, 5.0) and not ledger.stalled(4.0, 5.0)
    failed = []
    for _ in range(GIVE_UP_AFTER_CRASHES):  # the replacement dies on it each time
        assert ledger.next_to_send(4, 3.0) is not None or ledger.sent
        failed.append(ledger.after_crash())
    assert failed[:-1] == [None, None] and failed[-1] is not None and failed[-1].id == 3
    assert ledger.in_flight == 0


# -- the pool ----------------------------------------------------------------


def test_pool_matches_one_engine_and_keeps_symbol_order(pools: list[ScannerPool]) -> None:
    entries = make_entries(6000, 40)
    pool = start(pools, settings())
    results = feed(pool, entries, batch=250)
    ids = processed(results)
    assert sorted(ids) == sorted(e[0] for e in entries) and len(ids) == len(set(ids))
    assert alert_keys(results) == reference_alerts(entries, PATTERNS)
    assert len(alert_keys(results)) > 50
    symbol_of = {e[0]: e[1]["symbol"] for e in entries}
    for sym in {f["symbol"] for _, f in entries}:
        reported = [i for i in ids if symbol_of[i] == sym]
        assert reported == [e[0] for e in entries if e[1]["symbol"] == sym]
    m = pool.metrics()
    assert m["submitted"] == m["completed"] == 6000 and m["alerts"] == len(alert_keys(results))
    assert m["skipped_backlog"] == 0 and m["batches_in_flight"] == 0


def test_bytes_entries_give_str_alerts(pools: list[ScannerPool]) -> None:
    entries = make_entries(2000, 10, as_bytes=True)
    results = feed(start(pools, settings(processing_workers=1)), entries, batch=500)
    text: list[Entry] = [
        (str(i, "ascii"), {k.decode(): v.decode() for k, v in f.items()})
        for i, f in entries
        if isinstance(i, bytes)
    ]
    assert alert_keys(results) == reference_alerts(text, PATTERNS)
    assert all(isinstance(i, bytes) for i in processed(results))


def test_sigkill_of_a_pool_process_mid_stream_loses_nothing(pools: list[ScannerPool]) -> None:
    entries = make_entries(8000, 40, seed=11)
    pool = start(pools, settings())
    victims: list[int] = []
    plan = {5: 0, 17: 1, 18: 1}  # at 18: partition 1's replacement, likely mid-replay

    def kill_some(k: int) -> list[BatchResult]:
        got: list[BatchResult] = []
        if k not in plan:
            return got

        def replaced() -> bool:
            got.extend(pool.collect(timeout_s=0.01))
            return pool.pids()[plan[k]] not in victims

        wait_until(replaced, timeout_s=10, message="the killed process was not replaced")
        victims.append(pool.pids()[plan[k]])
        os.kill(victims[-1], signal.SIGKILL)
        return got

    results = feed(pool, entries, batch=200, between=kill_some)
    ids = processed(results)
    assert len(ids) == len(set(ids)) == len(entries)  # each tick reported exactly once
    assert alert_keys(results) == reference_alerts(entries, PATTERNS)  # none lost, none repeated
    assert pool.metrics()["crash_restarts"] == 3
    assert not set(victims) & set(pool.pids())


def test_full_backlog_blocks_submit_instead_of_dropping(pools: list[ScannerPool]) -> None:
    entries = make_entries(100, 5)
    pool = start(pools, settings(processing_workers=1, processing_backlog=2))
    child = pool.pids()[0]
    os.kill(child, signal.SIGSTOP)
    done = threading.Event()

    def submit_all() -> None:
        for start_at in range(0, 100, 10):
            pool.submit(entries[start_at : start_at + 10])
        done.set()

    thread = threading.Thread(target=submit_all, daemon=True)
    try:
        thread.start()
        wait_until(lambda: pool.in_flight == 2, timeout_s=5, message="backlog never filled")
        assert not done.wait(0.3), "submit returned although the backlog is full"
        assert pool.metrics()["submitted"] == 30  # the third batch waits in submit
    finally:
        os.kill(child, signal.SIGCONT)
    assert done.wait(10)
    thread.join(5)
    results = pool.drain(timeout_s=10)
    assert sorted(processed(results)) == sorted(e[0] for e in entries)
    assert pool.metrics()["skipped_backlog"] == 0


def test_shed_oldest_reports_every_shed_tick(pools: list[ScannerPool]) -> None:
    entries = make_entries(100, 5)
    s = settings(
        processing_workers=1, processing_backlog=4, on_backlog_full=BacklogPolicy.SHED_OLDEST
    )
    pool = start(pools, s)
    child = pool.pids()[0]
    os.kill(child, signal.SIGSTOP)
    try:
        for start_at in range(0, 100, 10):
            pool.submit(entries[start_at : start_at + 10])  # never blocks
        early = pool.collect()
    finally:
        os.kill(child, signal.SIGCONT)
    results = early + pool.drain(timeout_s=10)
    shed = [i for r in results for i in r.shed_ids]
    done = processed(results)
    # Window 2: batches 1-2 are with the process, 9-10 the newest; 3-8 were shed.
    assert shed == [e[0] for e in entries[20:80]]
    assert done == [e[0] for e in entries[:20]] + [e[0] for e in entries[80:]]
    assert pool.metrics()["skipped_backlog"] == 60


def test_process_over_its_memory_share_is_restarted(pools: list[ScannerPool]) -> None:
    entries = make_entries(6000, 40, seed=5)
    measured: list[int] = []

    def rss_of(pid: int) -> int:
        measured.append(pid)
        return 10**12 if len(measured) in (1, 4) else 0  # a "leak" at two checks

    pool = start(pools, settings(memory_check_interval_s=0.01), rss_of=rss_of)
    results = feed(pool, entries, batch=100, between=lambda k: pool.collect(timeout_s=0.02))
    assert pool.metrics()["memory_restarts"] == 2
    assert sorted(processed(results)) == sorted(e[0] for e in entries)
    assert alert_keys(results) == reference_alerts(entries, PATTERNS)


def test_a_process_whose_state_exceeds_its_share_is_not_restarted_forever(
    pools: list[ScannerPool],
) -> None:
    entries = make_entries(6000, 40, seed=5)
    pool = start(pools, settings(memory_check_interval_s=0.01), rss_of=lambda pid: 10**12)
    results = feed(pool, entries, batch=100, between=lambda k: pool.collect(timeout_s=0.02))
    checks = MEMORY_CHECKS_OVER - 1
    assert pool.metrics()["memory_restarts"] == checks * pool.workers  # then left running
    assert sorted(processed(results)) == sorted(e[0] for e in entries)
    assert alert_keys(results) == reference_alerts(entries, PATTERNS)


def test_memory_is_really_measured(pools: list[ScannerPool]) -> None:
    """A share far below what a Python process needs: restarts, still no loss."""
    entries = make_entries(3000, 20, seed=3)
    s = settings(processing_workers=1, max_memory_mb=1, memory_check_interval_s=0.2)
    pool = start(pools, s)
    results = feed(pool, entries, batch=100, between=lambda k: pool.collect(timeout_s=0.02))
    wait_until(lambda: pool.collect() == [] and pool.metrics()["memory_restarts"] >= 1, 5)
    assert sorted(processed(results)) == sorted(e[0] for e in entries)
    assert alert_keys(results) == reference_alerts(entries, PATTERNS)


def test_stalled_process_is_replaced(pools: list[ScannerPool]) -> None:
    entries = make_entries(2000, 10)
    pool = start(pools, settings(processing_workers=1, stall_timeout_s=0.3))
    os.kill(pool.pids()[0], signal.SIGSTOP)
    results = feed(pool, entries, batch=200)
    assert pool.metrics()["stall_restarts"] >= 1
    assert sorted(processed(results)) == sorted(e[0] for e in entries)


POISON_CHILD = """
import os, sys
from orchestrator.apps.scanner import detection, poolproc
real = detection.PatternEngine.process
def process(self, rows, mute=False):
    if any(row[0] == "POISON" for row in rows):
        os._exit(3)
    return real(self, rows, mute)
detection.PatternEngine.process = process
sys.exit(poolproc.main())
"""


def test_poison_batch_is_given_up_not_retried_forever(pools: list[ScannerPool]) -> None:
    entries = make_entries(600, 5)
    poison: Entry = ("poison-0", {"symbol": "POISON", "price": "1", "volume": "1", "ts": "1"})
    pool = start(pools, settings(processing_workers=1), argv=[sys.executable, "-c", POISON_CHILD])
    pool.submit(entries[:200])
    pool.submit([poison])
    results = feed(pool, entries[200:], batch=200)
    assert [i for r in results for i in r.failed_ids] == ["poison-0"]
    assert sorted(processed(results)) == sorted(e[0] for e in entries)
    m = pool.metrics()
    assert m["failed"] == 1 and m["crash_restarts"] == GIVE_UP_AFTER_CRASHES


def test_warm_up_primes_state_without_reporting(pools: list[ScannerPool]) -> None:
    entries = make_entries(4000, 20, seed=9)
    pool = start(pools, settings())
    pool.warm_up(entries[:2000])
    results = feed(pool, entries[2000:], batch=250)
    assert sorted(processed(results)) == sorted(e[0] for e in entries[2000:])
    later = {e[0] for e in entries[2000:]}
    expected = [a for a in reference_alerts(entries, PATTERNS) if a[0] in later]
    assert alert_keys(results) == expected
    assert pool.metrics()["submitted"] == 2000


def test_invalid_ticks_are_processed_with_a_reason(pools: list[ScannerPool]) -> None:
    pool = start(pools, settings(processing_workers=1))
    pool.submit(
        [
            ("1-0", {"symbol": "A", "price": "x", "volume": "1", "ts": "1"}),
            ("2-0", {"price": "1", "volume": "1", "ts": "1"}),
            ("3-0", {"symbol": "A", "price": "1", "volume": "1", "ts": "1"}),
        ]
    )
    results = pool.drain(timeout_s=10)
    assert sorted(processed(results)) == ["1-0", "2-0", "3-0"]
    invalid = dict(i for r in results for i in r.invalid)
    assert set(invalid) == {"1-0", "2-0"} and "no symbol" in invalid["2-0"]
    assert pool.metrics()["invalid"] == 2


def test_close_stops_every_process() -> None:
    pool = ScannerPool(settings()).start()
    pids = pool.pids()
    assert all(pid_alive(pid) for pid in pids)
    pool.close()
    assert wait_gone(pids, timeout_s=5) == []
    with pytest.raises(ScannerPoolError):
        pool.start()


SCANNER = """
import sys, time
from orchestrator.apps.scanner.scanner_pool import ScannerPool
from orchestrator.apps.scanner.scanner_settings import ScannerSettings
pool = ScannerPool(ScannerSettings(processing_workers=2)).start()
tick = {"price": "1", "volume": "1", "ts": "1"}
pool.submit([(f"{i}-0", {"symbol": f"S{i}", **tick}) for i in range(9)])
assert len(pool.drain(timeout_s=30)) == 2  # both processes are up and idle
print(*pool.pids(), flush=True)
time.sleep(60)
"""


def test_pool_processes_exit_when_the_scanner_is_killed() -> None:
    scanner = subprocess.Popen([sys.executable, "-c", SCANNER], stdout=subprocess.PIPE, text=True)
    try:
        assert scanner.stdout is not None
        pids = [int(pid) for pid in scanner.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(pid) for pid in pids)
    finally:
        scanner.kill()
        scanner.wait(5)
    assert wait_gone(pids, timeout_s=15) == []  # end of file on stdin: they exit

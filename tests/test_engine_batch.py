"""ProcessingEngine with real worker processes.

Misbehaviour comes from ``FaultyRepository``, a test-only repository the
worker processes import like any other: a symbol named ``FAULT.SYMBOL``
misbehaves as FAULT says, then (if it survives) loads SYMBOL's candles.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psutil
import pytest

from orchestrator.apps.batch.engine import (
    Candles,
    DateRange,
    FormulaError,
    ParquetCandleRepository,
    ProcessingEngine,
    ProcessingJob,
    ProcessingResult,
    ScanSpec,
    scan_serially,
)
from orchestrator.apps.batch.engine.synthetic import symbol_names, write_dataset
from orchestrator.pools import PoolAborted, default_pool_size
from orchestrator.procs import wait_gone

SYMBOLS = symbol_names(200)
FORMULA = (
    "rsi(14) < 45 and close > sma(50) or crosses_above(macd(), macd_signal())"
    " or close > bbands_upper(20, 2) and volume > 1.5 * sma(volume, 20)"
)
TIMEOUT_S = 1.0
MARGIN_MS = 500


def _hang_in_read() -> None:
    r, _w = os.pipe()
    os.read(r, 1)  # nobody writes


def _spin() -> None:
    while True:
        pass


def _hog() -> None:
    block = bytearray(b"x") * (600 << 20)  # touched: resident
    time.sleep(3600)
    del block


def _raise() -> None:
    raise RuntimeError("corrupt parquet footer")


def _shallow_stack() -> None:
    """Leave this worker, once its candles are loaded, a few frames of stack
    beyond the scan's own: the formula overflows it when evaluated (as a
    formula too deep for the stack would, for every symbol)."""
    depth = 0
    frame: types.FrameType | None = sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    sys.setrecursionlimit(depth + 10)


FAULTS: dict[str, Callable[[], object]] = {
    "SLEEP": lambda: time.sleep(3600),
    "SPIN": _spin,
    "BLOCK": _hang_in_read,
    "EXIT": lambda: os._exit(3),
    "ABORT": os.abort,
    "KILL": lambda: os.kill(os.getpid(), signal.SIGKILL),
    "RAISE": _raise,
    "HOG": _hog,
    "DEEP": _shallow_stack,  # after loading the candles
    "SLOW": lambda: time.sleep(0.4),
}


AFTER_LOAD = frozenset({"DEEP"})


@dataclass(frozen=True, slots=True)
class FaultyRepository(ParquetCandleRepository):
    """Test-only: ``FAULT.SYMBOL`` misbehaves, then loads SYMBOL."""

    def load(
        self, symbol: str, timeframe: str, *, start: date | None = None, end: date | None = None
    ) -> Candles:
        fault, _, real = symbol.partition(".")
        if real and fault in FAULTS:
            if fault not in AFTER_LOAD:
                FAULTS[fault]()
            symbol = real
        candles = ParquetCandleRepository.load(self, symbol, timeframe, start=start, end=end)
        if real and fault in AFTER_LOAD:
            FAULTS[fault]()
        return candles


def job(symbols: list[str], **options: object) -> ProcessingJob:
    values: dict[str, object] = {"timeout_s": TIMEOUT_S}
    values.update(options)
    formula = str(values.pop("formula", FORMULA))
    date_range = values.pop("date_range", None)
    return ProcessingJob("test", symbols, "1d", date_range, formula, **values)  # type: ignore[arg-type]


def run(engine: ProcessingEngine, batch: ProcessingJob) -> list[ProcessingResult]:
    return asyncio.run(engine.process_batch(batch))


def essence(result: ProcessingResult) -> tuple[object, ...]:
    """All of a result but its timing."""
    return (result.matches, result.computed_indicators, result.error)


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> FaultyRepository:
    root = tmp_path_factory.mktemp("candles")
    write_dataset(root, SYMBOLS, "1d", 300)
    return FaultyRepository(root)


@pytest.fixture(scope="module")
def engine(repository: FaultyRepository) -> Iterator[ProcessingEngine]:
    with ProcessingEngine(repository, max_workers=2) as shared:
        yield shared


@pytest.fixture(scope="module")
def serial(repository: FaultyRepository) -> dict[str, tuple[object, ...]]:
    spec = ScanSpec.for_job(repository, job(SYMBOLS))
    return {r.symbol: essence(r) for r in scan_serially(spec, SYMBOLS)}


# ------------------------------------------------------------------ results


def test_results_are_those_of_a_serial_run(
    engine: ProcessingEngine, serial: dict[str, tuple[object, ...]]
) -> None:
    results = run(engine, job(SYMBOLS))
    assert [r.symbol for r in results] != [] and len(results) == len(SYMBOLS)
    assert {r.symbol: essence(r) for r in results} == serial
    assert sum(len(r.matches) for r in results) > 100  # the formula does match
    assert all(r.ok and r.processing_time_ms > 0 for r in results)


def test_progress_is_reported_once_per_symbol(engine: ProcessingEngine) -> None:
    calls: list[tuple[int, int]] = []
    results = asyncio.run(engine.process_batch(job(SYMBOLS[:30]), lambda *call: calls.append(call)))
    assert calls == [(n, 30) for n in range(1, 31)]
    assert len(results) == 30


def test_results_arrive_in_completion_order(engine: ProcessingEngine) -> None:
    results = run(engine, job(["SLOW.S0000", *SYMBOLS[1:40]]))
    order = [r.symbol for r in results]
    # Submitted first, done well after others (how many depends on the load).
    assert order.index("SLOW.S0000") >= 10 and results[order.index("SLOW.S0000")].ok


def test_3_hanging_and_2_crashing_symbols_among_200_are_exactly_the_5_errors(
    engine: ProcessingEngine, serial: dict[str, tuple[object, ...]]
) -> None:
    faulty = {
        "SLEEP.S0010": "Processing timeout",
        "SPIN.S0050": "Processing timeout",
        "BLOCK.S0090": "Processing timeout",
        "EXIT.S0130": "worker died: code 3",
        "KILL.S0170": "worker died: signal 9 (SIGKILL)",
    }
    real = {name.partition(".")[2]: name for name in faulty}
    symbols = [real.get(s, s) for s in SYMBOLS]
    results = run(engine, job(symbols))
    assert len(results) == 200
    assert {r.symbol: r.error for r in results if r.error} == faulty
    assert {r.symbol: essence(r) for r in results if r.ok} == {
        s: v for s, v in serial.items() if s not in real
    }
    for result in results:
        if result.error == "Processing timeout":
            assert TIMEOUT_S * 1000 <= result.processing_time_ms <= TIMEOUT_S * 1000 + MARGIN_MS


def test_exceptions_and_other_deaths_are_recorded(engine: ProcessingEngine) -> None:
    results = run(engine, job(["ABORT.S0001", "RAISE.S0002", "MISSING", "S0003"]))
    errors = {r.symbol: r.error for r in results}
    assert errors["ABORT.S0001"] == "worker died: signal 6 (SIGABRT)"
    assert errors["RAISE.S0002"] == "RuntimeError: corrupt parquet footer"
    assert errors["MISSING"] is not None
    assert errors["MISSING"].startswith("FileNotFoundError: no 1d candles for MISSING")
    assert errors["S0003"] is None


def test_a_symbol_over_its_memory_cap_is_stopped(engine: ProcessingEngine) -> None:
    results = run(engine, job(["HOG.S0001", "S0002"], memory_mb=400, timeout_s=30))
    errors = {r.symbol: r.error for r in results}
    assert errors["HOG.S0001"] is not None
    assert re.fullmatch(r"memory limit exceeded: \d+ MB > 400 MB cap", errors["HOG.S0001"])
    assert errors["S0002"] is None


def test_last_bar_only_and_date_ranges(engine: ProcessingEngine) -> None:
    trend = "close > sma(20) and rsi(14) > 40"  # true on about half the bars
    everything = {r.symbol: r for r in run(engine, job(SYMBOLS[:40], formula=trend))}
    last = {r.symbol: r for r in run(engine, job(SYMBOLS[:40], formula=trend, last_bar_only=True))}
    days = DateRange(date(2024, 6, 3), date(2024, 6, 28))
    june = {
        r.symbol: r for r in engine.iter_batch(job(SYMBOLS[:40], formula=trend, date_range=days))
    }
    for symbol, full in everything.items():
        expected_last = tuple(m for m in full.matches[-1:] if m.date() == date(2024, 12, 31))
        assert last[symbol].matches == expected_last
        in_june = tuple(m for m in full.matches if days.start <= m.date() <= days.end)
        assert june[symbol].matches == in_june  # indicators use the history before the range
    assert any(r.matches for r in june.values()) and any(r.matches for r in last.values())


def test_max_workers_defaults_to_the_cpu_count(repository: FaultyRepository) -> None:
    assert ProcessingEngine(repository).max_workers == default_pool_size()
    assert default_pool_size() == len(os.sched_getaffinity(0))


# ------------------------------------------------------------------ lifecycle


def test_a_formula_failing_at_evaluation_fails_the_batch_once(
    repository: FaultyRepository,
) -> None:
    before = children()
    symbols = [*SYMBOLS[:20], "DEEP.S0020", *SYMBOLS[21:60]]
    with ProcessingEngine(repository, max_workers=2) as engine:
        results: list[ProcessingResult] = []
        with pytest.raises(FormulaError, match="nested too deep to evaluate") as caught:
            results.extend(engine.iter_batch(job(symbols)))
        assert caught.value.text == FORMULA
        assert len(results) < len(symbols) and all(r.ok for r in results)
        pids = engine.pids()
    assert wait_gone(pids, timeout_s=5.0) == []
    assert children() <= before


def test_a_bad_formula_fails_before_any_process_starts(repository: FaultyRepository) -> None:
    lazy = ProcessingEngine(repository, max_workers=2)
    with pytest.raises(FormulaError, match="unknown function 'smaa'"):
        run(lazy, job(SYMBOLS[:3], formula="close > smaa(20)"))
    assert lazy.pids() == []


def test_processes_start_lazily_and_end_with_the_with_block(repository: FaultyRepository) -> None:
    before = children()
    engine = ProcessingEngine(repository, max_workers=2)
    with engine:
        assert engine.pids() == []
        assert all(r.ok for r in run(engine, job(SYMBOLS[:10])))
        pids = engine.pids()
        assert len(pids) == 4  # launcher, 2 workers, 1 standby
    assert wait_gone(pids, timeout_s=5.0) == []
    assert children() <= before


def test_cancelling_a_batch_leaves_no_process_behind(repository: FaultyRepository) -> None:
    before = children()
    engine = ProcessingEngine(repository, max_workers=2)
    stuck = job(["SLEEP.S0000", "SLEEP.S0001", *SYMBOLS[2:20]], timeout_s=60)

    async def cancel_midway() -> list[int]:
        progress: list[int] = []
        task = asyncio.create_task(
            engine.process_batch(stuck, lambda done, _: progress.append(done))
        )
        deadline = time.monotonic() + 10
        while len(progress) < 5 and time.monotonic() < deadline:  # running, sleepers stuck
            await asyncio.sleep(0.01)
        assert len(progress) >= 5
        pids = engine.pids()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pids

    pids = asyncio.run(cancel_midway())
    assert len(pids) >= 3
    assert wait_gone(pids, timeout_s=5.0) == []
    assert children() <= before
    with engine:  # the next batch starts a fresh pool
        assert all(r.ok for r in run(engine, job(SYMBOLS[:4])))
    assert children() <= before


def test_a_failing_progress_callback_stops_the_batch(repository: FaultyRepository) -> None:
    before = children()

    def explode(done: int, total: int) -> None:
        raise ValueError("dashboard down")

    with ProcessingEngine(repository, max_workers=2) as engine:
        with pytest.raises(ValueError, match="dashboard down"):
            asyncio.run(engine.process_batch(job(SYMBOLS[:50]), explode))
        assert engine.pids() == []
    assert children() <= before


def test_abort_stops_a_synchronous_batch_and_the_next_one_starts_afresh(
    repository: FaultyRepository,
) -> None:
    before = children()
    with ProcessingEngine(repository, max_workers=2) as engine:
        batch = engine.iter_batch(job(["SLEEP.S0000", *SYMBOLS[1:30]], timeout_s=60))
        next(batch)
        pids = engine.pids()
        engine.abort()  # as a SIGTERM handler would
        with pytest.raises(PoolAborted):
            list(batch)
        assert wait_gone(pids, timeout_s=5.0) == []
        assert all(r.ok for r in engine.iter_batch(job(SYMBOLS[:4])))
    assert children() <= before


def test_max_workers_must_be_positive(repository: FaultyRepository) -> None:
    with pytest.raises(ValueError, match="max_workers must be >= 1"):
        ProcessingEngine(repository, max_workers=0)


def test_iter_batch_serves_synchronous_callers(engine: ProcessingEngine, tmp_path: Path) -> None:
    batch = engine.iter_batch(job(SYMBOLS[:12]))
    first = next(batch)
    assert isinstance(first, ProcessingResult)
    assert len([first, *batch]) == 12

"""The batch engine against a serial run, the seed's design and a plain map.

For a daily batch (2,500 symbols x 1,260 bars, a formula of 5 indicators)
and an intraday one (500 symbols x 19,000 five-minute bars):

* serial: the same per-symbol function in one loop, in one single-threaded
  process (a pool of one worker running one task that loops over all
  symbols, so no dispatch cost is counted);
* engine: ``ProcessingEngine.iter_batch(job)`` with one worker per core,
  warm, its results collected in a list: what the batch worker runs
  (``apps.batch.runner``), so the headline;
* async: the same engine's ``await process_batch(job)``, the seed's
  coroutine (its own event loop, the pool driven from a helper thread);
* seed: ``ProcessPoolExecutor.submit`` per symbol and ``as_completed``, as
  seed 002 does it, same function, warm, its workers started with the same
  environment as ours (``pools.WORKER_ENV``), so only the dispatch differs;
* map: the same executor's ``map(chunksize=64)``, the cheapest dispatch
  there is (and no timeouts: a hanging symbol would hang its whole chunk).

All but serial return what a user of the engine gets: a ``ProcessingResult``
per symbol (its matches as datetimes, its indicator values, its time). The
seed and the map call ``timed_scan`` (the scan, timed in the worker) and
build each result in the parent, as the engine does; each round checks
that they all found the same matches. A round runs every contender once
(the engine, async and the map back to back, in turn first), under the
same background load; jobs, data and warm workers are ready before any
clock starts, each contender starts with a collected heap (``gc.collect()``,
and of the others' runs only what they found kept), and each figure is the
best of ``REPEATS`` rounds.

Parallel efficiency = serial / (cores x engine), targets 0.85 (daily) and
0.9 (intraday); engine/seed is the time ratio (target <= 1); vs map is
map / engine (target >= 1.0 on the daily batch: the engine, with its
timeouts, memory caps and crash isolation, as fast as the plain map), and
async the same for ``process_batch``; both also as the median of the
rounds' own ratios, steadier on a shared machine (a round's contenders run
under the same background load, the bests may come from different rounds).
Other load on the machine skews wall-clock efficiency against the parallel
run (one serial process is the last to lose its core), so figures less
sensitive to it follow: the parent's CPU per symbol (the engine's; the
map's, its threads included), CPU efficiency = serial CPU / (workers' +
parent's CPU), what the engine adds to the work (contention still inflates
CPU time a little), and cpu/map, the engine's CPU (workers' and parent's)
over the map's. Then the daily batch again with 5 symbols that hang and a
2 s timeout: at most the clean run's time + 3 s. Data is generated once, in
parallel, and cached under ``/tmp`` keyed by its parameters.

A run of 2026-12-06 on the project's 2-core VM, shared with other work
(load average 4.5 before, 7.7 after): daily, the engine at 0.87x the map
with ``iter_batch`` (the median of the rounds' own ratios 0.70x) and 0.96x
with ``process_batch`` (0.77x), for the same CPU as the map (cpu/map
1.00x; the parent's 26 us per symbol against the map's 15); intraday 1.00x
and 0.97x (cpu/map 1.05x); parallel efficiency 0.86 and 0.99; engine/seed
0.63x on both; 5 hanging symbols add 2.34 s. The target is missed in that
run and met in others: the three runs of the day gave 0.87x, 1.09x and
0.87x on the daily batch (medians 0.92x, 0.97x, 0.70x), and the code
before that day's changes (1809c7c), under this bench, 1.02x (median
1.02x). On this VM the ratio moves by more than 0.1 from run to run: the
engine is at parity with the map, not ahead of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TypeVar

import psutil

from orchestrator.apps.batch.engine import (
    ParquetCandleRepository,
    ProcessingEngine,
    ProcessingJob,
    ProcessingResult,
    ScanSpec,
    scan_symbol,
)
from orchestrator.apps.batch.engine.candles import Candles
from orchestrator.apps.batch.engine.scan import SymbolScan
from orchestrator.apps.batch.engine.synthetic import generate_candles, symbol_names
from orchestrator.pools import (
    WORKER_ENV,
    KillablePool,
    PoolSettings,
    Task,
    default_pool_size,
)

REPEATS = 5
DAILY_FORMULA = (
    "rsi(14) > 50 and close > sma(200) and volume > sma(volume, 20)"
    " and macd_hist() > 0 and close < bbands_upper(20, 2)"
)
INTRADAY_FORMULA = (
    "crosses_above(ema(9), ema(21)) and rsi(14) > 50"
    " and volume > 1.5 * sma(volume, 20) and atr(14) > 0.001 * close"
)
HANG_TIMEOUT_S = 2.0
HANG_COUNT = 5
MAP_CHUNKSIZE = 64
MAP_TARGET = 1.0  # map s / engine s, daily
CACHE = Path(tempfile.gettempdir()) / "orch-bench-engine"


@dataclass(frozen=True, slots=True)
class Dataset:
    timeframe: str
    symbols: tuple[str, ...]
    bars: int
    repository: ParquetCandleRepository


@dataclass(frozen=True, slots=True)
class HangingRepository(ParquetCandleRepository):
    """Candles, except that ``hang`` symbols block forever (a stuck read)."""

    hang: frozenset[str] = field(default_factory=frozenset)

    def load(
        self, symbol: str, timeframe: str, *, start: date | None = None, end: date | None = None
    ) -> Candles:
        if symbol in self.hang:
            time.sleep(3600)
        return ParquetCandleRepository.load(self, symbol, timeframe, start=start, end=end)


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    shape: str
    cores: int
    target: float
    matches: int
    best: dict[str, float]  # each measure's best over the rounds; median_*: per-round ratios

    @property
    def efficiency(self) -> float:
        return self.best["serial_s"] / (self.cores * self.best["engine_s"])

    @property
    def cpu_efficiency(self) -> float:
        """Serial CPU / (workers' + our CPU): less sensitive to other load."""
        return self.best["serial_cpu_s"] / self.best["engine_cpu_s"]

    def per_symbol_us(self, key: str) -> float:
        return self.best[key] / int(self.shape.split()[0]) * 1e6


# ------------------------------------------------------------ data


def generate_chunk(context: tuple[str, str, int], symbols: Sequence[str]) -> int:
    """Pool target: write ``symbols`` into the dataset at ``context``."""
    root, timeframe, bars = context
    repository = ParquetCandleRepository(Path(root))
    for symbol in symbols:
        repository.save(symbol, timeframe, generate_candles(symbol, timeframe, bars, seed=7))
    return len(symbols)


def dataset(timeframe: str, count: int, bars: int) -> Dataset:
    root = CACHE / f"{timeframe}-{count}x{bars}-seed7-v1"
    symbols = tuple(symbol_names(count))
    done = root / "COMPLETE"
    if not done.exists():
        started = time.monotonic()
        chunks = [symbols[i : i + 50] for i in range(0, count, 50)]
        tasks = [Task(f"chunk{i}", chunk) for i, chunk in enumerate(chunks)]
        settings = PoolSettings(target="bench.bench_engine:generate_chunk", preload=("polars",))
        with KillablePool(settings) as pool:
            failed = [o for o in pool.run(tasks, (str(root), timeframe, bars)) if not o.ok]
        if failed:
            raise RuntimeError(f"data generation failed: {failed[0].error}")
        done.write_text("ok\n")
        print(f"  generated {root} in {time.monotonic() - started:.1f}s", flush=True)
    return Dataset(timeframe, symbols, bars, ParquetCandleRepository(root))


# ------------------------------------------------------------ runs


def serial_pass(spec: ScanSpec, symbols: Sequence[str]) -> float:
    """Pool target: scan every symbol in a loop; the loop's seconds."""
    started = time.perf_counter()
    for symbol in symbols:
        scan_symbol(spec, symbol)
    return time.perf_counter() - started


def timed_scan(spec: ScanSpec, symbol: str) -> tuple[SymbolScan, float]:
    """The map's and the seed's target: a symbol's scan and its seconds, so
    that they return what the engine does (``ProcessingResult``)."""
    started = time.monotonic()
    scan = scan_symbol(spec, symbol)
    return scan, time.monotonic() - started


def _result(symbol: str, scan: SymbolScan, elapsed_s: float) -> ProcessingResult:
    return ProcessingResult(symbol, scan.match_times(), scan.indicators, elapsed_s * 1000)


def map_style(
    executor: ProcessPoolExecutor, spec: ScanSpec, symbols: Sequence[str]
) -> list[ProcessingResult]:
    """A plain chunked ``executor.map``: each symbol's result, in order."""
    scan = functools.partial(timed_scan, spec)
    pairs = executor.map(scan, symbols, chunksize=MAP_CHUNKSIZE)
    return [_result(symbol, *pair) for symbol, pair in zip(symbols, pairs, strict=True)]


def seed_style(
    executor: ProcessPoolExecutor, spec: ScanSpec, symbols: Sequence[str]
) -> list[ProcessingResult]:
    """Seed 002's loop: submit every symbol, collect with as_completed."""
    futures = {executor.submit(timed_scan, spec, symbol): symbol for symbol in symbols}
    results = []
    for future in as_completed(futures):
        try:
            results.append(_result(futures[future], *future.result(timeout=60)))
        except Exception as exc:  # the seed records the error and goes on
            results.append(ProcessingResult(futures[future], (), {}, 0.0, repr(exc)))
    return results


class Contenders:
    """Serial, engine, seed- and map-style runners of one batch, all started
    and warm, so each round times them all under the same background load.
    Every one but the serial loop returns each symbol's ``ProcessingResult``:
    what a user of the engine gets."""

    def __init__(self, data: Dataset, job: ProcessingJob, cores: int) -> None:
        self.job = job
        self.spec = ScanSpec.for_job(data.repository, job)
        self.symbols = data.symbols
        self.serial = KillablePool(
            PoolSettings(
                target="bench.bench_engine:serial_pass",
                size=1,
                standby=0,  # nothing else runs beside the serial loop
                preload=("numpy", "polars", "orchestrator.apps.batch.engine.scan"),
                worker_init="orchestrator.apps.batch.engine.scan:warm_up",
            )
        )
        self.engine = ProcessingEngine(data.repository, cores)
        # The seed's workers get our workers' environment (one thread per
        # library, an allocator that keeps its memory): only dispatch differs.
        os.environ.update(WORKER_ENV)
        self.executor = ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn"))
        warm = self.symbols[: 20 * cores]
        self.serial.start()
        self.time_serial(warm)
        self.time_engine(ProcessingJob("warm", warm, job.timeframe, None, job.formula))
        seed_style(self.executor, self.spec, warm)  # starts every worker
        map_style(self.executor, self.spec, warm)

    def close(self) -> None:
        self.executor.shutdown()
        self.engine.close()
        self.serial.close()

    def round(self, flip: bool) -> tuple[dict[str, float], Found]:
        """Time each contender once: the measures, and what the engine
        found, once checked against the others'. The engine, its coroutine
        and the map run back to back, in turn first (``flip``); each starts
        with a collected heap and only what the others found kept (not
        their results), so that none pays for another's objects."""
        elapsed_s, cpu_s = self.time_serial(self.symbols)
        measures = {"serial_s": elapsed_s, "serial_cpu_s": cpu_s}
        gc.collect()
        measures["seed_s"], by_seed = _timed(seed_style, self.executor, self.spec, self.symbols)
        by = {"seed": _found(by_seed)}
        del by_seed
        for contender in (self._map, self._engine, self._async)[:: -1 if flip else 1]:
            gc.collect()
            contender(measures, by)
        found = by.pop("engine")
        for name, theirs in by.items():
            if theirs != found:
                raise RuntimeError(f"the engine's results differ from the {name} run's")
        return measures, found

    def _engine(self, measures: dict[str, float], by: dict[str, Found]) -> None:
        engine, results = self.time_engine(self.job)
        measures |= engine
        by["engine"] = _found(results)

    def _async(self, measures: dict[str, float], by: dict[str, Found]) -> None:
        measures["async_s"], results = _timed(self.time_async)
        by["async"] = _found(results)

    def _map(self, measures: dict[str, float], by: dict[str, Found]) -> None:
        workers = _cpu_now(list(self.executor._processes))
        mine = time.process_time()
        measures["map_s"], results = _timed(map_style, self.executor, self.spec, self.symbols)
        measures["map_parent_s"] = time.process_time() - mine
        measures["map_cpu_s"] = measures["map_parent_s"] + _cpu_since(workers)
        by["map"] = _found(results)

    def time_serial(self, symbols: Sequence[str]) -> tuple[float, float]:
        """(seconds, CPU seconds) of the serial loop."""
        worker = psutil.Process(self.serial.pids()[1])
        cpu = _cpu_s(worker)
        (outcome,) = self.serial.run([Task("serial", symbols)], self.spec)
        return float(outcome.value), _cpu_s(worker) - cpu  # type: ignore[arg-type]

    def time_engine(self, job: ProcessingJob) -> tuple[dict[str, float], list[ProcessingResult]]:
        """``iter_batch``, as the batch worker runs it: seconds, our CPU
        seconds and the workers' and ours, and the results."""
        workers = _cpu_now(self.engine.pids()[1:])
        mine = time.process_time()
        started = time.perf_counter()
        results = list(self.engine.iter_batch(job))
        elapsed = time.perf_counter() - started
        parent_s = time.process_time() - mine
        measures = {
            "engine_s": elapsed,
            "parent_s": parent_s,
            "engine_cpu_s": parent_s + _cpu_since(workers),
        }
        return measures, results

    def time_async(self) -> list[ProcessingResult]:
        """``process_batch``, the seed's coroutine: its own event loop, the
        pool driven from a helper thread."""
        return asyncio.run(self.engine.process_batch(self.job))


T = TypeVar("T")


def _timed(run: Callable[..., T], *args: object) -> tuple[float, T]:
    started = time.perf_counter()
    value = run(*args)
    return time.perf_counter() - started, value


Found = list[tuple[str, tuple[datetime, ...], str | None]]


def _found(results: Sequence[ProcessingResult]) -> Found:
    """What a run found, to compare with another's: (symbol, matches, error)."""
    return sorted((r.symbol, r.matches, r.error) for r in results)


def _cpu_s(process: psutil.Process) -> float:
    return float(sum(process.cpu_times()[:2]))


def _cpu_now(pids: Sequence[int]) -> dict[psutil.Process, float]:
    now = {}
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            now[process] = _cpu_s(process)
    return now


def _cpu_since(before: dict[psutil.Process, float]) -> float:
    """CPU seconds used since ``before``; the idle standby, let go at the
    end of a batch, may be gone: it used next to nothing."""
    total = 0.0
    for process, cpu_s in before.items():
        with contextlib.suppress(psutil.NoSuchProcess):
            total += _cpu_s(process) - cpu_s
    return total


def compare(name: str, data: Dataset, formula: str, last_bar_only: bool, target: float) -> Row:
    cores = default_pool_size()
    job = ProcessingJob(
        name, data.symbols, data.timeframe, None, formula, last_bar_only=last_bar_only
    )
    contenders = Contenders(data, job, cores)
    best: dict[str, float] = {}
    paired: dict[str, list[float]] = {"vs_map": [], "async_vs_map": []}
    try:
        for i in range(REPEATS):
            measures, found = contenders.round(flip=i % 2 == 1)
            for key, value in measures.items():
                best[key] = min(best.get(key, value), value)
            paired["vs_map"].append(measures["map_s"] / measures["engine_s"])
            paired["async_vs_map"].append(measures["map_s"] / measures["async_s"])
    finally:
        contenders.close()
    best |= {f"median_{key}": statistics.median(ratios) for key, ratios in paired.items()}
    errors = [error for _, _, error in found if error]
    if errors:
        raise RuntimeError(f"{name}: {len(errors)} errors, first: {errors[0]}")
    matches = sum(len(times) for _, times, _ in found)
    return Row(name, f"{len(data.symbols)} x {data.bars}", cores, target, matches, best)


def hanging(data: Dataset, formula: str) -> tuple[float, float, list[str]]:
    """(clean s, with hangs s, errors): the daily batch with a 2 s timeout,
    without and with 5 symbols that hang, interleaved, best of each."""
    step = len(data.symbols) // HANG_COUNT
    hang = frozenset(data.symbols[step // 2 :: step][:HANG_COUNT])
    job = ProcessingJob(
        "hang",
        data.symbols,
        data.timeframe,
        None,
        formula,
        timeout_s=HANG_TIMEOUT_S,
        last_bar_only=True,
    )
    warm = ProcessingJob("warm", data.symbols[:40], data.timeframe, None, formula)
    clean_s = hung_s = float("inf")
    errors: list[str] = []
    with (
        ProcessingEngine(HangingRepository(data.repository.root)) as clean,
        ProcessingEngine(HangingRepository(data.repository.root, hang=hang)) as stuck,
    ):
        list(clean.iter_batch(warm))
        list(stuck.iter_batch(warm))
        for _ in range(REPEATS):
            started = time.perf_counter()
            list(clean.iter_batch(job))
            clean_s = min(clean_s, time.perf_counter() - started)
            started = time.perf_counter()
            results = list(stuck.iter_batch(job))
            hung_s = min(hung_s, time.perf_counter() - started)
            errors = sorted(f"{r.symbol}: {r.error}" for r in results if r.error)
    return clean_s, hung_s, errors


# ------------------------------------------------------------ report


def report(
    rows: Sequence[Row], clean_s: float, hung_s: float, errors: Sequence[str], load: str
) -> None:
    print(
        f"\n{'batch':<9}{'symbols x bars':>16}{'serial s':>10}{'engine s':>10}"
        f"{'efficiency':>12}{'target':>8}{'async s':>9}{'seed s':>8}{'engine/seed':>13}"
        f"{'map s':>7}{'vs map':>8}{'async':>7}{'matches':>9}{'parent us/sym':>15}"
        f"{'map us/sym':>12}{'cpu eff':>9}{'cpu/map':>9}"
    )
    for row in rows:
        b = row.best
        mark = "ok" if row.efficiency >= row.target else "MISSED"
        print(
            f"{row.name:<9}{row.shape:>16}{b['serial_s']:>10.2f}{b['engine_s']:>10.2f}"
            f"{row.efficiency:>12.2f}{row.target:>6.2f} {mark:<2}{b['async_s']:>8.2f}"
            f"{b['seed_s']:>8.2f}{b['engine_s'] / b['seed_s']:>12.2f}x{b['map_s']:>7.2f}"
            f"{b['map_s'] / b['engine_s']:>7.2f}x{b['map_s'] / b['async_s']:>6.2f}x"
            f"{row.matches:>9}{row.per_symbol_us('parent_s'):>15.0f}"
            f"{row.per_symbol_us('map_parent_s'):>12.0f}{row.cpu_efficiency:>9.2f}"
            f"{b['engine_cpu_s'] / b['map_cpu_s']:>8.2f}x"
        )
    daily = rows[0].best
    speed = daily["map_s"] / daily["engine_s"]
    mark = "ok" if speed >= MAP_TARGET else "MISSED"
    print(
        f"\n{rows[0].name}: the engine (iter_batch) at {speed:.2f}x a chunked executor.map "
        f"(chunksize={MAP_CHUNKSIZE}; target >= {MAP_TARGET:.1f}x) {mark}; "
        f"process_batch at {daily['map_s'] / daily['async_s']:.2f}x"
    )
    print(
        f"(the same, as the median of the {REPEATS} rounds' own ratios: "
        f"{daily['median_vs_map']:.2f}x, {daily['median_async_vs_map']:.2f}x)"
    )
    extra = hung_s - clean_s
    mark = "ok" if extra <= 3.0 else "MISSED"
    print(
        f"\ndaily with {HANG_COUNT} hanging symbols, timeout {HANG_TIMEOUT_S:g}s: "
        f"clean {clean_s:.2f}s, with hangs {hung_s:.2f}s, +{extra:.2f}s (target <= +3s) {mark}"
    )
    print(f"errors ({len(errors)}): " + "; ".join(errors))
    print(f"(cores: {default_pool_size()}, best of {REPEATS} interleaved runs each; {load})")


def main() -> None:
    load_before = os.getloadavg()[0]
    daily = dataset("1d", 2500, 1260)
    intraday = dataset("5m", 500, 19000)
    rows = [
        compare("daily", daily, DAILY_FORMULA, last_bar_only=True, target=0.85),
        compare("intraday", intraday, INTRADAY_FORMULA, last_bar_only=False, target=0.9),
    ]
    clean_s, hung_s, errors = hanging(daily, DAILY_FORMULA)
    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    report(rows, clean_s, hung_s, errors, load)


if __name__ == "__main__":
    main()

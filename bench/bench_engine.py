"""The batch engine against a serial run and against the seed's design.

For a daily batch (2,500 symbols x 1,260 bars, a formula of 5 indicators)
and an intraday one (500 symbols x 19,000 five-minute bars):

* serial: the same per-symbol function in one loop, in one single-threaded
  process (a pool of one worker running one task that loops over all
  symbols, so no dispatch cost is counted);
* engine: ``ProcessingEngine`` with one worker per core, warm;
* seed: ``ProcessPoolExecutor.submit`` per symbol and ``as_completed``, as
  seed 002 does it, same function, warm, its workers started with the same
  environment as ours (``pools.WORKER_ENV``), so only the dispatch differs;
* map: the same executor's ``map(chunksize=64)``, the cheapest dispatch
  there is (and no timeouts: a hanging symbol would hang its whole chunk).

Parallel efficiency = serial / (cores x engine), targets 0.85 (daily) and
0.9 (intraday); engine/seed is the time ratio (target <= 1); speed vs map
is map / engine (target >= 1.0 on the daily batch: the engine, with its
timeouts, memory caps and crash isolation, as fast as the plain map). Other load on
the machine skews wall-clock efficiency against the parallel run (one
serial process is the last to lose its core), so two figures less
sensitive to it follow: the parent's CPU per symbol, and CPU efficiency =
serial CPU / (workers' + parent's CPU), what the engine adds to the work
(contention still inflates CPU time a little). Then the daily
batch again with 5 symbols that hang and a 2 s timeout: at most the clean
run's time + 3 s. Each time is the best of ``REPEATS`` runs. Data is
generated once, in parallel, and cached under ``/tmp`` keyed by its
parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

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
    serial_s: float
    engine_s: float
    seed_s: float
    map_s: float
    cores: int
    target: float
    matches: int
    parent_us: float  # the engine's own CPU per symbol (dispatch, results)
    cpu_efficiency: float  # serial CPU / (workers' + our CPU): less sensitive to other load

    @property
    def efficiency(self) -> float:
        return self.serial_s / (self.cores * self.engine_s)


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


def map_style(executor: ProcessPoolExecutor, spec: ScanSpec, symbols: Sequence[str]) -> int:
    """A plain chunked ``executor.map``: how many symbols came back."""
    scan = functools.partial(scan_symbol, spec)
    return sum(1 for _ in executor.map(scan, symbols, chunksize=MAP_CHUNKSIZE))


def seed_style(executor: ProcessPoolExecutor, spec: ScanSpec, symbols: Sequence[str]) -> int:
    """Seed 002's loop: submit every symbol, collect with as_completed."""
    futures = {executor.submit(scan_symbol, spec, symbol): symbol for symbol in symbols}
    failed = 0
    for future in as_completed(futures):
        try:
            future.result(timeout=60)
        except Exception:  # the seed records the error and goes on
            failed += 1
    return failed


class Contenders:
    """Serial, engine and seed-style runners of one batch, all started and
    warm, so each round times the three under the same background load."""

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
        seed_style(self.executor, self.spec, warm)
        map_style(self.executor, self.spec, warm)

    def close(self) -> None:
        self.executor.shutdown()
        self.engine.close()
        self.serial.close()

    def time_serial(self, symbols: Sequence[str]) -> tuple[float, float]:
        """(seconds, CPU seconds) of the serial loop."""
        worker = psutil.Process(self.serial.pids()[1])
        cpu = _cpu_s(worker)
        (outcome,) = self.serial.run([Task("serial", symbols)], self.spec)
        return float(outcome.value), _cpu_s(worker) - cpu  # type: ignore[arg-type]

    def time_engine(self, job: ProcessingJob) -> tuple[float, float, float, list[ProcessingResult]]:
        """(seconds, our CPU seconds, the workers' CPU seconds, results)."""
        workers = _cpu_now(self.engine.pids()[1:])
        me, mine = psutil.Process(), _cpu_s(psutil.Process())
        started = time.perf_counter()
        results = asyncio.run(self.engine.process_batch(job))
        elapsed = time.perf_counter() - started
        return elapsed, _cpu_s(me) - mine, _cpu_since(workers), results

    def time_seed(self) -> float:
        started = time.perf_counter()
        seed_style(self.executor, self.spec, self.symbols)
        return time.perf_counter() - started

    def time_map(self) -> float:
        started = time.perf_counter()
        map_style(self.executor, self.spec, self.symbols)
        return time.perf_counter() - started


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
    serial_s = engine_s = seed_s = map_s = serial_cpu_s = parent_s = engine_cpu_s = float("inf")
    try:
        for _ in range(REPEATS):
            elapsed_s, cpu_s = contenders.time_serial(data.symbols)
            serial_s, serial_cpu_s = min(serial_s, elapsed_s), min(serial_cpu_s, cpu_s)
            elapsed_s, cpu_s, workers_s, results = contenders.time_engine(job)
            engine_s, parent_s = min(engine_s, elapsed_s), min(parent_s, cpu_s)
            engine_cpu_s = min(engine_cpu_s, cpu_s + workers_s)
            seed_s = min(seed_s, contenders.time_seed())
            map_s = min(map_s, contenders.time_map())
    finally:
        contenders.close()
    errors = [r for r in results if r.error]
    if errors:
        raise RuntimeError(f"{name}: {len(errors)} errors, first: {errors[0].error}")
    matches = sum(len(r.matches) for r in results)
    shape = f"{len(data.symbols)} x {data.bars}"
    parent_us = parent_s / len(data.symbols) * 1e6
    cpu_efficiency = serial_cpu_s / engine_cpu_s
    return Row(
        name,
        shape,
        serial_s,
        engine_s,
        seed_s,
        map_s,
        cores,
        target,
        matches,
        parent_us,
        cpu_efficiency,
    )


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
        asyncio.run(clean.process_batch(warm))
        asyncio.run(stuck.process_batch(warm))
        for _ in range(REPEATS):
            started = time.perf_counter()
            asyncio.run(clean.process_batch(job))
            clean_s = min(clean_s, time.perf_counter() - started)
            started = time.perf_counter()
            results = asyncio.run(stuck.process_batch(job))
            hung_s = min(hung_s, time.perf_counter() - started)
            errors = sorted(f"{r.symbol}: {r.error}" for r in results if r.error)
    return clean_s, hung_s, errors


# ------------------------------------------------------------ report


def report(
    rows: Sequence[Row], clean_s: float, hung_s: float, errors: Sequence[str], load: str
) -> None:
    print(
        f"\n{'batch':<9}{'symbols x bars':>16}{'serial s':>10}{'engine s':>10}"
        f"{'efficiency':>12}{'target':>8}{'seed s':>9}{'engine/seed':>13}{'map s':>8}"
        f"{'vs map':>8}{'matches':>9}{'parent us/sym':>15}{'cpu eff':>9}"
    )
    for row in rows:
        mark = "ok" if row.efficiency >= row.target else "MISSED"
        print(
            f"{row.name:<9}{row.shape:>16}{row.serial_s:>10.2f}{row.engine_s:>10.2f}"
            f"{row.efficiency:>12.2f}{row.target:>6.2f} {mark:<2}{row.seed_s:>8.2f}"
            f"{row.engine_s / row.seed_s:>12.2f}x{row.map_s:>8.2f}"
            f"{row.map_s / row.engine_s:>7.2f}x{row.matches:>9}{row.parent_us:>15.0f}"
            f"{row.cpu_efficiency:>9.2f}"
        )
    daily = rows[0]
    speed = daily.map_s / daily.engine_s
    mark = "ok" if speed >= MAP_TARGET else "MISSED"
    print(
        f"\n{daily.name}: the engine at {speed:.2f}x a chunked executor.map "
        f"(chunksize={MAP_CHUNKSIZE}; target >= {MAP_TARGET:.1f}x) {mark}"
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

"""The scanner's process pool, fed directly (no Redis): ticks/s and memory.

300,000 synthetic ticks for 500 symbols, as redis-py returns stream entries
(bytes ids and fields), go through ``ScannerPool`` in reads of 1,000; the
clock runs from the first ``submit`` to the last result. Compared with:

- the seeds' way: one tick per ``submit`` to a ``ProcessPoolExecutor`` and
  ``future.result()`` at once (measured on a 20,000-tick slice: it is slow);
- the detection engine alone, in this process (the pool's ceiling per
  process), per tick (what ships) and vectorised (``VectorisedEngine``
  below: numpy over each symbol's ticks of a batch, bit-identical results,
  asserted here). The vectorised one lost on every shape measured, so it
  lives here, not in ``orchestrator.apps.scanner``.
"""

from __future__ import annotations

import math
import os
import random
import resource
import time
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from orchestrator.apps.scanner.detection import AlertRow, DetectionOutcome, PatternEngine
from orchestrator.apps.scanner.frames import Entry, Row, split_entries
from orchestrator.apps.scanner.rolling import MIN_STD_FRACTION, SymbolState, Windows
from orchestrator.apps.scanner.scanner_pool import ScannerPool
from orchestrator.apps.scanner.scanner_settings import (
    EmaSeed,
    PatternSettings,
    parse_scanner_settings,
)
from orchestrator.procs import tree_rss_bytes
from orchestrator.validate import Problems, Section

TICKS = 300_000
SYMBOLS = 500
READ = 1000
BASELINE_TICKS = 20_000
MIB = 1024 * 1024

_ENGINE: PatternEngine | None = None


def make_entries(n: int, symbols: int, seed: int = 1) -> list[Entry]:
    rng = random.Random(seed)
    names = [f"SYM{k:04d}".encode() for k in range(symbols)]
    price = dict.fromkeys(names, 100.0)
    entries: list[Entry] = []
    t0 = 1_700_000_000.0
    for i in range(n):
        sym = names[rng.randrange(symbols)]
        price[sym] *= 1 + rng.gauss(0, 0.002)
        volume = rng.randint(1, 1000) * (20 if rng.random() < 0.01 else 1)
        fields = {b"symbol": sym, b"price": b"%.2f" % price[sym], b"volume": b"%d" % volume}
        fields[b"ts"] = b"%.3f" % (t0 + i * 0.01)
        entries.append((b"%d-0" % (1_700_000_000_000 + i), fields))
    return entries


def run_pool(entries: Sequence[Entry], workers: int | None) -> dict[str, float]:
    """Ticks/s through the pool, peak RSS, and CPU per tick of parent and pool.

    CPU per tick does not depend on what else the host runs, so it gives the
    capacity too: one core of pool processes handles 1e6 / child_us ticks/s.
    """
    data = {} if workers is None else {"processing_workers": workers}
    settings = parse_scanner_settings(Section(data, "scanner", Problems()))
    base_rss = tree_rss_bytes(os.getpid())
    peak, done, alerts = base_rss, 0, 0
    cpu_self, cpu_children = _cpu_s(resource.RUSAGE_SELF), _cpu_s(resource.RUSAGE_CHILDREN)
    with ScannerPool(settings) as pool:
        started = time.perf_counter()
        for k in range(0, len(entries), READ):
            pool.submit(entries[k : k + READ])
            for result in pool.collect():
                done += len(result.processed_ids)
                alerts += len(result.alerts)
            if k % (50 * READ) == 0:
                peak = max(peak, tree_rss_bytes(os.getpid()))
        for result in pool.drain(timeout_s=300):
            done += len(result.processed_ids)
            alerts += len(result.alerts)
        elapsed = time.perf_counter() - started
        peak = max(peak, tree_rss_bytes(os.getpid()))
    assert done == len(entries), f"{done} of {len(entries)} ticks processed"
    return {
        "workers": settings.processing_workers,
        "ticks_per_s": done / elapsed,
        "alerts": alerts,
        "peak_rss_mb": peak / MIB,
        "base_rss_mb": base_rss / MIB,
        "parent_us": (_cpu_s(resource.RUSAGE_SELF) - cpu_self) / done * 1e6,
        "child_us": (_cpu_s(resource.RUSAGE_CHILDREN) - cpu_children) / done * 1e6,
    }


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _baseline_detect(row: Row) -> list[AlertRow]:
    """The seeds' task: one tick, in whichever pool process gets it."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = PatternEngine(PatternSettings())
    return _ENGINE.process([row]).alerts


def run_baseline(entries: Sequence[Entry], workers: int) -> float:
    rows = split_entries(entries, 1).rows[0]
    with ProcessPoolExecutor(max_workers=workers) as executor:
        executor.submit(_baseline_detect, rows[0]).result()  # start the processes
        started = time.perf_counter()
        for row in rows:
            executor.submit(_baseline_detect, row).result()
        return len(rows) / (time.perf_counter() - started)


def engine_rate(engine: PatternEngine, batches: Sequence[list[Row]]) -> tuple[float, Any]:
    """Ticks per CPU second of this process (steadier than wall time on a busy host)."""
    alerts: list[AlertRow] = []
    started = time.process_time()
    for rows in batches:
        alerts += engine.process(rows).alerts
    rate = sum(map(len, batches)) / (time.process_time() - started)
    return rate, (alerts, _state_values(engine))


def engine_comparison(entries: Sequence[Entry]) -> tuple[float, float]:
    """Per tick vs vectorised on the same reads; their results must be identical.
    (The vectorised fold seeds its EMAs with the first price, so both run
    with ``ema_seed: first``.)"""
    reads = [split_entries(entries[k : k + READ], 1).rows[0] for k in range(0, len(entries), READ)]
    settings = PatternSettings(ema_seed=EmaSeed.FIRST)
    per_tick, expected = engine_rate(PatternEngine(settings), reads)
    vectorised, got = engine_rate(VectorisedEngine(settings), reads)
    assert got == expected, "the vectorised engine must give bit-identical results"
    return per_tick, vectorised


def _state_values(engine: PatternEngine) -> dict[Any, list[Any]]:
    return {
        sym: [
            list(value) if isinstance(value, deque) else value
            for value in (getattr(st, slot) for slot in SymbolState.__slots__)
        ]
        for sym, st in engine.states.items()
    }


# -- the vectorised alternative -------------------------------------------------

Tick = tuple[int, float, float, float]  # (row index, price, volume, ts)
Array = np.ndarray[Any, np.dtype[np.float64]]
_INF = float("inf")


class VectorisedEngine(PatternEngine):
    """Symbols with >= ``min_ticks`` rows in a batch are folded at once (numpy)."""

    def __init__(self, settings: PatternSettings, min_ticks: int = 16) -> None:
        super().__init__(settings)
        self.min_ticks = min_ticks

    def process(self, rows: Sequence[Sequence[Any]], mute: bool = False) -> DetectionOutcome:
        """The busy symbols' rows go through ``fold``, the others through the per-tick loop.

        (The bench's ticks are all valid; this skips the engine's checks of busy rows.)
        """
        counts = Counter(map(itemgetter(0), rows))
        busy = {sym for sym, n in counts.items() if n >= self.min_ticks}
        if not busy:
            return super().process(rows, mute)
        out = super().process([r if r[0] not in busy else _SKIP for r in rows], mute)
        out.invalid = [(i, why) for i, why in out.invalid if rows[i][0] not in busy]
        groups: dict[Any, list[Tick]] = defaultdict(list)
        for index, row in enumerate(rows):
            if row[0] in busy:
                try:
                    groups[row[0]].append((index, float(row[1]), float(row[2]), float(row[3])))
                except ValueError:
                    out.invalid.append((index, "price, volume and ts must be numbers"))
        for symbol, group in groups.items():
            self._fold_group(symbol, group, out, mute)
        out.alerts.sort(key=lambda a: a[0])
        out.invalid.sort()
        return out

    def _fold_group(
        self, symbol: Any, group: list[Tick], out: DetectionOutcome, mute: bool
    ) -> None:
        st = self.states.get(symbol)
        if st is None:
            st = self.states[symbol] = SymbolState(self.windows)
        if st.count == 0:
            self._tick(st, symbol, group[0], out, mute)
            group = group[1:]
        indices, prices, volumes, stamps = (list(column) for column in zip(*group, strict=True))
        if len(group) < 2 or max(stamps) >= st.session_end:
            for tick in group:
                self._tick(st, symbol, tick, out, mute)
            return
        seen, warmup, spread_min = (
            st.count,
            self.settings.warmup_ticks,
            self.settings.momentum_spread,
        )
        readings = fold(st, prices, volumes, stamps, self.windows)
        for j, (z, spread) in enumerate(zip(readings.z, readings.spread, strict=True)):
            if seen + j >= warmup and (z >= self.z_min or not -spread_min < spread < spread_min):
                readings.apply(st, j)
                self.emit(st, symbol, indices[j], prices[j], stamps[j], out, mute)
        readings.apply(st, len(group) - 1)

    def _tick(
        self, st: SymbolState, symbol: Any, tick: Tick, out: DetectionOutcome, mute: bool
    ) -> None:
        index, price, volume, ts = tick
        ready = st.count >= self.settings.warmup_ticks
        st.observe(price, volume, ts, self.windows)
        spread_min = self.settings.momentum_spread
        if ready and (st.z >= self.z_min or not -spread_min < st.spread < spread_min):
            self.emit(st, symbol, index, price, ts, out, mute)


_SKIP: Row = (None, None, None, None)  # a row the per-tick pass refuses as invalid


@dataclass(frozen=True, slots=True)
class Readings:
    """What ``observe`` would have left on the state after each tick of a group."""

    prev_price: list[float]
    prev_high: list[float]
    prev_low: list[float]
    velocity: list[float]
    z: list[float]
    spread: list[float]
    ema_fast: list[float]
    ema_slow: list[float]
    cum_pv: list[float]
    cum_v: list[float]
    or_high: list[float]
    or_low: list[float]
    or_done: list[bool]

    def apply(self, st: SymbolState, j: int) -> None:
        st.prev_price, st.prev_high, st.prev_low = (
            self.prev_price[j], self.prev_high[j], self.prev_low[j],
        )  # fmt: skip
        st.velocity, st.z, st.spread = self.velocity[j], self.z[j], self.spread[j]
        st.ema_fast, st.ema_slow = self.ema_fast[j], self.ema_slow[j]
        st.cum_pv, st.cum_v = self.cum_pv[j], self.cum_v[j]
        st.or_high, st.or_low, st.or_done = self.or_high[j], self.or_low[j], self.or_done[j]


def fold(
    st: SymbolState, prices: list[float], volumes: list[float], stamps: list[float], w: Windows
) -> Readings:
    """Fold a group into ``st`` with the same float operations as ``observe``."""
    p, v = np.array(prices), np.array(volumes)
    prev_price, prev_high, prev_low, velocity = _price_windows(st, p, w.lookback)
    fast, slow = _emas(st, prices, w)
    spread = np.array(fast) / np.array(slow) - 1.0
    z = _volume_window(st, volumes)
    cum_pv = np.cumsum(np.concatenate(([st.cum_pv], p * v)))[1:]
    cum_v = np.cumsum(np.concatenate(([st.cum_v], v)))[1:]
    or_high, or_low, or_done = _opening_range(st, p, np.array(stamps))
    st.prices.extend(prices)
    st.high, st.low = max(st.prices), min(st.prices)
    st.count += len(prices)
    st.last_ts = stamps[-1]
    readings = Readings(
        prev_price, prev_high, prev_low, velocity, z, spread.tolist(), fast, slow,
        cum_pv.tolist(), cum_v.tolist(), or_high, or_low, or_done,
    )  # fmt: skip
    readings.apply(st, len(prices) - 1)
    return readings


def _price_windows(
    st: SymbolState, p: Array, lookback: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    r, k = len(st.prices), len(p)
    history = np.concatenate((np.array(st.prices), p))
    oldest = np.maximum(0, np.arange(r, r + k) - lookback)
    velocity = p / history[oldest] - 1.0
    highs = np.concatenate((np.full(lookback, -_INF), history))
    lows = np.concatenate((np.full(lookback, _INF), history))
    prev_high = sliding_window_view(highs, lookback)[r : r + k].max(axis=1)
    prev_low = sliding_window_view(lows, lookback)[r : r + k].min(axis=1)
    prev_price = history[r - 1 : r - 1 + k]
    return prev_price.tolist(), prev_high.tolist(), prev_low.tolist(), velocity.tolist()


def _emas(st: SymbolState, prices: list[float], w: Windows) -> tuple[list[float], list[float]]:
    fast, slow, a_fast, a_slow = st.ema_fast, st.ema_slow, w.alpha_fast, w.alpha_slow
    fasts, slows = [], []
    for price in prices:
        fast = fast + a_fast * (price - fast)
        slow = slow + a_slow * (price - slow)
        fasts.append(fast)
        slows.append(slow)
    return fasts, slows


def _volume_window(st: SymbolState, volumes: list[float]) -> list[float]:
    """z of each volume against the window before it; the common sliding step inlined."""
    zs: list[float] = []
    z, vols, cap = st.z, st.volumes, st.volumes.maxlen or 0
    mean, m2, replaced = st.vol_mean, st.vol_m2, st.vol_replaced
    for volume in volumes:
        n = len(vols)
        if n > 1:
            std = math.sqrt(m2 / n)
            floor = MIN_STD_FRACTION * mean
            z = (volume - mean) / (std if std > floor else floor if floor > 1e-12 else 1e-12)
        zs.append(z)
        if n == cap and replaced + 1 < n:
            old = vols[0]
            vols.append(volume)
            replaced += 1
            new_mean = mean + (volume - old) / n
            m2 = max(0.0, m2 + (volume - old) * (volume - new_mean + old - mean))
            mean = new_mean
            continue
        st.vol_mean, st.vol_m2, st.vol_replaced = mean, m2, replaced
        st.push_volume(vols, volume)
        mean, m2, replaced = st.vol_mean, st.vol_m2, st.vol_replaced
    st.vol_mean, st.vol_m2, st.vol_replaced = mean, m2, replaced
    return zs


def _opening_range(
    st: SymbolState, p: Array, t: Array
) -> tuple[list[float], list[float], list[bool]]:
    inside = t < st.or_end
    high = np.maximum.accumulate(np.concatenate(([st.or_high], np.where(inside, p, -_INF))))[1:]
    low = np.minimum.accumulate(np.concatenate(([st.or_low], np.where(inside, p, _INF))))[1:]
    done = np.logical_or.accumulate(st.or_done | (~inside & (high > -_INF)))
    return high.tolist(), low.tolist(), done.tolist()


def _describe(run: dict[str, float]) -> str:
    return (
        f"{run['workers']:.0f} process(es): {run['ticks_per_s']:,.0f} ticks/s, "
        f"{run['alerts']:,.0f} alerts, CPU per tick: parent {run['parent_us']:.1f} us, "
        f"pool {run['child_us']:.1f} us; peak RSS {run['peak_rss_mb']:.0f} MiB "
        f"(before the pool: {run['base_rss_mb']:.0f} MiB, mostly the 300k entries)"
    )


def main() -> None:
    cores = os.cpu_count() or 1
    entries = make_entries(TICKS, SYMBOLS)
    print(f"{TICKS:,} ticks, {SYMBOLS} symbols, reads of {READ}, {cores} CPU cores", flush=True)
    default = run_pool(entries, None)
    print(f"pool, default size: {_describe(default)}", flush=True)
    two = run_pool(entries, 2)
    print(f"pool, 2 processes: {_describe(two)}", flush=True)
    baseline = run_baseline(entries[:BASELINE_TICKS], int(default["workers"]))
    print(
        f"seeds' way (1 tick per submit, result() at once, {BASELINE_TICKS:,} ticks): "
        f"{baseline:,.0f} ticks/s -> pool is {default['ticks_per_s'] / baseline:.1f}x",
        flush=True,
    )
    for symbols in (SYMBOLS, 50, 5):
        sample = entries[:100_000] if symbols == SYMBOLS else make_entries(100_000, symbols)
        per_tick, vectorised = engine_comparison(sample)
        print(
            f"engine in-process, {symbols} symbols (~{READ // symbols} ticks per symbol per read): "
            f"per tick {per_tick:,.0f} ticks/CPU-s, vectorised {vectorised:,.0f} "
            f"-> per tick is {per_tick / vectorised:.2f}x (identical results)",
            flush=True,
        )

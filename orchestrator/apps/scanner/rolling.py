"""Per-symbol rolling indicators, updated one tick at a time.

A tick is ``price``, ``volume`` (the quantity traded in *this* tick, not a
cumulative day volume) and ``ts`` (epoch seconds, a float). For each tick
``SymbolState.observe`` first records readings that describe the ticks
*before* it, then folds the tick in:

- ``prev_price``: the previous tick's price (0.0 for the first tick).
- ``prev_high`` / ``prev_low``: the highest / lowest price of the previous
  ``lookback_ticks`` ticks (the "recent high/low").
- ``z``: the tick's volume as a z-score against the previous
  ``volume_window`` volumes (population std, floored at 5% of the mean so a
  flat history does not make every change infinite; 0.0 until two volumes
  have been seen).
- ``velocity``: price / (price ``lookback_ticks`` ticks ago) - 1.
- ``ema_fast`` / ``ema_slow``: EMAs with spans in ticks (alpha = 2/(span+1)),
  including this tick. ``ema_seed: sma`` (the default) seeds each as TA-Lib
  does, with the mean of its first ``span`` prices: NaN before, then the
  same value as ``talib.EMA`` over the symbol's ticks, bit for bit.
  ``ema_seed: first`` seeds both with the first price (defined from the
  first tick, further from TA-Lib's for the first few spans). ``spread`` =
  ema_fast / ema_slow - 1 (0.0 while ema_slow is not defined).
- ``vwap(price)``: session volume-weighted average price including this tick
  (from the sums ``cum_pv`` / ``cum_v``; ``price`` while no volume traded).
- Opening range: high/low of the ticks in the first ``opening_range_s`` of
  the session; ``or_done`` once a tick at or after the window's end arrives
  (a cold start after the window has no opening range until the next one).

Sessions start each UTC day at ``session_open_utc_s``; a new session resets
VWAP and the opening range. The tick-count windows (EMAs, volume, recent
high/low) run across sessions. Everything is plain float arithmetic in a
fixed order, so the same ticks always give bit-identical readings; that is
what makes a checkpoint plus replay reproduce a lost process exactly.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from orchestrator.apps.scanner.scanner_settings import EmaSeed, PatternSettings

DAY_S = 86400.0
MIN_STD_FRACTION = 0.05
_INF = math.inf


@dataclass(frozen=True, slots=True)
class Windows:
    """The per-tick constants, computed once from ``PatternSettings``."""

    alpha_fast: float
    alpha_slow: float
    span_fast: int
    span_slow: int
    seeded_after: int  # ticks after which both EMAs just run (the warm-up is over)
    sma_seed: bool
    volume_window: int
    lookback: int
    session_open_s: float
    opening_range_s: float

    @classmethod
    def of(cls, s: PatternSettings) -> Windows:
        sma_seed = s.ema_seed is EmaSeed.SMA
        return cls(
            alpha_fast=2.0 / (s.ema_fast + 1),
            alpha_slow=2.0 / (s.ema_slow + 1),
            span_fast=s.ema_fast,
            span_slow=s.ema_slow,
            seeded_after=s.ema_slow if sma_seed else 1,
            sma_seed=sma_seed,
            volume_window=s.volume_window,
            lookback=s.lookback_ticks,
            session_open_s=s.session_open_utc_s,
            opening_range_s=s.opening_range_s,
        )


def zscore(volume: float, n: int, mean: float, m2: float) -> float:
    """``volume`` against a window of ``n`` volumes (mean, sum of squared deviations)."""
    std = math.sqrt(m2 / n)
    floor = MIN_STD_FRACTION * mean
    return (volume - mean) / (std if std > floor else floor if floor > 1e-12 else 1e-12)


class SymbolState:
    """Rolling state of one symbol; readings of the latest tick as attributes."""

    __slots__ = (
        "count", "cum_pv", "cum_v", "ema_fast", "ema_slow", "high", "last_alert", "last_ts",
        "low", "or_done", "or_end", "or_high", "or_low", "prev_high", "prev_low", "prev_price",
        "prices", "seed_sum", "session_end", "spread", "velocity", "vol_m2", "vol_mean",
        "vol_replaced", "volumes", "z",
    )  # fmt: skip

    def __init__(self, w: Windows) -> None:
        self.count = 0
        self.session_end = -_INF
        self.or_end = 0.0
        self.or_high = -_INF
        self.or_low = _INF
        self.or_done = False
        self.cum_pv = self.cum_v = 0.0
        self.ema_fast = self.ema_slow = self.spread = 0.0
        self.seed_sum = 0.0  # of the first ema_slow prices (sma seeding)
        self.prices: deque[float] = deque(maxlen=w.lookback)
        self.high, self.low, self.velocity = -_INF, _INF, 0.0
        self.volumes: deque[float] = deque(maxlen=w.volume_window)
        self.vol_mean = self.vol_m2 = 0.0
        self.vol_replaced = 0
        self.z = self.prev_price = 0.0
        self.prev_high, self.prev_low = -_INF, _INF
        self.last_ts = 0.0
        self.last_alert: dict[str, float] = {}

    def observe(self, price: float, volume: float, ts: float, w: Windows) -> None:
        """Record the readings for this tick, then fold it into the state."""
        prices, vols = self.prices, self.volumes
        n = len(vols)
        if self.count:
            self.prev_price = prices[-1]
            self.velocity = price / prices[0] - 1.0
        if self.count >= w.seeded_after:  # TA-Lib's order: (price - ema) * k + ema
            self.ema_fast = ema_fast = self.ema_fast + w.alpha_fast * (price - self.ema_fast)
            self.ema_slow = ema_slow = self.ema_slow + w.alpha_slow * (price - self.ema_slow)
            self.spread = ema_fast / ema_slow - 1.0
        else:
            self._seed_emas(price, w)
        if n > 1:
            self.z = zscore(volume, n, self.vol_mean, self.vol_m2)
        self.prev_high, self.prev_low = self.high, self.low
        if ts >= self.session_end:
            self._new_session(ts, w)
        self.cum_pv += price * volume
        self.cum_v += volume
        if ts < self.or_end:
            if price > self.or_high:
                self.or_high = price
            if price < self.or_low:
                self.or_low = price
        elif not self.or_done and self.or_high > -_INF:
            self.or_done = True
        self._push_price(prices, price)
        self.push_volume(vols, volume)
        self.count += 1
        self.last_ts = ts

    def _seed_emas(self, price: float, w: Windows) -> None:
        """The EMAs over the first ticks: see the module doc."""
        if not w.sma_seed:  # the first tick: both start on its price
            self.ema_fast = self.ema_slow = price
            return
        self.seed_sum += price
        n = self.count + 1  # ticks including this one
        self.ema_fast = self._seeded(self.ema_fast, price, w.alpha_fast, n, w.span_fast)
        self.ema_slow = self._seeded(self.ema_slow, price, w.alpha_slow, n, w.span_slow)
        self.spread = self.ema_fast / self.ema_slow - 1.0 if n == w.span_slow else 0.0

    def _seeded(self, ema: float, price: float, alpha: float, n: int, span: int) -> float:
        if n < span:
            return math.nan
        if n == span:
            return self.seed_sum / span
        return ema + alpha * (price - ema)

    def vwap(self, price: float) -> float:
        """Session VWAP including the latest tick; ``price`` while no volume traded."""
        return self.cum_pv / self.cum_v if self.cum_v > 0.0 else price

    def _new_session(self, ts: float, w: Windows) -> None:
        start = (ts - w.session_open_s) // DAY_S * DAY_S + w.session_open_s
        self.session_end = start + DAY_S
        self.or_end = start + w.opening_range_s
        self.or_high, self.or_low, self.or_done = -_INF, _INF, False
        self.cum_pv = self.cum_v = 0.0

    def _push_price(self, prices: deque[float], price: float) -> None:
        old = prices[0] if len(prices) == prices.maxlen else None
        prices.append(price)
        if price >= self.high:
            self.high = price
        elif old == self.high:
            self.high = max(prices)
        if price <= self.low:
            self.low = price
        elif old == self.low:
            self.low = min(prices)

    def push_volume(self, vols: deque[float], volume: float) -> None:
        """Welford, sliding once the window is full; exact recompute every turn."""
        n = len(vols)
        if n < (vols.maxlen or 0):
            delta = volume - self.vol_mean
            self.vol_mean += delta / (n + 1)
            self.vol_m2 += delta * (volume - self.vol_mean)
            vols.append(volume)
            return
        old = vols[0]
        vols.append(volume)
        self.vol_replaced += 1
        if self.vol_replaced >= n:
            self.vol_replaced = 0
            mean = math.fsum(vols) / n
            self.vol_mean = mean
            self.vol_m2 = math.fsum((x - mean) * (x - mean) for x in vols)
            return
        mean = self.vol_mean + (volume - old) / n
        self.vol_m2 = max(0.0, self.vol_m2 + (volume - old) * (volume - mean + old - self.vol_mean))
        self.vol_mean = mean

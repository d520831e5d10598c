"""Pattern detectors and the per-(symbol, pattern) cool-off.

Detectors look at a symbol's readings after ``SymbolState.observe`` (see
``indicators``) and only once the symbol has seen ``warmup_ticks`` ticks
before the current one. Each returns (pattern, confidence, direction) with a
confidence in [0, 1] that is 0.5 exactly at the threshold:

- ``VOLUME_SPIKE``: volume z-score ``z >= volume_spike_z``.
  confidence = min(1, 0.5 * z / volume_spike_z) (1.0 at twice the threshold);
  direction: ``up`` when the price did not fall since the previous tick.
- ``BREAKOUT``: the price crosses a level this tick (previous price <= level
  < price upward; previous price >= level > price downward), the levels being
  the recent high/low and, once complete, the opening-range high/low; and
  volume confirms: ``z >= breakout_volume_z``.
  confidence = 0.5 + 0.25 * min(1, (z - t) / t) + 0.25 if both levels were
  crossed at once (t = breakout_volume_z).
- ``MOMENTUM``: EMA spread ``|ema_fast/ema_slow - 1| >= momentum_spread`` and
  velocity ``|price / price lookback_ticks ago - 1| >= momentum_velocity``,
  both with the same sign, and the price on that side of the session VWAP.
  confidence = 0.25 * min(2, |spread| / momentum_spread)
             + 0.25 * min(2, |velocity| / momentum_velocity).

Cool-off: an alert for (symbol, pattern) is suppressed while less than
``cooloff_s`` seconds of *tick time* have passed since the last alert for that
pair was raised (suppressed alerts do not restart the clock).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from orchestrator.apps.scanner.rolling import SymbolState
from orchestrator.apps.scanner.scanner_settings import PatternSettings

__all__ = ["Alert", "Pattern", "alert_fields", "apply_cooloff", "detect"]

Candidate = tuple[str, float, str]
Alert = dict[str, Any]
_NONE: list[Candidate] = []


class Pattern(StrEnum):
    BREAKOUT = "BREAKOUT"
    MOMENTUM = "MOMENTUM"
    VOLUME_SPIKE = "VOLUME_SPIKE"


def detect(st: SymbolState, price: float, s: PatternSettings) -> list[Candidate]:
    """Every pattern this tick shows, before the cool-off; usually []."""
    found = _NONE
    z = st.z
    if z >= s.volume_spike_z:
        direction = "up" if price >= st.prev_price else "down"
        found = [(Pattern.VOLUME_SPIKE.value, min(1.0, 0.5 * z / s.volume_spike_z), direction)]
    if z >= s.breakout_volume_z:
        breakout = _breakout(st, price, z, s.breakout_volume_z)
        if breakout is not None:
            found = [*found, breakout]
    momentum = _momentum(st, price, s)
    if momentum is not None:
        found = [*found, momentum]
    return found


def _breakout(st: SymbolState, price: float, z: float, threshold: float) -> Candidate | None:
    prev = st.prev_price
    if price > prev:
        crossed = (prev <= st.prev_high < price) + (st.or_done and prev <= st.or_high < price)
        direction = "up"
    elif price < prev:
        crossed = (prev >= st.prev_low > price) + (st.or_done and prev >= st.or_low > price)
        direction = "down"
    else:
        return None
    if not crossed:
        return None
    volume_part = 0.25 * min(1.0, (z - threshold) / threshold)
    return (Pattern.BREAKOUT.value, 0.5 + volume_part + (0.25 if crossed == 2 else 0.0), direction)


def _momentum(st: SymbolState, price: float, s: PatternSettings) -> Candidate | None:
    spread, velocity = st.spread, st.velocity
    up_s, up_v = s.momentum_spread, s.momentum_velocity
    if spread >= up_s and velocity >= up_v and price > st.vwap(price):
        direction = "up"
    elif spread <= -up_s and velocity <= -up_v and price < st.vwap(price):
        direction = "down"
    else:
        return None
    confidence = 0.25 * min(2.0, abs(spread) / s.momentum_spread) + 0.25 * min(
        2.0, abs(velocity) / s.momentum_velocity
    )
    return (Pattern.MOMENTUM.value, confidence, direction)


def apply_cooloff(
    st: SymbolState, found: list[Candidate], ts: float, cooloff_s: float
) -> tuple[list[Candidate], int]:
    """The candidates that pass the cool-off (recording them), and how many did not."""
    passed: list[Candidate] = []
    last_alert = st.last_alert
    for candidate in found:
        last = last_alert.get(candidate[0])
        if last is not None and ts - last < cooloff_s:
            continue
        last_alert[candidate[0]] = ts
        passed.append(candidate)
    return passed, len(found) - len(passed)


def alert_fields(alert: Alert) -> dict[str, str]:
    """An alert as the string fields of a stream entry (for XADD)."""
    return {key: value if isinstance(value, str) else repr(value) for key, value in alert.items()}

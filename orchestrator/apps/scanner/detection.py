"""One pool process's work: batches of ticks through indicators and detectors.

A row is ``(symbol, price, volume, ts)`` as strings or bytes straight from a
stream entry (``ts`` in epoch seconds; see ``indicators``). Rows are handled
strictly in order, per tick, in plain Python. The vectorised alternative,
numpy over each symbol's ticks of a batch with bit-identical results (the
EMAs and the volume window are recursive, so they stay Python loops), was
built and measured slower than this loop on every batch shape tried, from 2
to 200 ticks per symbol per batch; ``bench/bench_scanner_pool.py`` keeps it
to re-measure.

A row that cannot be parsed (missing field, not a number, price <= 0,
negative volume, ``ts`` not in epoch seconds) is reported as invalid with a
reason; it changes no state.

``snapshot``/``restore`` serialise the whole state (pickle), including the
cool-off clocks, so a checkpoint plus a replay of the batches after it
rebuilds a process exactly.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator import codec
from orchestrator.apps.scanner.patterns import apply_cooloff, detect
from orchestrator.apps.scanner.rolling import SymbolState, Windows
from orchestrator.apps.scanner.scanner_settings import PatternSettings

# (row index, symbol, pattern, confidence, price, ts, direction)
AlertRow = tuple[int, str, str, float, float, float, str]
Row = Sequence[Any]

MAX_TS_S = 1e11  # later than year 5000 in seconds; a milliseconds ts is above it
_INF = float("inf")


@dataclass(slots=True)
class DetectionOutcome:
    """What a batch of rows gave: alerts, refused rows (with why), alerts cooled off."""

    alerts: list[AlertRow] = field(default_factory=list)
    invalid: list[tuple[int, str]] = field(default_factory=list)
    suppressed: int = 0


class PatternEngine:
    """Per-symbol state for the symbols of one partition."""

    def __init__(self, settings: PatternSettings) -> None:
        self.settings = settings
        self.windows = Windows.of(settings)
        self.states: dict[str | bytes, SymbolState] = {}
        self.z_min = min(settings.volume_spike_z, settings.breakout_volume_z)

    def process(self, rows: Sequence[Row], mute: bool = False) -> DetectionOutcome:
        """Every row in order; ``mute`` updates state and cool-offs but keeps no alerts.

        The hot loop of the scanner: parsing is inlined and detectors run only
        when a cheap pre-filter (volume z-score or EMA spread past the lowest
        threshold) lets a tick through.
        """
        out = DetectionOutcome()
        states, w, warmup = self.states, self.windows, self.settings.warmup_ticks
        z_min, spread_min = self.z_min, self.settings.momentum_spread
        for index, row in enumerate(rows):
            try:
                symbol, p, v, t = row
                price, volume, ts = float(p), float(v), float(t)
            except (TypeError, ValueError):
                out.invalid.append((index, _why_invalid(row)))
                continue
            if symbol is None or not (
                0.0 < price < _INF and 0.0 <= volume < _INF and 0.0 <= ts < MAX_TS_S
            ):
                out.invalid.append((index, _why_invalid(row)))
                continue
            st = states.get(symbol)
            if st is None:
                st = states[symbol] = SymbolState(w)
            ready = st.count >= warmup
            st.observe(price, volume, ts, w)
            if ready and (st.z >= z_min or not -spread_min < st.spread < spread_min):
                self.emit(st, symbol, index, price, ts, out, mute)
        return out

    def emit(
        self, st: SymbolState, symbol: Any, index: int, price: float, ts: float,
        out: DetectionOutcome, mute: bool,
    ) -> None:  # fmt: skip
        """Run the detectors on the tick just observed; alerts past the cool-off go to ``out``."""
        found = detect(st, price, self.settings)
        if not found:
            return
        passed, suppressed = apply_cooloff(st, found, ts, self.settings.cooloff_s)
        out.suppressed += suppressed
        if passed and not mute:
            name = codec.text(symbol)
            out.alerts.extend((index, name, *c[:2], price, ts, c[2]) for c in passed)

    def evict_idle(self) -> int:
        """Drop symbols idle for ``symbol_ttl_s`` of tick time; how many were dropped."""
        if not self.states:
            return 0
        newest = max(st.last_ts for st in self.states.values())
        horizon = newest - self.settings.symbol_ttl_s
        idle = [sym for sym, st in self.states.items() if st.last_ts < horizon]
        for sym in idle:
            del self.states[sym]
        return len(idle)

    def snapshot(self) -> bytes:
        return pickle.dumps(self.states, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, blob: bytes) -> None:
        self.states = pickle.loads(blob) if blob else {}


def _why_invalid(row: Row) -> str:
    """The reason a row was refused, for the caller's dead letters."""
    try:
        symbol, p, v, t = (codec.decoded(x) for x in row)
    except (TypeError, ValueError):
        return "tick needs symbol, price, volume and ts"
    if symbol is None or p is None or v is None or t is None:
        return "tick needs symbol, price, volume and ts"
    try:
        price, volume, _ = float(p), float(v), float(t)
    except ValueError:
        return f"price, volume and ts must be numbers, got {p!r}, {v!r}, {t!r}"
    if not (0.0 < price < _INF and 0.0 <= volume < _INF):
        return f"price must be > 0 and volume >= 0, got {p!r}, {v!r}"
    return f"ts must be epoch seconds, got {t!r}"

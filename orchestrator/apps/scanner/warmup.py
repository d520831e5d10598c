"""What a scanner rebuilds when it starts: cool-off clocks and symbol state.

Scanner processes are short-lived (the spawner restarts them after
``max_runtime``, ``idle_timeout`` or a crash); what they knew must outlive
them. Both come from Redis, read once at start:

- ``cooloff_clocks``: the cool-off clocks, from the alert stream. For each
  (symbol, pattern), the tick time of the newest alert written, over the
  alerts within ``2 x cooloff`` (tick time) of the newest one and at most
  ``MAX_ALERTS`` of them. An alert a previous scanner wrote therefore holds
  back the same (symbol, pattern) exactly as if it had been raised by this
  one: the cool-off rule holds across restarts and crashes.
  ``cooloff_checkpoints`` turns them into each pool partition's initial
  state (``ScannerPool.seed``).
- ``acknowledged_history``: the newest ``limit`` entries the group has
  already processed (delivered, and not pending on any consumer), in stream
  order and in pages, to be replayed muted (``ScannerPool.warm_up``) before any real
  work. Entries still pending are not history: they are processed for real,
  after it. A scanner acknowledges each symbol's ticks in order, so per
  symbol the acknowledged entries come before the pending ones, and history
  followed by the pending entries is the symbol's own tick sequence. With a
  history that reaches back to the stream's start (or the symbol's session
  open and EMA convergence) the rebuilt state is the lost one, exactly.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator, Mapping
from typing import Any

import redis

from orchestrator import codec
from orchestrator.apps.scanner.frames import Entry, partition_of
from orchestrator.apps.scanner.rolling import SymbolState, Windows
from orchestrator.apps.scanner.scanner_settings import PatternSettings

__all__ = ["acknowledged_history", "cooloff_checkpoints", "cooloff_clocks"]

MAX_ALERTS = 20_000
PAGE = 1_000
PAGE_TICKS = 5_000
Clocks = dict[Any, dict[str, float]]


def cooloff_clocks(client: redis.Redis, alert_stream: str, cooloff_s: float) -> Clocks:
    """symbol -> pattern -> tick time of its newest alert (see the module doc)."""
    clocks: Clocks = {}
    newest, upper, read = -math.inf, "+", 0
    while read < MAX_ALERTS:
        page: Any = client.xrevrange(alert_stream, max=upper, min="-", count=PAGE)
        if not page:
            break
        for _, fields in page:
            alert = _alert_clock(fields)
            if alert is None:
                continue
            symbol, pattern, ts = alert
            newest = max(newest, ts)
            if ts < newest - 2 * cooloff_s:
                return clocks
            per_symbol = clocks.setdefault(symbol, {})
            if ts > per_symbol.get(pattern, -math.inf):
                per_symbol[pattern] = ts
        read += len(page)
        upper = "(" + codec.text(page[-1][0])
    return clocks


def cooloff_checkpoints(
    clocks: Mapping[Any, Mapping[str, float]], patterns: PatternSettings, partitions: int
) -> list[bytes]:
    """Per partition, the pickled state of its symbols holding only their clocks.

    A symbol so restored starts cold (it warms up again) but remembers its
    alerts; ``last_ts`` is its newest alert, so ``symbol_ttl`` applies as to
    a symbol that ticked then. Symbols are keyed as the stream entries will
    carry them (str or bytes).
    """
    windows = Windows.of(patterns)
    parts: list[dict[Any, SymbolState]] = [{} for _ in range(partitions)]
    for symbol, patterns_at in clocks.items():
        if not patterns_at:
            continue
        st = SymbolState(windows)
        st.last_alert.update(patterns_at)
        st.last_ts = max(patterns_at.values())
        parts[partition_of(symbol, partitions)][symbol] = st
    return [pickle.dumps(states, pickle.HIGHEST_PROTOCOL) if states else b"" for states in parts]


def acknowledged_history(
    client: redis.Redis, stream: str, group: str, limit: int, page: int = PAGE_TICKS
) -> Iterator[list[Entry]]:
    """The newest ``limit`` entries ``group`` has processed, oldest first, a page at a time.

    Only one page is held at once: the start is found walking back by pages,
    then the entries are read forward.
    """
    last = last_delivered(client, stream, group)
    if limit <= 0 or last is None:
        return
    lower = _history_start(client, stream, last, limit, page)
    while lower is not None:
        entries: Any = client.xrange(stream, min=lower, max=last, count=page)
        if not entries:
            return
        rows: Any = client.xpending_range(
            stream, group, min=entries[0][0], max=entries[-1][0], count=len(entries)
        )
        pending = {row["message_id"] for row in rows}
        yield [entry for entry in entries if entry[0] not in pending]
        lower = "(" + codec.text(entries[-1][0]) if len(entries) == page else None


def _history_start(client: redis.Redis, stream: str, last: Any, limit: int, page: int) -> Any:
    """The id ``limit`` entries back from ``last`` (or the stream's first)."""
    upper, seen, oldest = last, 0, None
    while seen < limit:
        ids: Any = client.xrevrange(stream, max=upper, min="-", count=min(page, limit - seen))
        if not ids:
            break
        seen += len(ids)
        oldest = ids[-1][0]
        upper = "(" + codec.text(oldest)
    return oldest


def last_delivered(client: redis.Redis, stream: str, group: str) -> Any:
    """The group's last delivered id, None if nothing was delivered yet."""
    groups: Any = client.xinfo_groups(stream)
    for info in groups:
        if codec.text(info["name"]) == group:
            last = info["last-delivered-id"]
            return None if codec.text(last) == "0-0" else last
    return None


def _alert_clock(fields: Any) -> tuple[Any, str, float] | None:
    """(symbol, pattern, tick time) of an alert entry; None if it is not one of ours."""
    symbol = fields.get(b"symbol", fields.get("symbol"))
    pattern = fields.get(b"pattern", fields.get("pattern"))
    ts = fields.get(b"time", fields.get("time"))
    if symbol is None or pattern is None or ts is None:
        return None
    try:
        return symbol, codec.text(pattern), float(ts)
    except (ValueError, UnicodeDecodeError):
        return None

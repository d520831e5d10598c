"""The ``scanner`` section of ``config/workers.yaml`` as frozen dataclasses.

``parse_scanner_settings(section)`` is the parser to register in
``orchestrator.sections.PARSERS["scanner"]``. It imports nothing heavy. Every
key, with its default::

    scanner:
      alert_stream: alerts:intraday
      alert_stream_maxlen: 100000    # alerts kept (newest; what a group needs stays)
      processing_workers: auto       # 70% of CPU cores, at least 1
      processing_workers_max: auto   # CPU cores
      processing_backlog: auto       # max(4 x workers, 100); never below 2 x workers
      on_backlog_full: block         # block | shed_oldest
      max_memory_mb: 2048            # all pool processes together
      memory_check_interval: 5.0     # seconds
      stall_timeout: 60.0            # seconds without a result -> restart
      checkpoint_batches: 50         # state checkpoint every N batches per process
      batch_size_min: 10             # bounds of the adaptive read size; the first
      batch_size_max: 2000           # read asks for the queue's batch_size (seed: 50)
      warmup_history: 50000          # acknowledged ticks replayed (muted) at start
      log_interval: 10.0             # seconds between metric log lines
      patterns:
        cooloff: 300                 # seconds of tick time per (symbol, pattern)
        session_open_utc: "00:00"    # HH:MM; sessions start here each UTC day
        opening_range: 900           # seconds after the session open
        ema_fast: 12                 # EMA spans, in ticks
        ema_slow: 26
        ema_seed: sma                # sma: TA-Lib's (the mean of the first span prices) | first
        volume_window: 50            # ticks in the volume mean/std window
        lookback_ticks: 50           # ticks for recent high/low and velocity
        warmup_ticks: 20             # ticks a symbol needs before any alert
        volume_spike_z: 3.0
        breakout_volume_z: 1.5
        momentum_spread: 0.002       # |EMA fast / EMA slow - 1|
        momentum_velocity: 0.005     # |price / price lookback_ticks ago - 1|
        symbol_ttl: 86400            # seconds of tick time; idle symbols dropped
      discovery:
        concurrent: true
        max_workers: 8
        timeout_seconds: 30
        scanners: []                 # "module:function" or {name, target, enabled, timeout_seconds}

The tick stream, its consumer group and the first read size are the
``scanner`` queue's (``queues.scanner.stream``/``group``/``batch_size``,
given to the worker as ``ORCH_STREAM``, ``ORCH_GROUP``, ``ORCH_BATCH_SIZE``),
not keys of this section. Field names are the YAML keys
(durations carry ``_s``, which ``orchestrator check`` strips). Worker count
and backlog are resolved here (``auto`` against this host's CPU count) so
``orchestrator check`` prints what will run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestrator.cpus import usable_cpus
from orchestrator.validate import YEAR_S, Section

__all__ = [
    "BacklogPolicy",
    "DiscoverySettings",
    "EmaSeed",
    "PatternSettings",
    "ScannerRef",
    "ScannerSettings",
    "backlog_limit",
    "parse_scanner_settings",
    "pool_size",
]

CPU_SHARE = 0.7
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class BacklogPolicy(StrEnum):
    BLOCK = "block"
    SHED_OLDEST = "shed_oldest"


class EmaSeed(StrEnum):
    SMA = "sma"  # TA-Lib's: the mean of the first ``span`` prices
    FIRST = "first"  # the first price


@dataclass(frozen=True, slots=True)
class PatternSettings:
    """What the pool processes need: indicator windows and detector rules."""

    cooloff_s: float = 300.0
    session_open_utc_s: float = 0.0
    opening_range_s: float = 900.0
    ema_fast: int = 12
    ema_slow: int = 26
    ema_seed: EmaSeed = EmaSeed.SMA
    volume_window: int = 50
    lookback_ticks: int = 50
    warmup_ticks: int = 20
    volume_spike_z: float = 3.0
    breakout_volume_z: float = 1.5
    momentum_spread: float = 0.002
    momentum_velocity: float = 0.005
    symbol_ttl_s: float = 86400.0

    def to_yaml(self) -> dict[str, object]:
        """As written in the config: the session opening as ``HH:MM``."""
        out: dict[str, object] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if name == "session_open_utc_s":
                value = f"{int(value) // 3600:02d}:{int(value) % 3600 // 60:02d}"
            elif isinstance(value, StrEnum):
                value = value.value
            out[name.removesuffix("_s")] = value
        return out


@dataclass(frozen=True, slots=True)
class ScannerRef:
    """A discovery scanner: ``target`` is ``module:callable``, imported at run time."""

    name: str
    target: str
    enabled: bool = True
    timeout_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    concurrent: bool = True
    max_workers: int = 8
    timeout_seconds: float = 30.0
    scanners: tuple[ScannerRef, ...] = ()


@dataclass(frozen=True, slots=True)
class ScannerSettings:
    processing_workers: int = 1
    processing_workers_max: int = 1
    processing_backlog: int = 100  # batches accepted and not yet reported
    on_backlog_full: BacklogPolicy = BacklogPolicy.BLOCK
    max_memory_mb: int = 2048
    memory_check_interval_s: float = 5.0
    stall_timeout_s: float = 60.0
    checkpoint_batches: int = 50
    batch_size_min: int = 10
    batch_size_max: int = 2000
    warmup_history: int = 50_000  # ~100 ticks per symbol for 500 symbols
    log_interval_s: float = 10.0
    alert_stream: str = "alerts:intraday"
    alert_stream_maxlen: int = 100_000
    patterns: PatternSettings = field(default_factory=PatternSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)

    @property
    def memory_share_bytes(self) -> int:
        """What one pool process may use: ``max_memory_mb`` / workers."""
        return self.max_memory_mb * 1024 * 1024 // self.processing_workers


def pool_size(cpu_count: int, requested: int | None = None, cap: int | None = None) -> int:
    """Pool processes: ``requested``, else 70% of the cores; capped; at least 1.

    Unlike seed 000 (``max(5, ...)``), a 2-core host gets 1 process, not 5.
    """
    cores = max(1, cpu_count)
    limit = cap if cap is not None else cores
    wanted = requested if requested is not None else int(cores * CPU_SHARE)
    return max(1, min(wanted, limit))


def backlog_limit(workers: int, requested: int | None = None) -> int:
    """In-flight batches: ``requested`` or max(4 x workers, 100), at least 2 x workers."""
    wanted = requested if requested is not None else max(4 * workers, 100)
    return max(wanted, 2 * workers)


def parse_scanner_settings(s: Section, cpu_count: int | None = None) -> ScannerSettings:
    """Validate the ``scanner`` section; problems are recorded on ``s.problems``."""
    d = ScannerSettings()
    cores = cpu_count if cpu_count is not None else usable_cpus()
    cap = _auto_int(s, "processing_workers_max")
    workers = pool_size(cores, _auto_int(s, "processing_workers"), cap)
    policy = s.string("on_backlog_full", d.on_backlog_full.value, [p.value for p in BacklogPolicy])
    cfg = ScannerSettings(
        processing_workers=workers,
        processing_workers_max=cap if cap is not None else cores,
        processing_backlog=backlog_limit(workers, _auto_int(s, "processing_backlog")),
        on_backlog_full=BacklogPolicy(policy),
        max_memory_mb=s.integer("max_memory_mb", d.max_memory_mb, min=16),
        memory_check_interval_s=s.number(
            "memory_check_interval", d.memory_check_interval_s, min=0.05, max=3600
        ),
        stall_timeout_s=s.number("stall_timeout", d.stall_timeout_s, min=1, max=86400),
        checkpoint_batches=s.integer("checkpoint_batches", d.checkpoint_batches, min=1),
        **_batch_sizes(s, d),
        warmup_history=s.integer("warmup_history", d.warmup_history, min=0, max=10_000_000),
        log_interval_s=s.number("log_interval", d.log_interval_s, min=0.1, max=86400),
        alert_stream=s.string("alert_stream", d.alert_stream),
        alert_stream_maxlen=s.integer(
            "alert_stream_maxlen", d.alert_stream_maxlen, min=1, max=10**9
        ),
        patterns=_parse_patterns(s.child("patterns")),
        discovery=_parse_discovery(s.child("discovery")),
    )
    s.done()
    return cfg


def _auto_int(s: Section, key: str) -> int | None:
    """An integer >= 1, or ``auto``/absent for None."""
    value = s.raw(key, "auto")
    if value == "auto":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    s.error(key, f"must be 'auto' or an integer >= 1, got {value!r}")
    return None


def _batch_sizes(s: Section, d: ScannerSettings) -> dict[str, int]:
    low = s.integer("batch_size_min", d.batch_size_min, min=1, max=100_000)
    high = s.integer("batch_size_max", d.batch_size_max, min=1, max=100_000)
    if low > high:
        s.error("batch_size_min", f"must be <= batch_size_max ({high}), got {low}")
        low, high = d.batch_size_min, d.batch_size_max
    return {"batch_size_min": low, "batch_size_max": high}


def _parse_patterns(s: Section) -> PatternSettings:
    d = PatternSettings()
    cfg = PatternSettings(
        cooloff_s=s.number("cooloff", d.cooloff_s, min=0, max=86400),
        session_open_utc_s=_hhmm(s, "session_open_utc", "00:00"),
        opening_range_s=s.number("opening_range", d.opening_range_s, min=0, max=86400),
        ema_fast=s.integer("ema_fast", d.ema_fast, min=1),
        ema_slow=s.integer("ema_slow", d.ema_slow, min=2),
        ema_seed=EmaSeed(s.string("ema_seed", d.ema_seed.value, [e.value for e in EmaSeed])),
        volume_window=s.integer("volume_window", d.volume_window, min=2, max=100_000),
        lookback_ticks=s.integer("lookback_ticks", d.lookback_ticks, min=1, max=100_000),
        warmup_ticks=s.integer("warmup_ticks", d.warmup_ticks, min=2),
        volume_spike_z=s.number("volume_spike_z", d.volume_spike_z, min=0.1),
        breakout_volume_z=s.number("breakout_volume_z", d.breakout_volume_z, min=0.1),
        momentum_spread=s.number("momentum_spread", d.momentum_spread, min=1e-9),
        momentum_velocity=s.number("momentum_velocity", d.momentum_velocity, min=1e-9),
        symbol_ttl_s=s.number("symbol_ttl", d.symbol_ttl_s, min=1, max=YEAR_S),
    )
    if cfg.ema_fast >= cfg.ema_slow:
        s.error("ema_fast", f"must be < ema_slow ({cfg.ema_slow}), got {cfg.ema_fast}")
    s.done()
    return cfg


def _hhmm(s: Section, key: str, default: str) -> float:
    text = s.string(key, default)
    match = _HHMM.match(text) if isinstance(text, str) else None
    if match is None:
        s.error(key, f"must be a time of day HH:MM, got {text!r}")
        match = _HHMM.match(default)
        assert match is not None
    return float(int(match.group(1)) * 3600 + int(match.group(2)) * 60)


def _parse_discovery(s: Section) -> DiscoverySettings:
    d = DiscoverySettings()
    raw = s.raw("scanners", [])
    scanners: list[ScannerRef] = []
    if not isinstance(raw, list):
        s.error("scanners", f"must be a list, got {type(raw).__name__}")
        raw = []
    for index, item in enumerate(raw):
        ref = _parse_scanner_ref(s, s.key_path(f"scanners[{index}]"), item)
        if ref is not None:
            scanners.append(ref)
    _check_unique(s, scanners)
    cfg = DiscoverySettings(
        concurrent=s.boolean("concurrent", d.concurrent),
        max_workers=s.integer("max_workers", d.max_workers, min=1, max=256),
        timeout_seconds=s.number("timeout_seconds", d.timeout_seconds, min=0.01, max=86400),
        scanners=tuple(scanners),
    )
    s.done()
    return cfg


def _parse_scanner_ref(parent: Section, path: str, item: Any) -> ScannerRef | None:
    if isinstance(item, str):
        return _ref_from_target(parent, path, item, None, enabled=True, timeout=None)
    s = Section(item, path, parent.problems)
    target = s.string("target", None)
    name = s.string("name", None)
    enabled = s.boolean("enabled", True)
    timeout_seconds = s.number("timeout_seconds", None, min=0.01, max=86400)
    s.done()
    if isinstance(target, str):
        return _ref_from_target(s, path, target, name, enabled=enabled, timeout=timeout_seconds)
    if s.data:
        s.error("target", "is required")
    return None


def _ref_from_target(
    s: Section,
    path: str,
    target: str,
    name: str | None,
    *,
    enabled: bool,
    timeout: float | None,
) -> ScannerRef | None:
    if not _TARGET.match(target):
        s.problems.add(path, f"must name a 'module:callable' target, got {target!r}")
        return None
    return ScannerRef(
        name=name or target.rsplit(":", 1)[1],
        target=target,
        enabled=enabled,
        timeout_seconds=timeout,
    )


def _check_unique(s: Section, scanners: list[ScannerRef]) -> None:
    seen: set[str] = set()
    for ref in scanners:
        if ref.name in seen:
            s.error("scanners", f"scanner name {ref.name!r} is used twice")
        seen.add(ref.name)

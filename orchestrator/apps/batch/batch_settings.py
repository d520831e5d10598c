"""The ``batch`` section of ``config/workers.yaml``: where the batch worker reads and writes.

``parse_batch_settings(section)`` is the parser registered in
``orchestrator.sections.PARSERS["batch"]``; it imports nothing heavy. Every
key, with its default::

    batch:
      data_root: var/candles        # <data_root>/<timeframe>/<SYMBOL>.parquet
      results_dir: var/batches      # <results_dir>/<batch id>/results.jsonl, summary.json
      repository: orchestrator.apps.batch.engine.candles:ParquetCandleRepository
                                    # "module:Class", built as Class(data_root)
      timeout: 60                   # seconds per symbol, unless a job says otherwise
      memory_mb: 1024               # RSS cap per symbol's process tree (null: none)
      max_workers: auto             # engine processes; auto = the CPUs this host lets us use
      shard_size: 500               # a larger batch is split into shards (0: never)
      progress_interval: 0.5        # seconds between progress updates (at least 0.5)
      keep: 604800                  # seconds orch:batch:<id> outlives its last update

Relative paths are relative to the config's base directory (``Config.root``);
``resolve`` turns them into absolute ones. Field names are the YAML keys
(durations carry ``_s``, which ``orchestrator check`` strips).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.cpus import usable_cpus
from orchestrator.validate import YEAR_S, Section

__all__ = ["MIN_PROGRESS_INTERVAL_S", "BatchSettings", "parse_batch_settings"]

MIN_PROGRESS_INTERVAL_S = 0.5  # progress reaches Redis at most twice a second
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass(frozen=True, slots=True)
class BatchSettings:
    data_root: str = "var/candles"
    results_dir: str = "var/batches"
    repository: str = "orchestrator.apps.batch.engine.candles:ParquetCandleRepository"
    timeout_s: float = 60.0
    memory_mb: float | None = 1024.0  # engine.processing.DEFAULT_MEMORY_MB
    max_workers: int = 1  # resolved: ``auto`` is this host's CPU count
    shard_size: int = 500
    progress_interval_s: float = MIN_PROGRESS_INTERVAL_S
    keep_s: float = 7 * 86400.0

    def resolve(self, root: Path) -> BatchSettings:
        """The same settings with ``data_root`` and ``results_dir`` absolute."""
        return replace(
            self,
            data_root=str((root / self.data_root).resolve()),
            results_dir=str((root / self.results_dir).resolve()),
        )


def parse_batch_settings(s: Section, cpu_count: int | None = None) -> BatchSettings:
    """Validate the ``batch`` section; problems are recorded on ``s.problems``."""
    d = BatchSettings()
    cfg = BatchSettings(
        data_root=_path(s, "data_root", d.data_root),
        results_dir=_path(s, "results_dir", d.results_dir),
        repository=_target(s, "repository", d.repository),
        timeout_s=s.number("timeout", d.timeout_s, min=0.01, max=86400),
        memory_mb=_optional_number(s, "memory_mb", d.memory_mb, min_value=16),
        max_workers=_workers(s, "max_workers", cpu_count or usable_cpus()),
        shard_size=s.integer("shard_size", d.shard_size, min=0),
        progress_interval_s=s.number(
            "progress_interval", d.progress_interval_s, min=MIN_PROGRESS_INTERVAL_S, max=60
        ),
        keep_s=s.number("keep", d.keep_s, min=60, max=YEAR_S),
    )
    s.done()
    return cfg


def _path(s: Section, key: str, default: str) -> str:
    value = s.string(key, default)
    if not isinstance(value, str) or not value.strip():
        s.error(key, "must be a non-empty path")
        return default
    return value


def _target(s: Section, key: str, default: str) -> str:
    value = s.string(key, default)
    if isinstance(value, str) and not _TARGET.match(value):
        s.error(key, f"must be 'package.module:Class', got {value!r}")
        return default
    return str(value)


def _optional_number(s: Section, key: str, default: float | None, min_value: float) -> float | None:
    """``key`` absent: ``default``; ``null``: None (no limit); else a number."""
    if not s.has(key):
        return default
    if s.raw(key) is None:
        return None
    value: Any = s.number(key, None, min=min_value, max=1 << 24)
    return None if value is None else float(value)


def _workers(s: Section, key: str, cores: int) -> int:
    value = s.raw(key, "auto")
    if value == "auto":
        return cores
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    s.error(key, f"must be 'auto' or an integer >= 1, got {value!r}")
    return cores

"""The ``scanner`` config section: defaults, resolution, problems with key paths."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrator.apps.scanner.batching import next_read_size
from orchestrator.apps.scanner.scanner_settings import (
    BacklogPolicy,
    PatternSettings,
    ScannerRef,
    ScannerSettings,
    backlog_limit,
    parse_scanner_settings,
    pool_size,
)
from orchestrator.validate import ConfigError, Problems, Section


def parse(data: object, cpu_count: int = 2) -> ScannerSettings:
    problems = Problems()
    settings = parse_scanner_settings(Section(data, "scanner", problems), cpu_count=cpu_count)
    problems.raise_if_any()
    return settings


def problems_of(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data)
    return info.value.problems


@pytest.mark.parametrize(
    ("cores", "requested", "cap", "expected"),
    [
        (1, None, None, 1),
        (2, None, None, 1),  # seed 000 insisted on 5 here
        (4, None, None, 2),
        (8, None, None, 5),
        (16, None, None, 11),
        (2, 8, None, 2),  # capped at the cores
        (2, 8, 16, 8),  # unless processing_workers_max says otherwise
        (16, None, 4, 4),
        (0, None, None, 1),
    ],
)
def test_pool_size(cores: int, requested: int | None, cap: int | None, expected: int) -> None:
    assert pool_size(cores, requested, cap) == expected


def test_backlog_limit() -> None:
    assert backlog_limit(1) == 100
    assert backlog_limit(40) == 160
    assert backlog_limit(10, requested=5) == 20  # never below 2 x workers
    assert backlog_limit(10, requested=500) == 500


def test_defaults() -> None:
    s = parse(None, cpu_count=4)
    assert s == ScannerSettings(
        processing_workers=2, processing_workers_max=4, processing_backlog=100
    )
    assert s.alert_stream == "alerts:intraday" and s.warmup_history == 50_000
    assert s.on_backlog_full is BacklogPolicy.BLOCK and s.max_memory_mb == 2048
    assert (s.batch_size_min, s.batch_size_max) == (10, 2000)
    assert s.patterns == PatternSettings()
    assert s.discovery.concurrent and s.discovery.timeout_seconds == 30.0
    assert s.memory_share_bytes == 1024 * 1024 * 1024


def test_overrides() -> None:
    s = parse(
        {
            "processing_workers": 3,
            "processing_workers_max": 8,
            "processing_backlog": 12,
            "on_backlog_full": "shed_oldest",
            "max_memory_mb": 512,
            "batch_size_max": 5000,
            "patterns": {"cooloff": 60, "session_open_utc": "03:45", "ema_fast": 5},
            "discovery": {
                "concurrent": False,
                "timeout_seconds": 2.5,
                "scanners": [
                    "pkg.movers:scan",
                    {"name": "insider", "target": "pkg.insider:run", "timeout_seconds": 5},
                    {"target": "pkg.off:probe", "enabled": False},
                ],
            },
        }
    )
    assert (s.processing_workers, s.processing_workers_max, s.processing_backlog) == (3, 8, 12)
    assert s.on_backlog_full is BacklogPolicy.SHED_OLDEST
    assert s.patterns.cooloff_s == 60 and s.patterns.session_open_utc_s == 3 * 3600 + 45 * 60
    assert s.discovery.scanners == (
        ScannerRef("scan", "pkg.movers:scan"),
        ScannerRef("insider", "pkg.insider:run", timeout_seconds=5.0),
        ScannerRef("probe", "pkg.off:probe", enabled=False),
    )
    assert not s.discovery.concurrent and s.discovery.timeout_seconds == 2.5


def test_problems_name_their_key_paths() -> None:
    problems = problems_of(
        {
            "processing_workers": 0,
            "on_backlog_full": "drop",
            "batch_size_min": 0,
            "typo": 1,
            "patterns": {"ema_fast": 30, "session_open_utc": "25:00"},
            "discovery": {"max_workers": 0, "scanners": ["nocolon", {"name": "x"}, 5]},
        }
    )
    assert problems == [
        "scanner.processing_workers: must be 'auto' or an integer >= 1, got 0",
        "scanner.on_backlog_full: must be one of block, shed_oldest, got 'drop'",
        "scanner.batch_size_min: must be >= 1, got 0",
        "scanner.patterns.session_open_utc: must be a time of day HH:MM, got '25:00'",
        "scanner.patterns.ema_fast: must be < ema_slow (26), got 30",
        "scanner.discovery.scanners[0]: must name a 'module:callable' target, got 'nocolon'",
        "scanner.discovery.scanners[1].target: is required",
        "scanner.discovery.scanners[2]: must be a mapping, got int",
        "scanner.discovery.max_workers: must be >= 1, got 0",
        "scanner.typo: unknown key",
    ]


def test_stream_group_and_read_size_belong_to_the_queue() -> None:
    assert problems_of({"tick_stream": "t", "group": "g"}) == [
        "scanner.tick_stream: unknown key",
        "scanner.group: unknown key",
    ]


def test_field_names_are_the_yaml_keys() -> None:
    """``orchestrator check`` prints a section by field name (``_s`` stripped)."""
    from orchestrator.config import describe, parse_config

    queues = {"scanner": {"command": ["true"]}}
    config = parse_config({"queues": queues, "scanner": {"warmup_history": 5, "log_interval": 2.5}})
    printed = describe(config)["scanner"]
    yaml_keys = {
        "processing_workers", "processing_workers_max", "processing_backlog", "on_backlog_full",
        "max_memory_mb", "memory_check_interval", "stall_timeout", "checkpoint_batches",
        "batch_size_min", "batch_size_max", "warmup_history", "log_interval",
        "alert_stream", "alert_stream_maxlen", "patterns", "discovery",
    }  # fmt: skip
    assert set(printed) == yaml_keys
    assert printed["warmup_history"] == 5 and printed["log_interval"] == 2.5
    assert set(printed["discovery"]) == {"concurrent", "max_workers", "timeout_seconds", "scanners"}


def test_batch_bounds_are_checked() -> None:
    assert problems_of({"batch_size_min": 100, "batch_size_max": 10}) == [
        "scanner.batch_size_min: must be <= batch_size_max (10), got 100"
    ]
    assert problems_of({"batch_size": 50}) == ["scanner.batch_size: unknown key"]  # the queue's


def test_duplicate_scanner_names_are_refused() -> None:
    assert problems_of({"discovery": {"scanners": ["a.b:scan", "c.d:scan"]}}) == [
        "scanner.discovery.scanners: scanner name 'scan' is used twice"
    ]


def test_settings_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, orchestrator.apps.scanner.scanner_settings; "
        "heavy = {'numpy', 'polars', 'redis', 'psutil', 'loguru'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("current", "got", "expected"),
    [
        (50, 50, 100),  # full: the stream has more, ask for more
        (1600, 1600, 2000),  # ... up to the maximum
        (100, 60, 100),  # more than half: keep
        (100, 10, 50),  # caught up: halve
        (100, 0, 50),
        (16, 0, 10),  # ... down to the minimum
    ],
)
def test_read_size_adapts_within_bounds(current: int, got: int, expected: int) -> None:
    assert next_read_size(current, got, low=10, high=2000) == expected

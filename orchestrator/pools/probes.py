"""Measuring a running task's worker: is it stalled, is it over its memory cap.

Both sample the worker's process (and, for memory, its descendants, found
through ``/proc/PID/task/TID/children`` by ``TreeRss``: microseconds, where
psutil's scan of every process on the host takes milliseconds).
"""

from __future__ import annotations

import contextlib

import psutil

from orchestrator.pools.records import PoolWorker
from orchestrator.pools.treerss import TreeRss
from orchestrator.procs import snapshot_tree

__all__ = ["STALL_CPU_FRACTION", "probe_stall", "rss_over"]

STALL_CPU_FRACTION = 0.2
"""A running task using less than this share of one core is stalled."""


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def probe_stall(worker: PoolWorker, started_s: float, now: float, half_s: float) -> float:
    """Sample the worker's CPU time every ``half_s`` once its task is that old;
    mark it stalled while it uses less than ``STALL_CPU_FRACTION`` of a core
    and is asleep (a worker waiting for a busy core is runnable, not
    stalled). Returns when to sample next."""
    if now < started_s + half_s:
        return started_s + half_s
    mark = worker.cpu_mark
    if mark is not None and now < mark[0] + half_s:
        return mark[0] + half_s
    try:
        cpu_s = _cpu_seconds(worker.proc)
        idle = mark is not None and (cpu_s - mark[1]) < STALL_CPU_FRACTION * (now - mark[0])
        worker.stalled = idle and worker.proc.status() != psutil.STATUS_RUNNING
    except psutil.Error:
        return now + half_s  # exiting; its exit status will tell
    worker.cpu_mark = (now, cpu_s)
    return now + half_s


def rss_over(worker: PoolWorker, limit_mb: float) -> str | None:
    """The error for a worker tree over ``limit_mb``, else None."""
    try:
        rss_mb = _tree_rss_bytes(worker) / 2**20
    except psutil.Error:
        return None
    if rss_mb <= limit_mb:
        return None
    return f"memory limit exceeded: {rss_mb:.0f} MB > {limit_mb:g} MB cap"


def _tree_rss_bytes(worker: PoolWorker) -> int:
    """RSS of a worker and its descendants: through its ``TreeRss`` (files
    kept open, since this runs every ``sample_interval_s``), or on a kernel
    without ``/proc/PID/task/TID/children`` by psutil's scan of every process."""
    if worker.rss is None and TreeRss.supported(worker.pid):
        worker.rss = TreeRss(worker.pid)
    if worker.rss is not None:
        return worker.rss.total()
    total = worker.proc.memory_info().rss
    for proc in snapshot_tree(worker.pid)[1:]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return int(total)

"""Measuring a running task's worker: is it stalled, is it over its memory cap.

Both sample the worker's process (and, for memory, its descendants, found
through ``/proc/PID/task/TID/children``: tens of microseconds, where
psutil's scan of every process on the host takes milliseconds).
"""

from __future__ import annotations

import contextlib

import psutil

from orchestrator.pools.records import Worker
from orchestrator.procs import descendants, snapshot_tree

__all__ = ["STALL_CPU_FRACTION", "probe_stall", "rss_over"]

STALL_CPU_FRACTION = 0.2
"""A running task using less than this share of one core is stalled."""


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def probe_stall(worker: Worker, started_s: float, now: float, half_s: float) -> float:
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


def rss_over(worker: Worker, limit_mb: float) -> str | None:
    """The error for a worker tree over ``limit_mb``, else None."""
    try:
        rss_mb = _tree_rss_bytes(worker.proc) / 2**20
    except psutil.Error:
        return None
    if rss_mb <= limit_mb:
        return None
    return f"memory limit exceeded: {rss_mb:.0f} MB > {limit_mb:g} MB cap"


def _tree_rss_bytes(proc: psutil.Process) -> int:
    """RSS of a process and its descendants.

    Descendants come from ``/proc/PID/task/TID/children`` (tens of
    microseconds) rather than psutil's scan of every process on the host
    (milliseconds), since this runs every ``sample_interval_s``.
    """
    total = proc.memory_info().rss
    kids = descendants(proc.pid)
    if kids is None:  # a kernel without the children file
        kids = [p.pid for p in snapshot_tree(proc.pid)[1:]]
    for pid in kids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return int(total)

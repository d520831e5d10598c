"""What a pool is told and what it answers: settings, tasks, outcomes, errors.

Also the environment a pool's processes get by default (``WORKER_ENV``:
one thread per numeric library, an allocator that keeps its memory) and the
default pool size (the CPUs this process may use).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from orchestrator.cpus import usable_cpus

__all__ = [
    "MIN_SPARE",
    "POOL_TAG_VARIABLE",
    "RETAIN_MEMORY_ENV",
    "SINGLE_THREAD_ENV",
    "WORKER_ENV",
    "Outcome",
    "OutcomeKind",
    "PoolAborted",
    "PoolError",
    "PoolSettings",
    "Task",
    "default_pool_size",
]

MIN_SPARE = 8
"""Default most extra workers standing in for stalled ones, however few the
cores: a stalled task (a sleep, a blocked read) costs its worker's memory
but no CPU, and each stands in only until the stalled task's timeout. With
no more spares than cores, a few hanging tasks at once would idle the CPUs."""

POOL_TAG_VARIABLE = "ORCH_POOL_TAG"
"""Every process of a pool carries the pool's tag in this variable, a
worker's processes (and what its tasks start) the worker's: ``<pool>/w<pid>``.
It finds them once they have left the worker's tree (``procs.kill_tagged``)."""

SINGLE_THREAD_ENV: Mapping[str, str] = MappingProxyType(
    {
        "POLARS_MAX_THREADS": "1",
        "RAYON_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "VECLIB_MAXIMUM_THREADS": "1",
    }
)
"""One thread per numeric library, so N workers on N cores do not fight."""

RETAIN_MEMORY_ENV: Mapping[str, str] = MappingProxyType(
    {
        "MALLOC_MMAP_THRESHOLD_": str(16 << 20),
        "MALLOC_TRIM_THRESHOLD_": str(64 << 20),
    }
)
"""glibc keeps freed memory up to 64 MB instead of unmapping it: numpy
temporaries of a few hundred kB (an indicator over 19,000 bars) otherwise
map and fault in fresh pages every time, a third of a worker's CPU."""

WORKER_ENV: Mapping[str, str] = MappingProxyType({**SINGLE_THREAD_ENV, **RETAIN_MEMORY_ENV})
"""The default environment added for a pool's processes."""


def default_pool_size() -> int:
    """CPUs this process may run on (affinity-aware), at least 1."""
    return usable_cpus()


class PoolError(RuntimeError):
    """The pool itself failed (launcher or workers cannot start)."""


class PoolAborted(PoolError):
    """``abort()`` was called; every process of the pool is gone."""


class OutcomeKind(StrEnum):
    OK = "ok"
    ERROR = "error"  # the task raised; ``error`` holds "Type: message"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    DIED = "died"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """What a pool runs and how. ``target`` and ``worker_init`` are
    ``"package.module:function"`` paths, resolved in the launcher."""

    target: str  # called as target(context, payload) in a worker
    size: int = field(default_factory=default_pool_size)  # CPU slots
    preload: tuple[str, ...] = ()  # imported once by the launcher, before forking
    worker_init: str | None = None  # called once in each new worker
    env: Mapping[str, str] = field(default_factory=lambda: WORKER_ENV)  # added to os.environ
    prefetch: int = 16  # most tasks a worker holds; dispatch_depth picks fewer for long ones
    max_spare: int | None = None  # extra workers while others stall; None: max(size, MIN_SPARE)
    standby: int = 1  # idle, started workers kept to replace others at once
    stall_after_s: float | None = 0.1  # None: never count a task as stalled
    sample_interval_s: float = 0.05  # RSS sampling period of memory-capped tasks
    start_timeout_s: float = 60.0  # launcher preload, worker init
    close_grace_s: float = 2.0

    def __post_init__(self) -> None:
        if self.size < 1 or self.prefetch < 1:
            raise ValueError(f"size and prefetch must be >= 1, got {self.size}, {self.prefetch}")
        if (self.max_spare is not None and self.max_spare < 0) or self.standby < 0:
            raise ValueError(f"max_spare and standby must be >= 0, got {self}")

    @property
    def spare(self) -> int:
        return max(self.size, MIN_SPARE) if self.max_spare is None else self.max_spare


@dataclass(frozen=True, slots=True)
class Task:
    key: str  # the caller's name for the task, echoed in its outcome
    payload: object  # picklable; keep it small
    timeout_s: float | None = None  # from the moment the task starts running
    memory_limit_mb: float | None = None  # RSS of the worker's process tree


@dataclass(frozen=True, slots=True)
class Outcome:
    key: str
    kind: OutcomeKind
    value: object = None  # what target returned, when kind is OK
    error: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.kind is OutcomeKind.OK

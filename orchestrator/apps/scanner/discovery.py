"""Discovery scanners (seed 003): slow, I/O-bound scanner callables on threads.

A scanner is a callable taking a state dict and returning its candidates.
``run_scanners`` runs a set of them with these rules:

- Each scanner gets its own deep copy of the state, with ``tool_logs`` an
  empty list; what it appends there is merged back into the result's state
  in scanner order (of finished scanners; a timed-out scanner's logs are
  not, as its thread may still be writing them).
- At most ``max_workers`` run at once. ``concurrent: false`` is the same
  machinery with one at a time, so both modes give the same candidates in
  the same (scanner) order and the same timeouts.
- The timeout really bounds the wait: each scanner has a deadline (its start
  plus its timeout) and the scheduler waits with
  ``concurrent.futures.wait(..., timeout=until the nearest deadline)``,
  never ``future.result(timeout)`` on an ``as_completed`` future (seed 003's
  bug: that future is already done, so the timeout never applies).
- A thread cannot be killed: a timed-out scanner is *abandoned*. It runs on
  a daemon thread of its own (not a ``ThreadPoolExecutor``, whose threads
  are joined at interpreter exit), so nothing ever waits for it; its slot is
  freed for the next scanner; whatever it returns later is dropped. Scanners
  should still set timeouts on their own sockets.
- An exception, or a timeout, fails that scanner only.
"""

from __future__ import annotations

import copy
import importlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from loguru import logger

from orchestrator.apps.scanner.scanner_settings import DiscoverySettings
from orchestrator.validate import ConfigError

__all__ = [
    "DiscoveryResult",
    "ScannerJob",
    "ScannerOutcome",
    "Status",
    "load_jobs",
    "run_discovery",
    "run_scanners",
]

ScannerFn = Callable[[dict[str, Any]], Iterable[Any]]
LOGS_KEY = "tool_logs"


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class ScannerJob:
    name: str
    fn: ScannerFn
    timeout_s: float | None = None  # None: the run's timeout


@dataclass(frozen=True, slots=True)
class ScannerOutcome:
    name: str
    status: Status
    elapsed_s: float
    candidates: tuple[Any, ...] = ()
    logs: tuple[Any, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DiscoveryResult:
    candidates: tuple[Any, ...]
    outcomes: tuple[ScannerOutcome, ...]
    state: dict[str, Any]
    elapsed_s: float

    def outcome(self, name: str) -> ScannerOutcome:
        return next(o for o in self.outcomes if o.name == name)


@dataclass(slots=True)
class _Running:
    index: int
    job: ScannerJob
    state: dict[str, Any]
    started_s: float
    deadline_s: float


def run_discovery(
    settings: DiscoverySettings, state: Mapping[str, Any], jobs: Sequence[ScannerJob] | None = None
) -> DiscoveryResult:
    """``run_scanners`` as configured; ``jobs`` default to the configured scanners."""
    return run_scanners(
        load_jobs(settings) if jobs is None else jobs,
        state,
        concurrent=settings.concurrent,
        max_workers=settings.max_workers,
        timeout_s=settings.timeout_seconds,
    )


def run_scanners(
    jobs: Sequence[ScannerJob],
    state: Mapping[str, Any],
    *,
    concurrent: bool = True,
    max_workers: int = 8,
    timeout_s: float = 30.0,
) -> DiscoveryResult:
    """Run every scanner (see module doc); never waits past the deadlines."""
    started = time.monotonic()
    workers = max(1, max_workers) if concurrent else 1
    mode = f"concurrently (max {workers} workers)" if concurrent else "sequentially"
    logger.info(f"Running {len(jobs)} scanners {mode}...")
    outcomes = _schedule(jobs, state, workers, timeout_s)
    ordered = tuple(outcomes[i] for i in range(len(jobs)))
    merged = dict(state)
    merged[LOGS_KEY] = [*state.get(LOGS_KEY, ()), *(log for o in ordered for log in o.logs)]
    candidates = tuple(c for o in ordered if o.status is Status.OK for c in o.candidates)
    return DiscoveryResult(candidates, ordered, merged, time.monotonic() - started)


def _schedule(
    jobs: Sequence[ScannerJob], state: Mapping[str, Any], workers: int, timeout_s: float
) -> dict[int, ScannerOutcome]:
    pending = deque(enumerate(jobs))
    running: dict[Future[list[Any]], _Running] = {}
    outcomes: dict[int, ScannerOutcome] = {}
    while pending or running:
        while pending and len(running) < workers:
            index, job = pending.popleft()
            own = _state_copy(state)
            now = time.monotonic()
            limit = job.timeout_s if job.timeout_s is not None else timeout_s
            running[_start(job, own)] = _Running(index, job, own, now, now + limit)
        nearest = min(r.deadline_s for r in running.values())
        wait(running, timeout=max(0.0, nearest - time.monotonic()), return_when=FIRST_COMPLETED)
        now = time.monotonic()
        for future, run in list(running.items()):
            if future.done() or now >= run.deadline_s:
                del running[future]
                outcomes[run.index] = _outcome(future, run, now)
                _log(outcomes[run.index])
    return outcomes


def _start(job: ScannerJob, state: dict[str, Any]) -> Future[list[Any]]:
    """Run ``job`` on a daemon thread of its own; its future."""
    future: Future[list[Any]] = Future()
    future.set_running_or_notify_cancel()

    def target() -> None:
        try:
            result = list(job.fn(state))
        except BaseException as exc:  # any failure belongs to this scanner alone
            future.set_exception(exc)
        else:
            future.set_result(result)

    threading.Thread(target=target, name=f"scanner-{job.name}", daemon=True).start()
    return future


def _outcome(future: Future[list[Any]], run: _Running, now: float) -> ScannerOutcome:
    elapsed = now - run.started_s
    if not future.done():
        return ScannerOutcome(run.job.name, Status.TIMEOUT, elapsed)
    logs = tuple(run.state.get(LOGS_KEY, ()))
    exc = future.exception()
    if exc is not None:
        error = f"{type(exc).__name__}: {exc}"
        return ScannerOutcome(run.job.name, Status.FAILED, elapsed, logs=logs, error=error)
    return ScannerOutcome(run.job.name, Status.OK, elapsed, tuple(future.result()), logs)


def _state_copy(state: Mapping[str, Any]) -> dict[str, Any]:
    own = copy.deepcopy({k: v for k, v in state.items() if k != LOGS_KEY})
    own[LOGS_KEY] = []
    return own


def _log(o: ScannerOutcome) -> None:
    log = logger.bind(event="discovery_scanner", scanner=o.name, status=o.status.value)
    if o.status is Status.OK:
        log.info(f"✓ {o.name}: {len(o.candidates)} candidates ({o.elapsed_s:.1f}s)")
    elif o.status is Status.TIMEOUT:
        log.warning(f"⏱️ {o.name}: timeout after {o.elapsed_s:.1f}s (abandoned)")
    else:
        log.warning(f"⚠️ {o.name}: {o.error}")


def load_jobs(settings: DiscoverySettings, path: str = "scanner.discovery") -> list[ScannerJob]:
    """Import the enabled scanners; a ``ConfigError`` naming each one that cannot be."""
    jobs: list[ScannerJob] = []
    problems: list[str] = []
    for index, ref in enumerate(settings.scanners):
        if not ref.enabled:
            continue
        module_name, _, attr = ref.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            problems.append(f"{path}.scanners[{index}]: cannot load {ref.target!r}: {exc}")
            continue
        if not callable(obj):
            problems.append(f"{path}.scanners[{index}]: {ref.target!r} is not callable")
            continue
        jobs.append(ScannerJob(ref.name, obj, ref.timeout_seconds))
    if problems:
        raise ConfigError(problems)
    return jobs

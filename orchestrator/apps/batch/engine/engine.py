"""``ProcessingEngine``: a batch of symbols on every core, with timeouts that hold.

The engine runs ``scan.scan_symbol`` on a ``pools.KillablePool``. The batch
context (repository settings, parsed formula, range) goes once to each
worker; per symbol only its name goes out and its matches and last
indicator values come back.

Two ways to run a batch:

* ``iter_batch(job)``: a plain iterator of results in completion order, for
  synchronous callers such as a batch worker, which can publish progress
  between results and call ``abort()`` from a signal handler;
* ``await process_batch(job, progress_callback)``: the seed's coroutine.
  The pool is driven from a helper thread; results and the
  ``progress_callback(completed, total)`` calls arrive on the event loop.
  Cancelling it kills every process of the pool before it returns.

Processes start on the first batch (or ``start()``); leaving the ``with``
block, ``close()``, cancelling a batch or ``abort()`` ends them all, and the
next batch starts a fresh pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import cast

from orchestrator.apps.batch.engine.candles import CandleRepository
from orchestrator.apps.batch.engine.processing import ProcessingJob, ProcessingResult
from orchestrator.apps.batch.engine.scan import ScanSpec, SymbolScan
from orchestrator.pools import (
    KillablePool,
    Outcome,
    OutcomeKind,
    PoolSettings,
    Task,
    default_pool_size,
)

__all__ = ["PREFETCH", "RELAY_INTERVAL_S", "TIMEOUT_ERROR", "ProcessingEngine"]

TIMEOUT_ERROR = "Processing timeout"
PREFETCH = 64  # at most: pools.dispatch_depth holds ~50 ms of work (~40 daily symbols)
RELAY_INTERVAL_S = 0.02  # progress reaches the event loop at most 50 times a second
ProgressCallback = Callable[[int, int], None]


class ProcessingEngine:
    """Scans symbols in parallel worker processes.

    ``max_workers`` (default: the CPUs this process may use) is how many
    workers compute at once; up to ``spare_workers`` more (default: as many,
    at least ``pools.model.MIN_SPARE``) stand in while others are stalled in
    a sleep or a blocked read, until their timeout. One more, idle, stands
    by to replace a worker at once.
    """

    def __init__(
        self,
        repository: CandleRepository,
        max_workers: int | None = None,
        *,
        spare_workers: int | None = None,
    ) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self._repository = repository
        self._max_workers = default_pool_size() if max_workers is None else max_workers
        self._spare_workers = spare_workers
        self._pool: KillablePool | None = None
        self._batch_thread: threading.Thread | None = None

    def __enter__(self) -> ProcessingEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def max_workers(self) -> int:
        return self._max_workers

    def pids(self) -> list[int]:
        """The pool's launcher and workers; [] until the first batch."""
        return self._pool.pids() if self._pool is not None else []

    def start(self) -> None:
        """Start the processes now rather than at the first batch."""
        self._current_pool().start()

    def abort(self) -> None:
        """From any thread: the running batch stops (``PoolAborted`` from
        ``iter_batch``; ``process_batch`` is cancelled the same way) and every
        process ends. The next batch starts a fresh pool."""
        if self._pool is not None:
            self._pool.abort()

    def close(self) -> None:
        thread = self._batch_thread
        if thread is not None and thread.is_alive():
            self.abort()
            thread.join()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def iter_batch(self, job: ProcessingJob) -> Iterator[ProcessingResult]:
        """Results of ``job`` in completion order.

        The formula is parsed here: a ``FormulaError`` is raised before any
        process starts. One that parses but cannot be evaluated (see
        ``evaluate``) raises its ``FormulaError`` from the iteration, once,
        and the batch stops. Stopping the iteration early kills the workers
        busy with the rest of the batch.
        """
        spec = ScanSpec.for_job(self._repository, job)
        tasks = [Task(symbol, symbol, job.timeout_s, job.memory_mb) for symbol in job.symbols]
        return _results(self._current_pool().run(tasks, spec))

    async def process_batch(
        self, job: ProcessingJob, progress_callback: ProgressCallback | None = None
    ) -> list[ProcessingResult]:
        """Scan ``job``; ``progress_callback(completed, total)`` per symbol."""
        relay = _Relay(asyncio.get_running_loop())
        source = self.iter_batch(job)
        thread = threading.Thread(target=relay.pump, args=(source,), name=f"batch-{job.id}")
        self._batch_thread = thread
        thread.start()
        results: list[ProcessingResult] = []
        try:
            async for chunk in relay.chunks():
                for result in chunk:
                    results.append(result)
                    if progress_callback is not None:
                        progress_callback(len(results), len(job.symbols))
        except BaseException:
            self.abort()  # cancelled, or the callback raised: no process survives
            raise
        finally:
            thread.join()
            self._batch_thread = None
        return results

    def _current_pool(self) -> KillablePool:
        if self._pool is not None and self._pool.aborted:
            self._pool.close()  # aborted while idle: its processes end now
            self._pool = None
        if self._pool is None or self._pool.closed:
            self._pool = KillablePool(self._pool_settings())
        return self._pool

    def _pool_settings(self) -> PoolSettings:
        return PoolSettings(
            target="orchestrator.apps.batch.engine.scan:scan_symbol",
            size=self._max_workers,
            preload=(
                "numpy",
                "polars",
                "orchestrator.apps.batch.engine.scan",
                type(self._repository).__module__,
            ),
            worker_init="orchestrator.apps.batch.engine.scan:warm_up",
            prefetch=PREFETCH,
            max_spare=self._spare_workers,
        )


def _results(outcomes: Generator[Outcome]) -> Iterator[ProcessingResult]:
    """The pool's run as results; the run ends (its busy workers killed) as
    soon as this iteration stops, whether closed, exhausted or failing."""
    with contextlib.closing(outcomes):
        for outcome in outcomes:
            yield _result(outcome)


def _result(outcome: Outcome) -> ProcessingResult:
    elapsed_ms = outcome.elapsed_s * 1000
    if outcome.ok:
        scan = cast(SymbolScan, outcome.value)
        if scan.formula_error is not None:
            raise scan.formula_error
        return ProcessingResult(outcome.key, scan.match_times(), scan.indicators, elapsed_ms)
    if outcome.kind is OutcomeKind.TIMEOUT:
        return ProcessingResult(outcome.key, (), {}, elapsed_ms, TIMEOUT_ERROR)
    return ProcessingResult(outcome.key, (), {}, elapsed_ms, outcome.error or str(outcome.kind))


class _Relay:
    """Hands results from the batch thread to the event loop.

    The loop is woken at most every ``RELAY_INTERVAL_S`` and then takes all
    results that piled up: one wake-up (and GIL hand-over) per result would
    cost the parent more CPU than dispatching does.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[ProcessingResult] = []
        self._done = False
        self._error: BaseException | None = None
        self._wake_pending = False  # a wake-up is scheduled or the loop is pacing
        self._ready = asyncio.Event()

    def pump(self, source: Iterator[ProcessingResult]) -> None:
        """In the batch thread: forward every result, then the end."""
        try:
            for result in source:
                self._push(result)
        except BaseException as exc:
            self._push(None, error=exc)
        else:
            self._push(None)

    def _push(self, item: ProcessingResult | None, error: BaseException | None = None) -> None:
        with self._lock:
            if item is None:
                self._done, self._error = True, error
            else:
                self._items.append(item)
            if self._wake_pending:
                return
            self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody listens
            self._loop.call_soon_threadsafe(self._ready.set)

    async def chunks(self) -> AsyncIterator[list[ProcessingResult]]:
        while True:
            await self._ready.wait()
            with self._lock:
                items, self._items = self._items, []
                done, error = self._done, self._error
                if not items and not done:
                    self._wake_pending = False  # the next result wakes us
                    self._ready.clear()
                    continue
            if items:
                yield items
            if done:
                if error is not None:
                    raise error
                return
            await asyncio.sleep(RELAY_INTERVAL_S)  # results pile up meanwhile

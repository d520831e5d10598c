"""``ScannerPool``: pattern detection in worker processes, partitioned by symbol.

The scanner worker hands over stream entries as they come from XREADGROUP
and gets back, per batch, the ids it may acknowledge::

    with ScannerPool(settings).start() as pool:
        pool.submit(entries)                 # [(id, {field: value}), ...]; may block
        for result in pool.collect(timeout_s=0.05):
            ...  # XADD result.alerts; XACK result.processed_ids and result.shed_ids;
            ...  # dead-letter result.invalid and result.failed_ids first

Design:

- Partitions: one per pool process; a tick goes to crc32(symbol) mod
  workers, so a symbol's rolling state lives in one process and its ticks are
  processed in submission order (FIFO pipe, one batch at a time).
- Backpressure: ``backlog`` bounds the batches accepted and not yet reported.
  ``submit`` blocks while it is full (the reader stops reading; Redis holds
  the excess). With ``on_backlog_full: shed_oldest`` it drops the oldest
  batch still waiting in the parent instead and reports its ids as shed
  (``skipped_backlog``); when every in-flight batch is already with a
  process, it blocks as well. At most ``dispatch_window`` batches per process
  are in its pipe; the rest wait in the parent, where they can be shed.
- Progress happens inside ``submit``, ``collect`` and ``drain`` (no thread;
  use a pool from one thread): call ``collect`` whenever there is nothing
  to read. The processes keep working on what is in their pipes meanwhile.
- Crashes: a process that dies (or answers nothing for ``stall_timeout_s``)
  is replaced; the replacement restores the last checkpoint, replays the
  batches completed since (muted), then gets the batches the lost one held.
  Its state is exactly the lost one's, so alerts are neither lost nor
  repeated; results are only ever reported for completed batches.
- Memory: every ``memory_check_interval_s`` each process's resident memory
  (its tree, psutil) is compared with ``max_memory_mb / workers``; a process
  above its share is restarted the same way. One still above it at the
  check after two restarts in a row holds more state than its share (a
  restart rebuilds the same state): it is left running, with an error
  saying to raise ``max_memory_mb``, until a check finds it under again.
"""

from __future__ import annotations

import contextlib
import marshal
import pickle
import selectors
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any

from loguru import logger

from orchestrator import codec
from orchestrator.apps.scanner.frames import (
    Entry,
    Flag,
    Frame,
    Kind,
    Row,
    Split,
    TickId,
    encode,
    header,
    split_rows,
)
from orchestrator.apps.scanner.frames import split_entries as _split
from orchestrator.apps.scanner.partitions import Ledger, TickBatch
from orchestrator.apps.scanner.patterns import Alert
from orchestrator.apps.scanner.poolpipes import PoolPipe, default_argv
from orchestrator.apps.scanner.scanner_metrics import PoolMetrics
from orchestrator.apps.scanner.scanner_settings import BacklogPolicy, ScannerSettings
from orchestrator.procs import tree_rss_bytes

__all__ = ["BatchResult", "ScannerPool", "ScannerPoolError", "dispatch_window"]

MAX_WINDOW = 4
MAX_CRASHES_IN_A_ROW = 10
# A process over its share at this many memory checks in a row: restarts do not help.
MEMORY_CHECKS_OVER = 3
PUMP_WAIT_S = 0.05
_REPLAY = Flag.MUTE | Flag.NO_REPLY


class ScannerPoolError(RuntimeError):
    """A pool process keeps dying without finishing anything."""


class RestartCause(StrEnum):
    CRASH = "crashed"
    MEMORY = "over its memory share"
    STALL = "stalled"


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What the caller may now acknowledge, and the alerts to publish.

    ``processed_ids`` includes the ``invalid`` ticks (handled: refused with a
    reason). ``shed_ids`` were dropped unprocessed by ``shed_oldest``;
    ``failed_ids`` were given up after repeated crashes.
    """

    batch_id: int
    processed_ids: tuple[TickId, ...] = ()
    alerts: tuple[Alert, ...] = ()
    invalid: tuple[tuple[TickId, str], ...] = ()
    shed_ids: tuple[TickId, ...] = ()
    failed_ids: tuple[TickId, ...] = ()


def dispatch_window(backlog: int, workers: int) -> int:
    """Batches per process in its pipe: up to 4, leaving half the backlog sheddable."""
    return max(1, min(MAX_WINDOW, backlog // (2 * workers)))


class ScannerPool:
    """Pool processes, one per partition; see the module doc. Not thread-safe."""

    def __init__(
        self,
        settings: ScannerSettings,
        *,
        argv: Sequence[str] | None = None,
        rss_of: Callable[[int], int] = tree_rss_bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.processing_workers < 1 or settings.processing_backlog < 1:
            raise ValueError("a pool needs at least one worker and a backlog of at least one")
        self.settings = settings
        self.workers = settings.processing_workers
        self.window = dispatch_window(settings.processing_backlog, settings.processing_workers)
        self._argv = list(argv) if argv is not None else default_argv()
        self._rss_of = rss_of
        self._clock = clock
        self._ledgers = [Ledger.empty(p, settings.checkpoint_batches) for p in range(self.workers)]
        self._channels: list[PoolPipe] = []
        self._selector = selectors.DefaultSelector()
        self._results: list[BatchResult] = []
        self._partitions: dict[Any, int] = {}
        self._next_id = 1
        self._metrics = PoolMetrics()
        self._next_memory_check_s = 0.0
        self._over_memory = [0] * self.workers  # memory checks in a row each process was over
        self._closed = False

    def start(self) -> ScannerPool:
        """Start the processes (idempotent); a closed pool cannot be started again."""
        if self._closed:
            raise ScannerPoolError("the pool is closed")
        if not self._channels:
            self._channels = [self._spawn(p) for p in range(self.workers)]
            self._next_memory_check_s = self._clock() + self.settings.memory_check_interval_s
        return self

    def seed(self, checkpoints: Sequence[bytes]) -> None:
        """Before ``start``: each partition's initial state (``recovery.cooloff_checkpoints``)."""
        if self._channels:
            raise ScannerPoolError("seed() must be called before start()")
        for ledger, blob in zip(self._ledgers, checkpoints, strict=True):
            ledger.checkpoint = blob

    def __enter__(self) -> ScannerPool:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def in_flight(self) -> int:
        """Batches accepted and not yet reported."""
        return sum(ledger.in_flight for ledger in self._ledgers)

    def pids(self) -> list[int]:
        return [ch.pid for ch in self._channels]

    def submit(self, entries: Sequence[Entry]) -> None:
        """Accept stream entries; blocks while the backlog is full (see module doc)."""
        self._accept(_split(entries, self.workers, self._partitions), internal=False)

    def submit_rows(self, ids: list[TickId], rows: list[Row]) -> None:
        """``submit`` for rows already built (``frames.flat_rows``) and their ids."""
        self._accept(split_rows(ids, rows, self.workers, self._partitions), internal=False)

    def warm_up(self, entries: Sequence[Entry]) -> None:
        """Feed already-acknowledged history (e.g. XREVRANGE after a cold start).

        Processed muted: state and cool-offs are primed, nothing is reported.
        """
        self._accept(_split(entries, self.workers, self._partitions), internal=True)

    def collect(self, timeout_s: float = 0.0) -> list[BatchResult]:
        """Results so far; waits up to ``timeout_s`` for one while work is in flight."""
        deadline = self._clock() + timeout_s
        self._pump(0.0)
        while not self._results and self.in_flight:
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            self._pump(min(remaining, PUMP_WAIT_S))
        return self._take()

    def drain(self, timeout_s: float) -> list[BatchResult]:
        """Results until nothing is in flight or ``timeout_s`` has passed."""
        deadline = self._clock() + timeout_s
        self._pump(0.0)
        while self.in_flight and self._clock() < deadline:
            self._pump(min(max(deadline - self._clock(), 0.0), PUMP_WAIT_S))
        return self._take()

    def metrics(self) -> dict[str, float]:
        self._metrics.sample(self._clock())
        out = self._metrics.as_dict()
        out.update(batches_in_flight=self.in_flight, backlog=self.settings.processing_backlog)
        out["workers"] = self.workers
        return out

    def close(self, grace_s: float = 2.0) -> None:
        """Stop the processes (unreported batches stay unacknowledged in Redis)."""
        for ch in self._channels:
            ch.send(encode(Kind.STOP, Flag.NONE, 0, b""))
            ch.flush()
        for ch in self._channels:
            ch.close(grace_s)
        self._channels = []
        self._closed = True
        with contextlib.suppress(Exception):
            self._selector.close()

    # -- accepting and shedding --------------------------------------------

    def _accept(self, split: Split, internal: bool) -> None:
        if not self._channels:
            raise ScannerPoolError("the pool is not running; call start()")
        if split.no_symbol and not internal:
            self._refuse_no_symbol(split.no_symbol)
        for part, ids in enumerate(split.ids):
            if not ids:
                continue
            flags = Flag.MUTE if internal else Flag.NONE
            batch = TickBatch(self._new_id(), ids, marshal.dumps(split.rows[part]), internal, flags)
            if not internal:
                self._metrics.submitted += len(ids)
            self._admit()
            self._ledgers[part].waiting.append(batch)
            self._dispatch(part)

    def _refuse_no_symbol(self, ids: list[TickId]) -> None:
        """A tick without a symbol has no partition: handled at once, as invalid."""
        m = self._metrics
        m.submitted += len(ids)
        m.completed += len(ids)
        m.invalid += len(ids)
        invalid = tuple((tick_id, "tick has no symbol") for tick_id in ids)
        self._report(BatchResult(self._new_id(), tuple(ids), invalid=invalid))

    def _admit(self) -> None:
        while self.in_flight >= self.settings.processing_backlog:
            if self.settings.on_backlog_full is BacklogPolicy.SHED_OLDEST and self._shed_oldest():
                continue
            self._pump(PUMP_WAIT_S)

    def _shed_oldest(self) -> bool:
        heads = [b for ledger in self._ledgers if (b := ledger.oldest_waiting()) is not None]
        if not heads:
            return False
        victim = min(heads, key=lambda b: b.id)
        for ledger in self._ledgers:
            if ledger.oldest_waiting() is victim:
                ledger.waiting.popleft()
        if not victim.internal:
            self._metrics.skipped_backlog += len(victim)
            self._report(BatchResult(victim.id, shed_ids=tuple(victim.ids)))
        return True

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _report(self, result: BatchResult) -> None:
        self._results.append(result)

    def _take(self) -> list[BatchResult]:
        results, self._results = self._results, []
        return results

    # -- the processes -----------------------------------------------------

    def _spawn(self, part: int) -> PoolPipe:
        """Start the process of ``part``: init, then replay the tail muted."""
        ledger = self._ledgers[part]
        ch = PoolPipe(part, self._argv)
        self._selector.register(ch.read_fd, selectors.EVENT_READ, ch)
        init = pickle.dumps((self.settings.patterns, ledger.checkpoint), pickle.HIGHEST_PROTOCOL)
        ch.send(encode(Kind.INIT, Flag.NONE, 0, init))
        for batch in ledger.tail:
            ch.send(header(Kind.BATCH, _REPLAY, batch.id, len(batch.payload)), batch.payload)
        ledger.last_progress_s = self._clock()
        self._watch(ch)
        return ch

    def _dispatch(self, part: int) -> None:
        ledger, ch = self._ledgers[part], self._channels[part]
        now = self._clock()
        while (batch := ledger.next_to_send(self.window, now)) is not None:
            ch.send(header(Kind.BATCH, batch.flags, batch.id, len(batch.payload)), batch.payload)
        self._watch(ch)
        if ch.dead:
            self._restart(part, RestartCause.CRASH)

    def _watch(self, ch: PoolPipe) -> None:
        """Ask the selector for write readiness only while output is pending."""
        watched = ch.write_fd in self._selector.get_map()
        if ch.pending and not ch.dead and not watched:
            self._selector.register(ch.write_fd, selectors.EVENT_WRITE, ch)
        elif watched and (ch.dead or not ch.pending):
            self._selector.unregister(ch.write_fd)

    def _pump(self, timeout_s: float) -> None:
        """One round of I/O with every process, then the periodic checks."""
        for key, mask in self._selector.select(timeout_s):
            ch: PoolPipe = key.data
            if ch is not self._channels[ch.partition]:
                continue  # replaced earlier in this round
            if mask & selectors.EVENT_WRITE:
                ch.flush()
            if mask & selectors.EVENT_READ:
                for frame in ch.receive():
                    self._on_result(ch.partition, frame)
            if ch.dead:
                self._restart(ch.partition, RestartCause.CRASH)
            else:
                self._dispatch(ch.partition)
        self._housekeeping()

    def _on_result(self, part: int, frame: Frame) -> None:
        alert_rows, invalid, suppressed, checkpoint = marshal.loads(frame.payload)
        batch = self._ledgers[part].complete(frame.batch_id, checkpoint, self._clock())
        if batch is None or batch.internal:
            return
        ids = batch.ids
        alerts = tuple(_alert(ids, row) for row in alert_rows)
        m = self._metrics
        m.completed += len(ids)
        m.alerts += len(alerts)
        m.invalid += len(invalid)
        m.suppressed += suppressed
        bad = tuple((ids[index], reason) for index, reason in invalid)
        self._report(BatchResult(batch.id, tuple(ids), alerts, bad))

    def _housekeeping(self) -> None:
        now = self._clock()
        self._metrics.sample(now)
        for part, ledger in enumerate(self._ledgers):
            if ledger.stalled(now, self.settings.stall_timeout_s):
                self._restart(part, RestartCause.STALL)
        if now < self._next_memory_check_s:
            return
        self._next_memory_check_s = now + self.settings.memory_check_interval_s
        for part, ch in enumerate(self._channels):
            self._check_memory(part, self._rss_of(ch.pid))

    def _check_memory(self, part: int, rss: int) -> None:
        share = self.settings.memory_share_bytes
        over = self._over_memory[part] = self._over_memory[part] + 1 if rss > share else 0
        if 0 < over < MEMORY_CHECKS_OVER:
            self._restart(part, RestartCause.MEMORY)
        elif over == MEMORY_CHECKS_OVER:
            logger.bind(event="scanner_pool_memory", partition=part).error(
                f"Pool process {part} uses {rss / 2**20:.0f} MB right after being restarted, "
                f"over its {share / 2**20:.0f} MB share of scanner.max_memory_mb: its symbol "
                "state alone needs more, so restarting it does not help; it keeps running. "
                "Raise scanner.max_memory_mb"
            )

    def _restart(self, part: int, cause: RestartCause) -> None:
        """Replace the process of ``part``; requeue what it held (see ``Ledger``)."""
        old, ledger = self._channels[part], self._ledgers[part]
        for fd in (old.read_fd, old.write_fd):
            if fd in self._selector.get_map():
                self._selector.unregister(fd)
        old.kill()
        self._count_restart(cause)
        if cause is RestartCause.MEMORY:
            ledger.requeue_sent()
        else:
            self._give_up(ledger.after_crash())
            if ledger.crashes_in_a_row >= MAX_CRASHES_IN_A_ROW:
                raise ScannerPoolError(f"pool process {part} died {MAX_CRASHES_IN_A_ROW} times")
        logger.bind(event="scanner_pool_restart", partition=part, pid=old.pid).warning(
            f"Pool process {part} (PID: {old.pid}) {cause.value}: restarting, "
            f"replaying {len(ledger.tail)} batches, resending {len(ledger.waiting)}"
        )
        self._channels[part] = self._spawn(part)
        self._dispatch(part)

    def _count_restart(self, cause: RestartCause) -> None:
        if cause is RestartCause.MEMORY:
            self._metrics.memory_restarts += 1
        elif cause is RestartCause.STALL:
            self._metrics.stall_restarts += 1
        else:
            self._metrics.crash_restarts += 1

    def _give_up(self, batch: TickBatch | None) -> None:
        if batch is None or batch.internal:
            return
        self._metrics.failed += len(batch)
        logger.bind(event="scanner_batch_failed", batch=batch.id).error(
            f"Batch {batch.id} ({len(batch)} ticks) crashed its process repeatedly: given up"
        )
        self._report(BatchResult(batch.id, failed_ids=tuple(batch.ids)))


def _alert(ids: Sequence[TickId], row: Sequence[Any]) -> Alert:
    index, symbol, pattern, confidence, price, ts, direction = row
    tick_id = ids[index]
    return {
        "symbol": symbol,
        "pattern": pattern,
        "confidence": round(confidence, 4),
        "price": price,
        "tick_id": codec.text(tick_id),
        "time": ts,
        "direction": direction,
    }

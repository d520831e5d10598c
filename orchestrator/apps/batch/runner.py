"""The batch worker's handler: one shard through the engine, then its results.

For each job (a shard, or a whole batch that is not split):

1. read and check it: a job that can never run (bad formula, unknown
   timeframe, missing keys) is dead-lettered at once with the reason, and
   the batch marked failed; so is one whose formula fails at evaluation
   (the engine stops at the first symbol that says so);
2. a job that names more than ``batch.shard_size`` symbols and no shards is
   split: its shards go on the same queue, registered with the batch in one
   Lua call, and the job itself is done;
3. run the shard on the engine (every core of this host), publishing its
   progress at most every ``progress_interval``;
4. store its results (its *part*) in the batch's hash; the shard whose part
   completes the batch (decided in Redis, atomically) merges all parts into
   ``<results_dir>/<batch id>/`` and marks the batch done;
5. return, and the runtime acknowledges the entry: only now.

A shard that finished before (its worker died before acknowledging) is not
run again: its stored part is used. A SIGTERM stops the engine (no process
left) and gives the shard back uncounted (``BatchInterrupted``, the
runtime's ``Interrupted``: the worker exits 0). Reaching ``max_runtime`` does the same, except for a
worker's first shard: that shard cannot finish within ``max_runtime`` at
all, so the stop counts as a failed attempt (``ShardOverran``) and, after
``max_attempts``, the shard is dead-lettered saying so.
"""

from __future__ import annotations

import importlib
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from loguru import logger

from orchestrator.apps.batch.batch_record import BatchLedger, BatchState, ShardRecord, batch_fields
from orchestrator.apps.batch.batch_settings import BatchSettings
from orchestrator.apps.batch.engine import CandleRepository, FormulaError, ProcessingEngine
from orchestrator.apps.batch.progress import Pacer, ShardProgress
from orchestrator.apps.batch.request import BATCH_ID, BatchRejected, BatchRequest, check_request
from orchestrator.apps.batch.results import encode_part, merge_parts, result_line, write_results
from orchestrator.apps.batch.stopping import ShardGuard, StopCause
from orchestrator.pools import PoolAborted
from orchestrator.procs import signal_name
from orchestrator.worker import Interrupted, Job, Settings, Unavailable

__all__ = ["BatchInterrupted", "BatchRunner", "ShardOverran", "build_repository"]


class BatchInterrupted(Interrupted):
    """Stopped by a signal or the deadline: the shard runs again, uncounted."""


class ShardOverran(Exception):
    """A worker's whole ``max_runtime`` was not enough for the shard."""


def build_repository(settings: BatchSettings) -> CandleRepository:
    """``batch.repository`` (``module:Class``) built on ``batch.data_root``."""
    module_name, _, name = settings.repository.partition(":")
    factory = getattr(importlib.import_module(module_name), name)
    repository: CandleRepository = factory(Path(settings.data_root))
    return repository


class BatchRunner:
    """Runs batch jobs for one worker process; owns its engine."""

    def __init__(
        self, worker: Settings, settings: BatchSettings, root: Path, client: redis.Redis
    ) -> None:
        self.worker = worker
        self.settings = settings
        self.root = root
        self.repository = build_repository(settings)
        self.engine = ProcessingEngine(self.repository, settings.max_workers)
        self.pacer = Pacer(settings.progress_interval_s)  # this worker's writes to Redis
        self.ledger = BatchLedger(client, settings.keep_s, self.pacer)
        self.shards_run = 0  # shards this worker ran to the end
        self.host = worker.host or socket.gethostname()

    def close(self) -> None:
        self.engine.close()

    def handle_batch(self, jobs: Sequence[Job]) -> list[Exception | None]:
        """The runtime's batch handler: one result per job, in order."""
        return [self._attempt(job) for job in jobs]

    def _attempt(self, job: Job) -> Exception | None:
        try:
            self.handle(job)
        except (Unavailable, Interrupted):
            raise  # the runtime gives every delivery back, uncounted
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise Unavailable(f"Redis: {exc}") from exc
        except Exception as exc:
            self._fail_if_final(job, exc)
            return exc
        return None

    def handle(self, job: Job) -> None:
        request = BatchRequest.from_payload(job.data, job.id, self.settings, self.root)
        check_request(request, self.repository)
        if self._split(job, request):
            return
        state = self._prepare(request)
        if state == BatchState.DONE:
            logger.warning(  # a retry of a finished batch; or an id used twice
                f"{self._name(request)}: the batch is done already; acknowledged, not run"
            )
            return
        finished = self.ledger.finished_shard(request.batch_id, request.shard)
        record, part = finished if finished is not None else self._run(request)
        state = self.ledger.shard(request.batch_id, request.shard, record, part)
        if state == BatchState.MERGING:
            self._merge(request)
        elif state == BatchState.UNKNOWN:
            raise RuntimeError(f"batch {request.batch_id}: its record is gone (expired?)")

    def _split(self, job: Job, request: BatchRequest) -> bool:
        """A large job without shards: queue its shards instead of running it."""
        size = self.settings.shard_size
        if "shards" in job.data or size <= 0 or len(request.symbols) <= size:
            return False
        shards = request.split(size)
        fields = batch_fields(shards[0], len(request.symbols), self.worker.stream)
        new = self.ledger.register(fields, self.worker.stream, [s.payload() for s in shards])
        logger.info(
            f"{self.worker.worker_id}: batch {request.batch_id}: "
            + (f"split into {len(shards)} shards" if new else "split before; nothing to add")
        )
        return True

    def _prepare(self, request: BatchRequest) -> str:
        """The batch's state; a job enqueued directly registers its batch."""
        state = self.ledger.state(request.batch_id)
        if state != BatchState.UNKNOWN:
            return state
        if request.shards > 1:
            raise BatchRejected(
                f"batch {request.batch_id} is unknown (its record expired or was deleted): "
                "submit it again"
            )
        fields = batch_fields(request, len(request.symbols), self.worker.stream)
        self.ledger.register(fields, self.worker.stream)
        return BatchState.QUEUED

    def _run(self, request: BatchRequest) -> tuple[ShardRecord, bytes]:
        """The shard on the engine: its final record and its part."""
        batch_id, shard = request.batch_id, request.shard
        progress = ShardProgress(len(request.symbols), self.pacer, self.worker.worker_id)
        lines: dict[str, str] = {}
        matches = 0
        guard = ShardGuard(self.engine.abort, self.worker.deadline)
        try:
            with guard:
                for result in self.engine.iter_batch(request.processing_job()):
                    lines[result.symbol] = result_line(result)
                    matches += len(result.matches)
                    progress.add(result)
                    if progress.due():
                        self.ledger.shard(batch_id, shard, progress.update())
        except FormulaError as exc:  # parsed, but cannot be evaluated: no retry helps
            raise BatchRejected(f"formula: {exc}") from None
        except PoolAborted:
            done = progress.completed
            if progress.updates:  # its record says running: it is not
                self.ledger.shard(batch_id, shard, progress.stopped())
            raise self._stopped(request, guard, done) from None
        self.shards_run += 1
        logger.info(
            f"{self._name(request)}: {progress.completed} symbols, {progress.errors} errors, "
            f"{matches} matches in {time.monotonic() - progress.started:.1f}s"
        )
        return progress.update("done"), encode_part(lines[s] for s in request.symbols)

    def _stopped(self, request: BatchRequest, guard: ShardGuard, done: int) -> Exception:
        where = f"{_label(request)} stopped after {done}/{len(request.symbols)} symbols"
        if guard.cause is StopCause.DEADLINE and self.shards_run == 0:
            return ShardOverran(
                f"{where}: max_runtime reached; raise queues.{self.worker.queue}.max_runtime "
                "or lower batch.shard_size"
            )
        why = "max_runtime near" if guard.cause is StopCause.DEADLINE else "a stop signal"
        if guard.signum is not None and guard.cause is StopCause.SIGNAL:
            why = signal_name(guard.signum)
        return BatchInterrupted(f"{where} ({why}); it runs again, uncounted, on the next worker")

    def _merge(self, request: BatchRequest) -> None:
        batch_id = request.batch_id
        parts = self.ledger.parts(batch_id, request.shards)
        missing = [i for i, part in enumerate(parts) if part is None]
        if missing:
            if self.ledger.state(batch_id) == BatchState.DONE:
                return  # another merger finished first
            raise RuntimeError(f"batch {batch_id}: the parts of shards {missing} are missing")
        merged = merge_parts([p for p in parts if p is not None], request)
        directory = write_results(Path(self.settings.results_dir) / batch_id, merged)
        summary = {"results": str(directory), "results_host": self.host, **merged.counts}
        if self.ledger.finish(batch_id, summary):
            c = merged.counts
            logger.info(
                f"{self.worker.worker_id}: batch {batch_id} done: {c['symbols']} symbols, "
                f"{c['errors']} errors, {c['matched']} matched ({c['matches']} matches); "
                f"results in {directory}"
            )

    def _fail_if_final(self, job: Job, exc: Exception) -> None:
        """A job dead-lettered now (permanent, or its last attempt) fails its batch."""
        if not getattr(exc, "permanent", False) and job.attempts < self.worker.max_attempts:
            return
        raw = job.data.get("batch_id")
        batch_id = raw if isinstance(raw, str) and BATCH_ID.match(raw) else job.id
        error = f"{type(exc).__name__}: {exc}"
        logger.warning(f"{self.worker.worker_id}: batch {batch_id} failed: {error}")
        try:
            self.ledger.fail(batch_id, error, {"stream": self.worker.stream})
        except redis.RedisError as redis_exc:  # the dead letter still says why
            logger.warning(f"{self.worker.worker_id}: batch {batch_id} not marked: {redis_exc}")

    def _name(self, request: BatchRequest) -> str:
        return f"{self.worker.worker_id}: {_label(request)}"


def _label(request: BatchRequest) -> str:
    return f"batch {request.batch_id} shard {request.shard + 1}/{request.shards}"

"""The scanner worker: a tick stream into alerts, with a process pool inside.

``workers/scanner_worker.py`` calls ``run_scanner()``. The spawner runs it
like any stream queue's worker (``ORCH_*`` environment: stream, group,
consumer, deadline, idle timeout, config file); the ``scanner`` section of
the config sizes its pool. One thread does everything, in this order:

1. Start: make sure the group exists; set the in-hand marker to nothing
   (``orch:inhand:<consumer>`` = ""), so that if this process dies, no tick
   is charged an attempt (detection runs in the pool, which gives up a
   poison batch itself; what kills *this* process is not a tick); restore
   the cool-off clocks from the alert stream and replay the acknowledged
   history muted (``recovery``); start the pool and the heartbeat.
2. Loop: read (own pending entries first, then new ones in adaptive
   batches; ``reader``) and ``submit`` to the pool, then ``collect`` what it
   finished and commit it (alerts, dead letters and acknowledgements in one
   MULTI/EXEC; ``outbox``). Reading never waits for a result: while batches
   are in flight, reads do not block and results are collected between
   them. With ``on_backlog_full: block`` nothing is read while the pool's
   backlog has no room for one more read (Redis holds the excess as the
   group's lag); with ``shed_oldest`` reading goes on and the pool sheds its
   oldest waiting batch, acknowledged as shed and counted. Metrics go to
   ``orch:scanner:<consumer>`` every second and to the log every
   ``log_interval`` (``report``).
3. Stop, on SIGTERM/SIGINT, before ``ORCH_DEADLINE``, after
   ``idle_timeout`` with nothing read and nothing in flight, or when the
   spawner dies (SIGTERM via ``PR_SET_PDEATHSIG``): stop reading, drain the
   batches in flight (up to the spawner's ``stop_grace``), commit, exit 0.
   What is not drained stays pending, and the spawner hands it on.

What a crash can repeat is stated in ``outbox`` and ``recovery``: no tick
is acknowledged without its alerts, no alert is written twice for a tick,
and the cool-off clocks survive restarts.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Mapping
from typing import NoReturn

import redis
from loguru import logger

from orchestrator import codec, keys
from orchestrator.apps.scanner.frames import TickId
from orchestrator.apps.scanner.metrics_report import PUBLISH_EVERY_S, Reporter
from orchestrator.apps.scanner.outbox import Committed, Outbox
from orchestrator.apps.scanner.reader import GroupReader
from orchestrator.apps.scanner.scanner_pool import BatchResult, ScannerPool, ScannerPoolError
from orchestrator.apps.scanner.scanner_settings import (
    BacklogPolicy,
    ScannerSettings,
    parse_scanner_settings,
)
from orchestrator.apps.scanner.warmup import (
    acknowledged_history,
    cooloff_checkpoints,
    cooloff_clocks,
)
from orchestrator.config import SpawnerConfig
from orchestrator.connections import connect
from orchestrator.validate import Problems, Section
from orchestrator.worker import (
    EX_FAILURE,
    EX_OK,
    EX_TEMPFAIL,
    Heartbeat,
    Settings,
    load_worker_config,
    prepare_process,
)

__all__ = ["ScannerWorker", "StartError", "load_scanner_settings", "run_scanner"]

DEADLINE_MARGIN_S = 2.0  # stop reading this long before ORCH_DEADLINE
RESULT_WAIT_S = 0.02  # nothing to read: wait this long for a result


class StartError(RuntimeError):
    """The scanner cannot run as configured."""


class ScannerWorker:
    """The read-submit-collect-commit loop of one scanner process."""

    def __init__(
        self,
        worker: Settings,
        scanner: ScannerSettings,
        *,
        stop_grace_s: float = 10.0,
        client: redis.Redis | None = None,
        pool: ScannerPool | None = None,
    ) -> None:
        self.s, self.cfg = worker, scanner
        self.client = client or scanner_client(worker.redis_url)
        self.pool = pool or ScannerPool(scanner)
        self.reader = GroupReader(
            self.client,
            worker.stream,
            worker.group,
            worker.consumer,
            first_size=worker.batch_size,
            low=scanner.batch_size_min,
            high=scanner.batch_size_max,
        )
        self.outbox = Outbox(
            self.client,
            worker.stream,
            worker.group,
            scanner.alert_stream,
            scanner.alert_stream_maxlen,
            worker,
        )
        self.reporter = Reporter(self.client, worker, scanner.log_interval_s)
        self.drain_timeout_s = max(0.5, stop_grace_s - 1.0)
        self.stopping = False
        self.held = 0  # entries read and not yet acknowledged
        self.gone: list[TickId] = []  # pending entries deleted from the stream: ack as they are
        self.totals = Committed()
        self.started = self.last_work = time.monotonic()
        self.heartbeat: Heartbeat | None = None

    def request_stop(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> int:
        """Serve until SIGTERM, deadline or idle; the exit code."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        try:
            self.heartbeat = Heartbeat(self.s, int(self.client.client_id()))
            self.heartbeat.start()
            self._prepare()
            self._serve()
            self._finish()
            return EX_OK
        except redis.ConnectionError as exc:
            logger.error(f"{self.s.worker_id}: Redis unavailable: {exc}; exiting")
            return EX_TEMPFAIL
        except (ScannerPoolError, StartError) as exc:
            logger.error(f"{self.s.worker_id}: {exc}; exiting")
            return EX_FAILURE
        finally:
            self.pool.close()
            if self.heartbeat is not None:
                self.heartbeat.stop()

    # -- start ---------------------------------------------------------------

    def _prepare(self) -> None:
        s = self.s
        self._check_key_types()
        with contextlib.suppress(redis.ResponseError):  # BUSYGROUP: it exists
            self.client.xgroup_create(s.stream, s.group, id="0", mkstream=True)
        self.client.set(keys.in_hand(s.consumer), "")
        clocks = cooloff_clocks(self.client, self.cfg.alert_stream, self.cfg.patterns.cooloff_s)
        self.pool.seed(cooloff_checkpoints(clocks, self.cfg.patterns, self.pool.workers))
        self.pool.start()
        replayed = 0
        for page in acknowledged_history(self.client, s.stream, s.group, self.cfg.warmup_history):
            self.pool.warm_up(page)
            replayed += len(page)
        logger.bind(event="scanner_start", queue=s.queue, worker_id=s.worker_id).info(
            f"{s.worker_id}: scanning {s.stream} (group {s.group}) with "
            f"{self.pool.workers} pool process(es), backlog {self.cfg.processing_backlog} batches; "
            f"restored {sum(map(len, clocks.values()))} cool-off clocks, "
            f"replaying {replayed} acknowledged ticks"
        )

    def _check_key_types(self) -> None:
        """Refuse to start on a key that is not a stream.

        Redis does not roll a MULTI/EXEC back when one command fails: an XADD
        to a key of another type would fail while the XACK after it succeeds.
        """
        for key in (self.s.stream, self.outbox.alert_stream, self.outbox.dead_stream):
            kind = self.client.type(key)
            kind = codec.text(kind)
            if kind not in ("none", "stream"):
                raise StartError(f"{key} is a {kind}, not a stream")

    # -- the loop ------------------------------------------------------------

    def _serve(self) -> None:
        while not self.stopping:
            if time.time() + DEADLINE_MARGIN_S >= self.s.deadline:
                logger.info(f"{self.s.worker_id}: max_runtime near, taking no more ticks")
                return
            if self.reporter.due():
                self._publish()
            got = self._read_and_submit()
            busy = self.pool.in_flight > 0
            self._commit(self.pool.collect(RESULT_WAIT_S if busy and not got else 0.0))
            now = time.monotonic()
            if got:
                self.last_work = now
            elif not busy and not self.held and now - self.last_work >= self.s.idle_timeout_s:
                logger.info(f"{self.s.worker_id}: idle for {self.s.idle_timeout_s:g}s")
                return

    def _read_and_submit(self) -> int:
        """Read one batch if the backlog has room for it; how many entries came."""
        pool = self.pool
        if self.cfg.on_backlog_full is BacklogPolicy.BLOCK and (
            pool.in_flight + pool.workers > self.cfg.processing_backlog
        ):
            return 0  # backpressure: the rest waits in Redis
        got = self.reader.read(self.held, None if self.held else self._block_ms())
        self.held += len(got)
        self.gone += got.gone
        if got.ids:
            pool.submit_rows(got.ids, got.rows)
        if got.entries:
            pool.submit(got.entries)
        return len(got)

    def _block_ms(self) -> int:
        """Nothing in hand: block until the next publication, idle timeout or deadline."""
        now = time.monotonic()
        idle_left = self.s.idle_timeout_s - (now - self.last_work)
        deadline_left = self.s.deadline - DEADLINE_MARGIN_S - time.time()
        wait_s = min(idle_left, deadline_left, PUBLISH_EVERY_S)
        return max(1, int(wait_s * 1000))

    def _commit(self, results: list[BatchResult]) -> None:
        if not results and not self.gone:
            return
        done = self.outbox.commit(results, self.gone)
        self.gone = []
        self.held -= done.acked
        t = self.totals
        self.totals = Committed(
            t.acked + done.acked,
            t.alerts + done.alerts,
            t.dead_lettered + done.dead_lettered,
            t.shed + done.shed,
        )
        if done.shed and not t.shed:
            logger.warning(
                f"{self.s.worker_id}: backlog full, shedding the oldest ticks "
                "(on_backlog_full: shed_oldest); they are acknowledged unprocessed and "
                "counted as skipped_backlog"
            )

    def _publish(self) -> None:
        metrics = {
            **self.pool.metrics(),
            "acked": self.totals.acked,
            "dead_lettered": self.totals.dead_lettered,
            "read_size": self.reader.size,
        }
        published = self.reporter.publish(metrics, self.held)
        if published.handed:
            self.reader.own_due = True

    # -- stop ----------------------------------------------------------------

    def _finish(self) -> None:
        """Drain what is in flight, commit it, and leave nothing behind but pending work."""
        s = self.s
        self._commit(self.pool.drain(self.drain_timeout_s))
        self._commit([])  # entries deleted from the stream, if any are left
        if self.held == 0:
            self.client.delete(keys.in_hand(s.consumer))
        self._publish()
        self.reporter.withdraw()
        t = self.totals
        logger.bind(event="scanner_exit", queue=s.queue, worker_id=s.worker_id).info(
            f"{s.worker_id}: exiting after {time.monotonic() - self.started:.1f}s: "
            f"{t.acked} ticks acknowledged, {t.alerts} alerts, {t.shed} shed, "
            f"{t.dead_lettered} dead-lettered, {self.held} left pending"
        )


def scanner_client(url: str) -> redis.Redis:
    """The scanner's client: one reading connection (the spawner wakes a
    blocked read with ``CLIENT UNBLOCK <id>``, so the id in the heartbeat
    must be the reading connection's; pipelines take a second one), and
    commands packed in C: an XACK of thousands of tick ids per commit."""
    return connect(
        url,
        timeout_s=30.0,
        connect_timeout_s=5.0,
        single_connection=True,
        fail_fast=False,
        c_packer=True,
    )


def load_scanner_settings(config_path: str | None) -> tuple[ScannerSettings, float]:
    """The ``scanner`` section and the spawner's ``stop_grace``; defaults without a file."""
    config = load_worker_config(config_path)
    if config is None:
        settings = parse_scanner_settings(Section({}, "scanner", Problems()))
        return settings, SpawnerConfig().stop_grace_s
    return config.sections["scanner"], config.spawner.stop_grace_s


def run_scanner(env: Mapping[str, str] | None = None) -> NoReturn:
    """The scanner worker program: settings from the spawner's environment; exits when done."""
    worker = Settings.from_env(env)
    prepare_process(worker)
    scanner, stop_grace_s = load_scanner_settings(worker.config_path)
    sys.exit(ScannerWorker(worker, scanner, stop_grace_s=stop_grace_s).run())

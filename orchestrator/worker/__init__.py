"""The worker runtime: what a worker program needs besides its handler.

A worker in three lines::

    from orchestrator.worker import run_worker
    def handle(job: dict) -> dict | None: ...
    run_worker(handle)

The package: ``workerenv`` (the ORCH_* environment, written by the
spawner's launcher and read here), ``jobs`` (jobs, the exceptions that say
what became of one, exit codes), ``runtime`` (the read-handle-acknowledge
loop), ``streamreads`` (what it reads, and in which order), ``readahead``
(entries read and not started, given back when they wait), ``ratelimit``
(a token per job from the queue's shared bucket), ``acks``
(acknowledgements, hand-offs and dead letters in one MULTI/EXEC),
``client`` (the worker's connection, made ahead of need), ``heartbeat`` and
``reaction``. This module holds what a worker program
calls: ``run_worker``, ``run_batch_worker``, and ``load_worker_config`` for
programs that read their own config section.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, NoReturn

from loguru import logger

from orchestrator import procs
from orchestrator.logs import LogConfig, LogFormat, capture_output, log_uncaught, setup_logging
from orchestrator.worker.acks import mark_done
from orchestrator.worker.heartbeat import Heartbeat
from orchestrator.worker.jobs import (
    EX_FAILURE,
    EX_OK,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    BatchHandler,
    Handler,
    Interrupted,
    Job,
    PoisonJob,
    Unavailable,
    per_job,
)
from orchestrator.worker.runtime import STOP_SIGNALS, WorkerRuntime
from orchestrator.worker.workerenv import Settings, log_config

if TYPE_CHECKING:
    from orchestrator.config import Config

__all__ = [
    "EX_FAILURE",
    "EX_OK",
    "EX_SOFTWARE",
    "EX_TEMPFAIL",
    "BatchHandler",
    "Handler",
    "Heartbeat",
    "Interrupted",
    "Job",
    "PoisonJob",
    "Settings",
    "Unavailable",
    "WorkerRuntime",
    "configure_logging",
    "identify",
    "load_worker_config",
    "log_crash",
    "mark_done",
    "prepare_process",
    "run_batch_worker",
    "run_worker",
]


def prepare_process(settings: Settings) -> None:
    """What every worker process does first: die with its spawner (and
    refuse to start if it is gone already), take its title, and log in the
    spawner's format and level."""
    procs.die_with_parent(signal.SIGTERM)
    if settings.spawner_pid is not None and os.getppid() != settings.spawner_pid:
        raise SystemExit(f"{settings.worker_id}: spawner {settings.spawner_pid} is gone")
    configure_logging(settings.log)
    identify(settings.queue, settings.label, settings.worker_id)


def identify(queue: str, label: str, worker_id: str) -> None:
    """The worker's process title (``orch-worker <label> <worker id>``),
    and its ``queue`` and ``worker_id`` on each of its JSON log lines."""
    procs.set_title(procs.worker_title(label, worker_id))
    logger.configure(extra={"queue": queue, "worker_id": worker_id})


_logging_configured: LogConfig | None = None


def configure_logging(config: LogConfig | None = None) -> None:
    """Log as the spawner does (``config``, else ``ORCH_LOG_*``), set up once
    per process and config (the fork server does it for the workers it
    forks: loguru takes milliseconds to add a handler)."""
    global _logging_configured
    wanted = config or log_config(os.environ)
    if wanted != _logging_configured:
        setup_logging(wanted)
        if wanted.format is LogFormat.JSON:
            capture_output()  # a handler's print() is a JSON line too
        _logging_configured = wanted


def log_crash(exc: BaseException) -> None:
    """``exc`` ends a process of a worker (a pool's, say) that logged
    nothing before: it is logged, with its traceback, as the spawner's
    config says (``ORCH_LOG_*``)."""
    configure_logging()
    log_uncaught(type(exc), exc, exc.__traceback__)


def load_worker_config(path: str | None, *, required: bool = False) -> Config | None:
    """The config file the spawner named (``Settings.config_path``, from
    ``ORCH_CONFIG``), for a worker program that reads its own section; exits
    with the reason if it cannot be used. None when no file is named and
    ``required`` is false: a worker started by hand uses its defaults."""
    from orchestrator.config import ConfigError, load_config

    if not path:
        if required:
            raise SystemExit("ORCH_CONFIG is not set: run this worker through 'orchestrator run'")
        return None
    try:
        return load_config(path)
    except ConfigError as exc:
        raise SystemExit(f"config {path}: " + "; ".join(exc.problems)) from None


def run_batch_worker(handle_batch: BatchHandler, settings: Settings | None = None) -> NoReturn:
    """Serve ``handle_batch(jobs) -> results`` (same order); exit when done.

    The batch is one attempt for each of its jobs: acknowledged together
    after the handler returns, retried together if it raises.
    """
    s = settings or Settings.from_env()
    prepare_process(s)
    _exit(WorkerRuntime(s, handle_batch).run())


def run_worker(handle: Handler, settings: Settings | None = None) -> NoReturn:
    """Serve ``handle(job) -> result | None`` one job at a time; exit when done.

    A failure fails only its own job; on SIGTERM the job in hand finishes
    and the rest of what was read stays pending for the next worker.
    """
    s = settings or Settings.from_env()
    prepare_process(s)
    _exit(WorkerRuntime(s, per_job(handle), handle_one=handle).run())


def _exit(code: int) -> NoReturn:
    """Exit with ``code``; a stop signal arriving now must not replace it."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)

"""The worker runtime: what a worker program needs besides its handler.

A worker in three lines::

    from orchestrator.worker import run_worker
    def handle(job: dict) -> dict | None: ...
    run_worker(handle)

The package: ``workerenv`` (the ORCH_* environment, written by the
spawner's launcher and read here), ``jobs`` (jobs, the exceptions that say
what became of one, exit codes), ``runtime`` (the read-handle-acknowledge
loop), ``acks`` (acknowledgements, hand-offs and dead letters in one
MULTI/EXEC) and ``heartbeat``. This module holds what a worker program
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
from orchestrator.worker.workerenv import Settings

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
    "load_worker_config",
    "mark_done",
    "prepare_process",
    "run_batch_worker",
    "run_worker",
]

LOG_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}"


def prepare_process(settings: Settings) -> None:
    """What every worker process does first: die with its spawner (and
    refuse to start if it is gone already), and log in the spawner's format."""
    procs.die_with_parent(signal.SIGTERM)
    if settings.spawner_pid is not None and os.getppid() != settings.spawner_pid:
        raise SystemExit(f"{settings.worker_id}: spawner {settings.spawner_pid} is gone")
    configure_logging()


_logging_configured = False


def configure_logging() -> None:
    """Plain lines to stderr, once per process (the fork server does it for
    the workers it forks: loguru takes milliseconds to add a handler)."""
    global _logging_configured
    if not _logging_configured:
        logger.remove()
        logger.add(sys.stderr, format=LOG_FORMAT)
        _logging_configured = True


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

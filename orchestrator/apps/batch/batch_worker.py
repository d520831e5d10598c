"""The batch worker program (``workers/batch_engine_worker.py``, queue ``batch_jobs``).

Reads the spawner's environment (``ORCH_*``) and the ``batch`` section of
``ORCH_CONFIG``, then serves the queue with the worker runtime's batch
handler (``run_batch_worker``), one shard at a time (keep the queue's
``batch_size`` at 1: entries a worker holds are entries other workers
cannot share). The engine's processes are started at the first shard,
kept for the next ones, and ended when the worker exits.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from orchestrator.apps.batch.batch_settings import BatchSettings, parse_batch_settings
from orchestrator.apps.batch.runner import BatchRunner
from orchestrator.connections import connect
from orchestrator.validate import Problems, Section
from orchestrator.worker import Settings, load_worker_config, run_batch_worker

__all__ = ["load_batch_settings", "run_batch_engine_worker"]


def load_batch_settings(config_path: str | None) -> tuple[BatchSettings, Path]:
    """The ``batch`` section with absolute paths, and the root they are
    relative to (without a config file: the defaults, in the working directory)."""
    config = load_worker_config(config_path)
    if config is None:
        settings = parse_batch_settings(Section({}, "batch", Problems()))
        return settings.resolve(Path.cwd()), Path.cwd()
    settings = config.sections["batch"]
    assert isinstance(settings, BatchSettings)
    return settings.resolve(config.root), config.root


def run_batch_engine_worker(env: Mapping[str, str] | None = None) -> NoReturn:
    worker = Settings.from_env(env)
    settings, root = load_batch_settings(worker.config_path)
    client = connect(worker.redis_url, timeout_s=30.0, connect_timeout_s=5.0, fail_fast=False)
    runner = BatchRunner(worker, settings, root, client)
    try:
        run_batch_worker(runner.handle_batch, worker)
    finally:
        runner.close()
        client.close()

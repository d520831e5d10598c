"""Test worker: logs one INFO and one WARNING line per job (``id``), prints one, then succeeds."""

from typing import Any

from loguru import logger

from orchestrator.worker import run_worker


def handle(job: dict[str, Any]) -> None:
    logger.info(f"info-marker {job.get('id')}")
    logger.warning(f"warning-marker {job.get('id')}")
    print(f"print-marker {job.get('id')}")


run_worker(handle)

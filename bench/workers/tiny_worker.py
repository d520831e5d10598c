"""Throughput bench: the tiny job on the orchestrator's runtime."""

from bench.workers.tiny import handle
from orchestrator.worker import run_worker

run_worker(handle)

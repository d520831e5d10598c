"""Batch engine worker (queue ``batch_jobs``): many symbols, one formula, every core.

Each job is a batch (or one shard of it): symbols or a universe file,
timeframe, date range, formula and parameters. The worker runs it on the
engine's process pool, publishes progress in ``orch:batch:<id>``, and
writes the results under ``batch.results_dir``. See
``orchestrator/apps/batch/runner.py`` and the README's "Batch engine".
"""

from __future__ import annotations

from orchestrator.apps.batch.batch_worker import run_batch_engine_worker

if __name__ == "__main__":
    run_batch_engine_worker()

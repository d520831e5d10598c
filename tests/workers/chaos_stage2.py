"""Chaos test, stage 2: records job ids in Postgres, a batch per transaction.

The table's primary key makes the effect exactly-once; ``deliveries``
counts how often a job reached this stage (at least once).
"""

import os
from collections.abc import Sequence

import psycopg

from orchestrator.worker import Job, Unavailable, run_batch_worker

URL, TABLE = os.environ["CHAOS_PG_URL"], os.environ["CHAOS_TABLE"]
try:
    conn = psycopg.connect(URL, autocommit=False)
except psycopg.OperationalError as exc:
    raise SystemExit(f"database unavailable: {exc}") from exc


def handle(jobs: Sequence[Job]) -> list[None]:
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                f"insert into {TABLE} (job_id, deliveries) values (%s, 1) "
                "on conflict (job_id) do update set deliveries = "
                f"{TABLE}.deliveries + 1",
                [(job.data["id"],) for job in jobs],
            )
    except psycopg.OperationalError as exc:
        raise Unavailable(str(exc)) from exc
    return [None] * len(jobs)


run_batch_worker(handle)

"""Upload worker (queue ``supabase_upload``): write analysed announcements in batches.

Each batch is one transaction on ``database.url`` (PostgreSQL/Supabase or
SQLite), upserted by announcement id, so a redelivered job updates its row
and never duplicates it; the tables are created if missing. A record that
fails validation fails only its own job. Each written job's ``{"id": ...}``
goes on to ``investor_processing`` through ``then``, acknowledged together
with the batch. A database that is down raises ``Unavailable``: nothing is
acknowledged, the worker exits 75 and the spawner backs off.
"""

from __future__ import annotations

import os

from orchestrator.apps.announcements.handlers import UploadHandler
from orchestrator.worker import run_batch_worker


def main() -> None:
    handler = UploadHandler.from_env(os.environ)
    try:
        run_batch_worker(handler)
    finally:
        handler.close()


if __name__ == "__main__":
    main()

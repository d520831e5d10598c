"""Investor worker (queue ``investor_processing``, one at a time as in seed 004).

A job names a stored announcement (``{"id": ...}``, as the upload worker
forwards it); the worker matches the stored row against the ``watchlists`` of
the config and writes one notification per (watchlist, announcement), in one
transaction per batch. Writing a pair again is harmless (a unique key), so a
redelivered job never duplicates a notification.
"""

from __future__ import annotations

import os

from orchestrator.apps.announcements.handlers import InvestorHandler
from orchestrator.worker import run_batch_worker


def main() -> None:
    handler = InvestorHandler.from_env(os.environ)
    try:
        run_batch_worker(handler)
    finally:
        handler.close()


if __name__ == "__main__":
    main()

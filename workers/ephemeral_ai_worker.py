"""AI worker (queue ``ai_processing``): analyse one announcement per job.

A job is an announcement (``id``, ``symbol``, ``exchange``, ``title``, and
``text`` or ``pdf_path``); the analyser named by ``analysis.analyser`` in the
config turns it into a category, key figures, a sentiment and a summary, and
the runtime forwards that record to ``supabase_upload`` through ``then``. An
invalid job or an unreadable PDF is dead-lettered at once with its reason.
Started by ``orchestrator run``; see ``orchestrator.apps.announcements.handlers``.
"""

from __future__ import annotations

import os

from orchestrator.apps.announcements.handlers import AiHandler
from orchestrator.worker import run_worker


def main() -> None:
    handler = AiHandler.from_env(os.environ)
    try:
        run_worker(handler)
    finally:
        handler.close()


if __name__ == "__main__":
    main()

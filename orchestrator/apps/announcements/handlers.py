"""The three worker programs' handlers, bound to their config.

``workers/ephemeral_*.py`` build one of these with ``from_env(os.environ)``
(which loads the file ``ORCH_CONFIG`` names, as the spawner sets it) and
serve it on the worker runtime:

- ``AiHandler`` (``run_worker``): a job in, the analysed record out; the
  runtime forwards it through ``then`` (``supabase_upload``).
- ``UploadHandler`` (``run_batch_worker``): the valid records of a batch
  upserted in one transaction; per job ``{"id": ...}`` (forwarded through
  ``then``, ``investor_processing``) or the error that fails that job alone.
- ``InvestorHandler`` (``run_batch_worker``): the notifications of the
  stored announcements the jobs name, written in one transaction.

The database is opened at the first batch, not at start, so a database that
is down is met inside the handler: ``DatabaseUnavailable`` becomes the
runtime's ``Unavailable`` (nothing acknowledged, the deliveries not counted,
exit 75, the spawner backs off), and the next worker tries again.

``ORCH_TEST_UPLOAD_DELAY_S`` is for tests and benchmarks only: seconds the
upload handler waits after its transaction committed and before it returns,
which holds the batch "written but not acknowledged" long enough for a test
to SIGKILL the worker exactly there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loguru import logger

from orchestrator.apps.announcements.analysers import Analyser, make_analyser
from orchestrator.apps.announcements.errors import DatabaseUnavailable
from orchestrator.apps.announcements.pipeline import analyse_job, notify_batch, upload_records
from orchestrator.apps.announcements.pipeline_settings import (
    AnalysisSettings,
    DatabaseSettings,
    WatchlistsSettings,
    database_with_env,
)
from orchestrator.apps.announcements.store import Store, open_store
from orchestrator.config import Config, ConfigError
from orchestrator.worker import Job, Unavailable, load_worker_config
from orchestrator.worker.workerenv import config_path

__all__ = ["AiHandler", "InvestorHandler", "UploadHandler", "worker_config"]

UPLOAD_DELAY_ENV = "ORCH_TEST_UPLOAD_DELAY_S"

BatchResults = list[dict[str, Any] | Exception | None]


def worker_config(env: Mapping[str, str]) -> Config:
    """The config file the spawner named in ``ORCH_CONFIG`` (required)."""
    config = load_worker_config(config_path(env), required=True)
    assert config is not None
    return config


def database_settings(config: Config, env: Mapping[str, str]) -> DatabaseSettings:
    """The ``database`` section with ``ORCH_DATABASE_URL``/``_SCHEMA`` from ``env`` applied."""
    try:
        return database_with_env(config.sections["database"], env)
    except ConfigError as exc:
        raise SystemExit("; ".join(exc.problems)) from exc


class LazyStore:
    """A store opened on first use; dropped when the database fails, reopened next time."""

    def __init__(self, settings: DatabaseSettings, root: Path) -> None:
        self.settings = settings
        self.root = root
        self.store: Store | None = None

    @contextmanager
    def use(self) -> Iterator[Store]:
        try:
            if self.store is None:
                self.store = open_store(self.settings, self.root)
            yield self.store
        except DatabaseUnavailable as exc:
            self.close()
            raise Unavailable(exc.reason) from exc

    def close(self) -> None:
        if self.store is not None:
            store, self.store = self.store, None
            store.close()


class AiHandler:
    """``ai_processing``: validate, extract the text, analyse; the record to forward."""

    def __init__(self, settings: AnalysisSettings, analyser: Analyser, root: Path) -> None:
        self.settings = settings
        self.analyser = analyser
        self.root = root

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AiHandler:
        config = worker_config(env)
        settings: AnalysisSettings = config.sections["analysis"]
        return cls(settings, make_analyser(settings, env), config.root)

    def __call__(self, job: dict[str, Any]) -> dict[str, Any]:
        return analyse_job(job, self.analyser, self.settings, self.root)

    def close(self) -> None:
        self.analyser.close()


class UploadHandler:
    """``supabase_upload``: one transaction per batch, upsert by id; ``{"id"}`` per job."""

    def __init__(self, db: LazyStore, delay_s: float = 0.0) -> None:
        self.db = db
        self.delay_s = delay_s

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> UploadHandler:
        config = worker_config(env)
        delay_s = float(env.get(UPLOAD_DELAY_ENV) or 0.0)
        return cls(LazyStore(database_settings(config, env), config.root), delay_s)

    def __call__(self, jobs: Sequence[Job]) -> BatchResults:
        with self.db.use() as store:
            outcomes = upload_records(store, [job.data for job in jobs])
        if self.delay_s > 0:
            time.sleep(self.delay_s)  # test knob: written, not yet acknowledged
        return [o if isinstance(o, Exception) else {"id": o} for o in outcomes]

    def close(self) -> None:
        self.db.close()


class InvestorHandler:
    """``investor_processing``: one notification per (watchlist, announcement), idempotent."""

    def __init__(self, db: LazyStore, watchlists: WatchlistsSettings) -> None:
        self.db = db
        self.watchlists = watchlists

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> InvestorHandler:
        config = worker_config(env)
        db = LazyStore(database_settings(config, env), config.root)
        return cls(db, config.sections["watchlists"])

    def __call__(self, jobs: Sequence[Job]) -> BatchResults:
        with self.db.use() as store:
            outcomes = notify_batch([job.data for job in jobs], store, self.watchlists)
        matched = [n for o in outcomes if not isinstance(o, Exception) for n in o.matched]
        written = next((o.written for o in outcomes if not isinstance(o, Exception)), 0)
        if matched:
            names = ", ".join(sorted({f"{n.watchlist}:{n.symbol}" for n in matched}))
            logger.info(f"🔔 {len(matched)} watchlist match(es), {written} new: {names}")
        return [o if isinstance(o, Exception) else None for o in outcomes]

    def close(self) -> None:
        self.db.close()

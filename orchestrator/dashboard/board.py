"""What the dashboard shows, read from Redis: every host sharing it.

``Board`` turns what the spawners publish (``orch:status:<host>``, their
history, the dead-letter streams, the apps' figures through
``plugins.StatusFigures``) into the JSON the page draws. Readings are
cached for ``STATE_MAX_AGE_S`` (the history for ``HISTORY_MAX_AGE_S``), so
any number of open pages costs Redis the same. When Redis does not answer,
the last reading is served, saying since when it is stale and why; the
Redis URL is only ever shown without its credentials, and they are scrubbed
from error texts too.

This module needs no web framework (``server`` adds one), so it is tested,
and usable, without the ``[dashboard]`` extra.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis

from orchestrator import codec, deadletters, history, keys, plugins, status
from orchestrator.config import Backend, Config, QueueConfig
from orchestrator.connections import REDIS_ERRORS, connect, redact_url, url_secrets
from orchestrator.status import HostStatus

STATE_MAX_AGE_S = 0.5  # the page polls every second: at most 1.5 s behind
HISTORY_MAX_AGE_S = 2.0
WATCH_EVERY_S = 10.0  # orch:dashboard refreshed this often (TTL history.DASHBOARD_TTL_S)
DEAD_LETTERS_SHOWN = 10  # the newest, per queue
PREVIEW_CHARS = 200
DOWN: tuple[type[BaseException], ...] = (
    *REDIS_ERRORS,
    redis.RedisError,
)  # Redis does not answer, or refuses
CHARTED = ("backlog", "spawns", "exits", "recovered")  # history series drawn
MAXED = {"backlog"}  # a queue-wide figure: every host sees it; the others add up


class Board:
    """The dashboard's readings of one Redis; thread-safe."""

    def __init__(
        self, config: Config, actions: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.actions = actions
        self.clock = clock
        self.client = connect(
            config.redis_url, timeout_s=2.0, connect_timeout_s=1.0, name="orch-dashboard"
        )
        self.url = redact_url(config.redis_url)
        self.secrets = url_secrets(config.redis_url)
        self.lock = threading.Lock()
        self.last: dict[str, Any] | None = None  # the last good reading
        self.read_at = 0.0
        self.ok_at: float | None = None
        self.error: str | None = None
        self.down_since = 0.0
        self.history: dict[str, Any] = {"t": [], "series": {}, "bucket_s": history.BUCKET_S}
        self.history_at = 0.0

    # -- what the page polls ----------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The current figures (at most ``STATE_MAX_AGE_S`` old while Redis answers)."""
        with self.lock:
            now = self.clock()
            if now - self.read_at >= STATE_MAX_AGE_S:
                self.read_at = now
                self._guarded(lambda: self._read(now))
            return self._view(now)

    def charts(self) -> dict[str, Any]:
        """The last hour's series (``history``), per queue, over all hosts."""
        with self.lock:
            now = self.clock()
            if now - self.history_at >= HISTORY_MAX_AGE_S:
                self.history_at = now
                self._guarded(lambda: self._read_history(now))
            return self.history

    def keep_watching(self, stop: threading.Event) -> None:
        """Until ``stop``: say a dashboard runs (spawners with ``history:
        auto`` record their history meanwhile)."""
        while not stop.is_set():
            try:
                pipe = self.client.pipeline(transaction=False)
                history.mark_watched(pipe)
                pipe.execute()
            except redis.RedisError:
                pass  # Redis down: the page says so; try again later
            stop.wait(WATCH_EVERY_S)

    # -- actions (only with --allow-actions and the token) -----------------------

    def retry(self, queue: str, ids: Sequence[str]) -> int:
        return len(deadletters.retry_dead(self.client, self._queue(queue), list(ids) or None))

    def purge(self, queue: str, ids: Sequence[str]) -> int:
        if not ids:
            raise ValueError("name the dead letters to purge")
        return deadletters.purge_dead(self.client, self._queue(queue), list(ids))

    def _queue(self, name: str) -> QueueConfig:
        q = self.config.queues.get(name)
        if q is None:
            raise KeyError(f"no queue {name!r} in the config")
        return q

    # -- reading -------------------------------------------------------------------

    def _guarded(self, read: Callable[[], None]) -> None:
        try:
            read()
        except DOWN as exc:
            if self.error is None:
                self.down_since = self.clock()
            self.error = self.scrub(f"{type(exc).__name__}: {exc}")
        else:
            self.error = None
            self.ok_at = self.clock()

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def _read(self, now: float) -> None:
        hosts = status.read_status(self.client)
        streams = [q for q in self.config.queues.values() if q.backend is Backend.STREAM]
        dead = deadletters.newest_dead(self.client, streams, DEAD_LETTERS_SHOWN)
        self.last = {
            "hosts": [host_row(h, now) for h in hosts],
            "queues": queue_rows(hosts, {name: n for name, (n, _) in dead.items()}),
            "workers": [worker_row(h.host, w, now) for h in hosts for w in h.workers],
            "dead_letters": dead_letter_rows(dead),
            "apps": [self._app(f) for f in plugins.status_figures()],
        }

    def _app(self, figures: plugins.StatusFigures) -> dict[str, Any]:
        """An app's figures as a table; an app that fails says so in its own box."""
        columns = list(figures.columns) or [("worker_id", "worker")]
        out: dict[str, Any] = {"key": figures.key, "title": figures.title or figures.key}
        out["columns"] = [heading for _, heading in columns]
        try:
            records = figures.read(self.client)
        except REDIS_ERRORS:
            raise
        except Exception as exc:  # an app's bug must not blank the page
            return {**out, "rows": [], "error": self.scrub(f"{type(exc).__name__}: {exc}")}
        out["rows"] = [
            {
                "cells": [record.get(key) for key, _ in columns],
                "progress": figures.progress(record) if figures.progress else None,
            }
            for record in records
        ]
        return out

    def _read_history(self, now: float) -> None:
        names = self.client.scan_iter(match=keys.history("*"), count=1000)
        hosts = [codec.text(n).removeprefix(keys.history("")) for n in names]
        self.history = chart_series(history.read_history(self.client, hosts, now))

    def _view(self, now: float) -> dict[str, Any]:
        redis_view = {"url": self.url, "ok": self.error is None, "error": self.error}
        if self.error is not None:
            redis_view["down_since"] = self.down_since
        redis_view["read_at"] = self.ok_at
        body = self.last or {"hosts": [], "queues": [], "workers": [], "dead_letters": []}
        return {"at": now, "redis": redis_view, "actions": self.actions, **body}


def host_row(h: HostStatus, now: float) -> dict[str, Any]:
    return {
        "host": h.host,
        "pid": h.pid,
        "started_at": h.started_at,
        "heartbeat_age_s": round(max(0.0, now - h.heartbeat_at), 1),
        "redis_ok": h.redis_ok,
        "workers": len(h.workers),
        "queues": [f"{q.label} {q.live}/{q.max_concurrent}" for q in h.queues],
    }


def queue_rows(hosts: Sequence[HostStatus], dead: dict[str, int]) -> list[dict[str, Any]]:
    """One row per queue over every host: workers add up; the queue's own
    figures (backlog, pending, oldest) are the freshest host's; dead
    letters are the stream's length read now, when the config names it."""
    rows: dict[str, dict[str, Any]] = {}
    for h in sorted(hosts, key=lambda h: h.heartbeat_at):  # the freshest last: its figures win
        for q in h.queues:
            row = rows.setdefault(q.name, {"name": q.name, "live": 0, "max": 0, "busy": 0})
            row.update(
                label=q.label,
                backlog=q.backlog,
                backlog_exact=q.backlog_exact,
                pending=q.pending,
                oldest_age_s=q.oldest_age_s,
                dead_letters=dead.get(q.name, q.dead_letters),
            )
            row["live"] += q.live
            row["max"] += q.max_concurrent
            row["busy"] += q.busy
            backoff = row.setdefault("backoff", [])
            if q.backoff_reason:
                backoff.append(f"{h.host}: {q.backoff_reason}, {q.backoff_s:.0f}s")
    return [rows[name] for name in sorted(rows)]


def worker_row(host: str, w: status.WorkerStatus, now: float) -> dict[str, Any]:
    return {
        "host": host,
        "worker_id": w.worker_id,
        "queue": w.queue,
        "pid": w.pid,
        "runtime_s": round(max(0.0, now - w.started_at), 1),
        "deadline_in_s": round(w.deadline - now, 1),
    }


def dead_letter_rows(
    dead: dict[str, tuple[int, list[deadletters.DeadLetter]]],
) -> list[dict[str, Any]]:
    rows = []
    for queue, (_, letters) in sorted(dead.items()):
        for d in letters:
            preview = ", ".join(f"{k}={v}" for k, v in d.original_fields.items())
            rows.append(
                {
                    "queue": queue,
                    "id": d.id,
                    "error": codec.printable(d.error)[: PREVIEW_CHARS * 2],
                    "attempts": d.attempts,
                    "failed_at": d.failed_at,
                    "preview": codec.printable(preview)[:PREVIEW_CHARS],
                }
            )
    return rows


def chart_series(buckets: Iterable[history.Bucket]) -> dict[str, Any]:
    """Buckets of every host as one time axis and, per charted figure, a
    series per queue (backlog: the largest any host saw; counts: their sum;
    None where no host wrote the bucket)."""
    by_t: dict[int, list[history.Bucket]] = {}
    for b in buckets:
        by_t.setdefault(b.t, []).append(b)
    times = sorted(by_t)
    queues = sorted({q for bs in by_t.values() for b in bs for q in b.queues})
    series: dict[str, dict[str, list[float | None]]] = {f: {} for f in CHARTED}
    for figure in CHARTED:
        for q in queues:
            points: list[float | None] = []
            for t in times:
                values = [b.queues[q][figure] for b in by_t[t] if q in b.queues]
                merged = max(values) if figure in MAXED else sum(values)
                points.append(merged if values else None)
            series[figure][q] = points
    return {"t": times, "series": series, "bucket_s": history.BUCKET_S}

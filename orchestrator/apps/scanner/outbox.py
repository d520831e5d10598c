"""What finished batches write back to Redis, in one MULTI/EXEC per commit.

``Outbox.commit(results, gone)`` takes the pool's ``BatchResult``s and
writes, in one transaction:

1. a dead letter per invalid tick (the entry's fields plus ``error``: the
   reason it was refused, ``attempts``, ``failed_at``, ``original_id``) and
   per tick of a batch the pool gave up on after repeated crashes, to
   ``<stream>:dead``, as the worker runtime does;
2. every alert, ``XADD <alert stream>``; every ``TRIM_INTERVAL_S`` also the
   alert stream's trim to its newest ``alert_stream_maxlen`` entries, which
   never drops an alert a consumer group still needs (``retention``);
3. one ``XACK`` of every tick id the results account for: processed
   (including the invalid ones), shed by ``on_backlog_full: shed_oldest``
   (acknowledged *as shed*: counted in ``skipped_backlog``, never
   processed), given up, and pending entries deleted from the stream.

Being one MULTI/EXEC, a crash cannot acknowledge a tick without its alerts
(nor write alerts without acknowledging their ticks): a tick is either
acknowledged together with its alerts, or still pending and processed again
by whoever gets it next. The dead letters' fields are read (XRANGE, one
pipelined round trip) before the transaction; that is the rare path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from orchestrator import codec, keys
from orchestrator.apps.scanner.frames import TickId
from orchestrator.apps.scanner.partitions import GIVE_UP_AFTER_CRASHES
from orchestrator.apps.scanner.patterns import alert_fields
from orchestrator.apps.scanner.scanner_pool import BatchResult
from orchestrator.deadletters import dead_letter_fields
from orchestrator.retention import TRIM_INTERVAL_S, queue_trim
from orchestrator.worker import Settings, mark_done

__all__ = ["Committed", "Outbox"]

GIVEN_UP = f"the pool process handling this tick's batch crashed {GIVE_UP_AFTER_CRASHES} times"


@dataclass(frozen=True, slots=True)
class Committed:
    acked: int = 0
    alerts: int = 0
    dead_lettered: int = 0
    shed: int = 0


class Outbox:
    """Commits results for one stream, group and alert stream."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        group: str,
        alert_stream: str,
        alert_maxlen: int,
        worker: Settings | None = None,
    ) -> None:
        """``worker``: the scanner's settings, to report its first completed
        work to the spawner (``orch:done:<consumer>``)."""
        self.client = client
        self.stream, self.group = stream, group
        self.dead_stream = keys.dead_stream(stream)
        self.alert_stream, self.alert_maxlen = alert_stream, alert_maxlen
        self.worker = worker
        self.trim_at = 0.0  # monotonic: when the alert stream is trimmed next

    def commit(self, results: Sequence[BatchResult], gone: Sequence[TickId] = ()) -> Committed:
        """Write and acknowledge ``results`` (see the module doc); what was written."""
        ids: list[TickId] = list(gone)
        dead: list[tuple[TickId, str]] = []
        alerts: list[dict[str, Any]] = []
        shed = 0
        for r in results:
            ids += r.processed_ids
            ids += r.shed_ids
            ids += r.failed_ids
            alerts += r.alerts
            dead += r.invalid
            dead += ((tick_id, GIVEN_UP) for tick_id in r.failed_ids)
            shed += len(r.shed_ids)
        if not ids:
            return Committed()
        letters = self._dead_letters(dead) if dead else []
        pipe = self.client.pipeline(transaction=True)
        for fields in letters:
            pipe.xadd(self.dead_stream, fields)  # type: ignore[arg-type]
        for alert in alerts:
            pipe.xadd(self.alert_stream, alert_fields(alert))  # type: ignore[arg-type]
        if alerts and (now := time.monotonic()) >= self.trim_at:
            self.trim_at = now + TRIM_INTERVAL_S
            queue_trim(pipe, [(self.alert_stream, self.alert_maxlen)])
        pipe.xack(self.stream, self.group, *ids)
        if self.worker is not None:
            mark_done(pipe, self.worker)
        pipe.execute()
        self.worker = None  # reported once
        return Committed(len(ids), len(alerts), len(letters), shed)

    def _dead_letters(self, dead: Sequence[tuple[TickId, str]]) -> list[dict[bytes, bytes]]:
        pipe = self.client.pipeline(transaction=False)
        for tick_id, _ in dead:
            pipe.xrange(self.stream, min=tick_id, max=tick_id)
        found = pipe.execute()
        return [
            dead_letter_fields(rows[0][1] if rows else {}, reason, 1, codec.text(tick_id))
            for (tick_id, reason), rows in zip(dead, found, strict=True)
        ]

"""Reading a batch's progress back, for ``orchestrator batch status``.

``read_batch`` reads ``orch:batch:<id>`` (never its parts: they can be
large), the shards' records, and, while the batch is not done, the queue's
dead letters that belong to it (a shard out of attempts stalls its batch
until ``orchestrator dlq retry`` gives it back). ``format_line`` draws the
progress bar with rate and ETA; ``follow`` yields fresh readings until the
batch ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import redis

from orchestrator import codec, keys
from orchestrator.apps.batch.batch_record import BatchState, batch_key

__all__ = [
    "BatchStatus",
    "DeadShard",
    "follow",
    "format_details",
    "format_line",
    "read_batch",
    "recent_batches",
]

DEAD_LETTERS_SCANNED = 1000  # the newest dead letters of the queue looked at
RECENT_S = 3600.0  # recent_batches: those not finished, or finished this long ago at most
RECENT_MAX = 20
_FIELDS = (
    "state",
    "total",
    "completed",
    "errors",
    "rate",
    "shards",
    "shards_done",
    "submitted_at",
    "started_at",
    "updated_at",
    "finished_at",
    "timeframe",
    "formula",
    "stream",
    "results",
    "results_host",
    "error",
    "ok",
    "matched",
    "matches",
    "updates",
)


@dataclass(frozen=True, slots=True)
class DeadShard:
    shard: int
    error: str
    entry_id: str


@dataclass(frozen=True, slots=True)
class BatchStatus:
    batch_id: str
    state: str
    total: int = 0
    completed: int = 0
    errors: int = 0
    rate: float = 0.0
    shards: int = 1
    shards_done: int = 0
    submitted_at: float | None = None
    started_at: float | None = None
    updated_at: float | None = None
    finished_at: float | None = None
    timeframe: str = ""
    formula: str = ""
    stream: str = ""
    results: str | None = None
    results_host: str | None = None
    error: str | None = None
    matched: int | None = None
    matches: int | None = None
    updates: int = 0
    shard_records: list[dict[str, Any] | None] = field(default_factory=list)
    dead_shards: list[DeadShard] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in BatchState.TERMINAL

    @property
    def stalled(self) -> bool:
        """A shard is in the dead letters and none runs: it cannot end by itself."""
        running = any(r is not None and r.get("state") == "running" for r in self.shard_records)
        return not self.finished and bool(self.dead_shards) and not running

    @property
    def percent(self) -> float:
        return 100.0 * self.completed / self.total if self.total else 100.0

    def elapsed_s(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or now) - self.started_at

    def current_rate(self, now: float) -> float:
        """The shards' rate; between shards, the average since the start."""
        elapsed = self.elapsed_s(now)
        if self.rate > 0 or not elapsed or self.finished:
            return self.rate
        return self.completed / elapsed

    def eta_s(self, now: float) -> float | None:
        rate = self.current_rate(now)
        if self.finished or rate <= 0:
            return None
        return max(0, self.total - self.completed) / rate

    def to_json(self, now: float) -> dict[str, Any]:
        out = asdict(self)
        out.update(percent=round(self.percent, 2), eta_s=self.eta_s(now), stalled=self.stalled)
        out["elapsed_s"] = self.elapsed_s(now)
        return out


def read_batch(client: redis.Redis, batch_id: str) -> BatchStatus | None:
    """The batch's status; None when Redis has no such batch."""
    key = batch_key(batch_id)
    v = dict(
        zip(_FIELDS, (codec.decoded(x) for x in client.hmget(key, list(_FIELDS))), strict=True)
    )
    if v["state"] is None:
        return None
    base = _from_fields(batch_id, v)
    records = client.hmget(key, [f"shard:{i}" for i in range(base.shards)])
    status = replace(base, shard_records=[None if r is None else json.loads(r) for r in records])
    if status.state == BatchState.DONE or not status.stream:
        return status
    dead = _dead_shards(client, status.stream, batch_id)
    return replace(status, dead_shards=dead) if dead else status


def recent_batches(
    client: redis.Redis, now: float | None = None, limit: int = RECENT_MAX
) -> list[dict[str, Any]]:
    """The batches running, queued or finished within ``RECENT_S``, newest
    first, as flat records (the dashboard's rows, the metrics' samples):
    one SCAN of ``orch:batch:*`` and one pipelined HMGET, no parts, no shards."""
    now = time.time() if now is None else now
    names = list(client.scan_iter(match=batch_key("*"), count=1000))
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hmget(name, list(_FIELDS))
    found = []
    for name, values in zip(names, pipe.execute(), strict=True):
        v = dict(zip(_FIELDS, (codec.decoded(x) for x in values), strict=True))
        if v["state"] is None:
            continue
        status = _from_fields(codec.text(name).removeprefix(batch_key("")), v)
        if not status.finished or now - (status.finished_at or status.updated_at or 0) < RECENT_S:
            found.append(status)
    found.sort(key=lambda b: b.submitted_at or 0.0, reverse=True)
    return [_record(b, now) for b in found[:limit]]


def _record(status: BatchStatus, now: float) -> dict[str, Any]:
    record = status.to_json(now)
    del record["shard_records"], record["dead_shards"]
    record["progress"] = f"{status.completed:,}/{status.total:,}"
    record["rate"] = round(status.current_rate(now), 1)
    record["ratio"] = round(min(1.0, status.percent / 100), 4)
    return record


def status_of(record: Mapping[str, Any]) -> BatchStatus:
    """A record of ``recent_batches`` as a ``BatchStatus`` again."""
    names = {f.name for f in fields(BatchStatus)} - {"shard_records", "dead_shards"}
    return BatchStatus(**{k: v for k, v in record.items() if k in names})


def _from_fields(batch_id: str, v: dict[str, Any]) -> BatchStatus:
    return BatchStatus(
        batch_id=batch_id,
        state=v["state"],
        total=_int(v["total"]) or 0,
        completed=_int(v["completed"]) or 0,
        errors=_int(v["errors"]) or 0,
        rate=_float(v["rate"]) or 0.0,
        shards=_int(v["shards"]) or 1,
        shards_done=_int(v["shards_done"]) or 0,
        submitted_at=_float(v["submitted_at"]),
        started_at=_float(v["started_at"]),
        updated_at=_float(v["updated_at"]),
        finished_at=_float(v["finished_at"]),
        timeframe=v["timeframe"] or "",
        formula=v["formula"] or "",
        stream=v["stream"] or "",
        results=v["results"],
        results_host=v["results_host"],
        error=v["error"],
        matched=_int(v["matched"]),
        matches=_int(v["matches"]),
        updates=_int(v["updates"]) or 0,
    )


def _dead_shards(client: redis.Redis, stream: str, batch_id: str) -> list[DeadShard]:
    found: dict[int, DeadShard] = {}
    entries = client.xrevrange(keys.dead_stream(stream), count=DEAD_LETTERS_SCANNED) or []
    for entry_id, raw in entries:
        fields = {codec.decoded(k): codec.decoded(v) for k, v in (raw or {}).items()}
        try:
            payload = codec.decode_payload(fields.get(codec.PAYLOAD) or "{}")
        except codec.BadPayload:
            continue
        if payload.get("batch_id") == batch_id:
            shard = payload.get("shard", 0)
            shard = shard if isinstance(shard, int) else 0
            dead = DeadShard(shard, fields.get("error") or "?", codec.decoded(entry_id))
            found.setdefault(shard, dead)  # the newest dead letter of each shard
    return sorted(found.values(), key=lambda d: d.shard)


def follow(client: redis.Redis, batch_id: str, interval_s: float) -> Iterator[BatchStatus | None]:
    """Fresh readings every ``interval_s`` until the batch ends, stalls, or is unknown."""
    while True:
        status = read_batch(client, batch_id)
        yield status
        if status is None or status.finished or status.stalled:
            return
        time.sleep(interval_s)


def format_line(status: BatchStatus, now: float, width: int = 30) -> str:
    """``<id> <state> [#####.....] 55.0% 33/60 errors 2 12.3/s ETA 2s shards 1/4``."""
    filled = round(width * min(1.0, status.percent / 100))
    bar = "#" * filled + "." * (width - filled)
    parts = [
        status.batch_id,
        f"{status.state:<7}",
        f"[{bar}]",
        f"{status.percent:5.1f}%",
        f"{status.completed:,}/{status.total:,}",
        f"errors {status.errors:,}",
    ]
    elapsed = status.elapsed_s(now)
    if status.finished:
        parts.append(f"in {_duration(elapsed)}" if elapsed is not None else "")
    else:
        eta = status.eta_s(now)
        rate = status.current_rate(now)
        parts += [f"{rate:,.1f}/s", f"ETA {_duration(eta) if eta is not None else '--'}"]
    if status.shards > 1:
        parts.append(f"shards {status.shards_done}/{status.shards}")
    return "  ".join(p for p in parts if p)


def format_details(status: BatchStatus) -> list[str]:
    """What to say under the bar: where the results are, or what went wrong."""
    lines = []
    if status.state == BatchState.DONE:
        where = f" on {status.results_host}" if status.results_host else ""
        lines.append(
            f"results: {status.results}{where} (results.jsonl, summary.json): "
            f"{status.matched} symbols matched, {status.matches} matches"
        )
    if status.error:
        lines.append(f"error: {status.error}")
    for dead in status.dead_shards:
        lines.append(
            f"shard {dead.shard + 1}/{status.shards} dead-lettered ({dead.entry_id}): "
            f"{dead.error}; 'orchestrator dlq retry {status.stream} {dead.entry_id}' runs it again"
        )
    if status.state == BatchState.QUEUED:
        lines.append("queued: no worker has started it yet")
    return lines


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None

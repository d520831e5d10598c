"""``orch:batch:<id>``: a batch's progress, its shards' parts and its outcome.

One Redis hash per batch (``batch_key``), written only through the Lua
scripts ``lua/batch_*.lua``, so that several workers, on one host or many,
can update one batch without losing each other's figures:

===================  ===========================================================
field                contents
===================  ===========================================================
``id``               the batch id
``state``            queued, running, merging (every shard done, results being
                     written), done, failed
``total``            symbols in the batch; ``shards`` how many shards
``completed``        symbols finished (sum over shards); ``errors`` of them failed
``rate``             symbols per second, over the shards running now
``submitted_at``     epoch seconds; also ``started_at`` (first progress),
                     ``updated_at``, ``finished_at``
``shards_done``      shards whose results are stored
``updates``          how many times the hash was updated
``timeframe``,       what the batch scans; ``stream`` the queue it went to
``formula``
``results``          (done) the directory holding results.jsonl and summary.json,
                     on ``results_host``; ``ok``, ``matched``, ``matches`` counts
``error``            (failed) why
``shard:<i>``        shard i's record, JSON: state, completed, total, errors,
                     rate, worker, started_at, updated_at
``part:<i>``         shard i's results (zlib JSON lines) until the merge
===================  ===========================================================

The hash expires ``batch.keep`` seconds after its last update.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import redis

from orchestrator import codec, keys
from orchestrator.apps.batch.request import BatchRequest
from orchestrator.scripts import load_lua

if TYPE_CHECKING:
    from orchestrator.apps.batch.progress import Pacer

__all__ = ["BatchLedger", "BatchState", "ShardRecord", "batch_fields"]

LUA_PACKAGE = "orchestrator.apps.batch"  # its scripts: orchestrator/apps/batch/lua/


def batch_key(batch_id: str) -> str:
    """``orch:batch:<id>``: the batch's hash."""
    return f"{keys.PREFIX}batch:{batch_id}"


class BatchState:
    """The values of the ``state`` field."""

    QUEUED = "queued"
    RUNNING = "running"
    MERGING = "merging"
    DONE = "done"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the hash is gone (never registered, or expired)
    TERMINAL = frozenset({DONE, FAILED})


@dataclass(frozen=True, slots=True)
class ShardRecord:
    """One shard as its worker last reported it."""

    state: str  # running, done, or queued (stopped: it runs again)
    completed: int
    total: int
    errors: int
    rate: float  # symbols per second
    worker: str
    started_at: float
    updated_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def batch_fields(request: BatchRequest, total: int, stream: str) -> dict[str, str]:
    """The fields a batch is registered with (``request``: any of its shards)."""
    return {
        "id": request.batch_id,
        "state": BatchState.QUEUED,
        "total": str(total),
        "shards": str(request.shards),
        "stream": stream,
        "submitted_at": f"{time.time():.3f}",
        "timeframe": request.timeframe,
        "formula": request.formula,
        "completed": "0",
        "errors": "0",
        "rate": "0",
        "shards_done": "0",
        "updates": "0",
    }


class BatchLedger:
    """The batch hashes, through their Lua scripts.

    With a ``pacer`` (a worker's), every write waits its turn: a worker
    writes at most once per ``progress_interval``.
    """

    def __init__(self, client: redis.Redis, keep_s: float, pacer: Pacer | None = None) -> None:
        self.client = client
        self.keep = str(max(1, int(keep_s)))
        self.pacer = pacer
        self._register = client.register_script(load_lua("batch_register.lua", LUA_PACKAGE))
        self._shard = client.register_script(load_lua("batch_shard.lua", LUA_PACKAGE))
        self._finish = client.register_script(load_lua("batch_finish.lua", LUA_PACKAGE))
        self._fail = client.register_script(load_lua("batch_fail.lua", LUA_PACKAGE))

    def register(
        self, fields: Mapping[str, str], stream: str, payloads: Sequence[Mapping[str, Any]] = ()
    ) -> bool:
        """Create the hash and queue ``payloads``, unless the id exists."""
        argv = [json.dumps(dict(fields)), self.keep]
        argv += [codec.encode_payload(p) for p in payloads]
        with self._turn():
            return bool(self._register(keys=[batch_key(fields["id"]), stream], args=argv))

    def shard(
        self, batch_id: str, shard: int, record: ShardRecord, part: bytes | None = None
    ) -> str:
        """Store a shard's record (and, when it is done, its part); the batch's state."""
        argv: list[str | bytes] = [str(shard), record.to_json(), f"{time.time():.3f}", self.keep]
        if part is not None:
            argv.append(part)
        with self._turn():
            return codec.text(self._shard(keys=[batch_key(batch_id)], args=argv))

    def finished_shard(self, batch_id: str, shard: int) -> tuple[ShardRecord, bytes] | None:
        """The record and part of a shard that finished before (its worker died
        before acknowledging it, or while merging), if they are stored."""
        raw, part = self.client.hmget(batch_key(batch_id), [f"shard:{shard}", f"part:{shard}"])
        if raw is None or part is None:
            return None
        record = ShardRecord(**json.loads(raw))
        return (record, _bytes(part)) if record.state == "done" else None

    def parts(self, batch_id: str, shards: int) -> list[bytes | None]:
        names = [f"part:{i}" for i in range(shards)]
        return [
            None if p is None else _bytes(p) for p in self.client.hmget(batch_key(batch_id), names)
        ]

    def finish(self, batch_id: str, summary: Mapping[str, object]) -> bool:
        """Mark the batch done; True for the one call that did."""
        argv = [
            json.dumps({k: str(v) for k, v in summary.items()}),
            f"{time.time():.3f}",
            self.keep,
        ]
        with self._turn():
            return bool(self._finish(keys=[batch_key(batch_id)], args=argv))

    def fail(self, batch_id: str, error: str, fields: Mapping[str, str] | None = None) -> bool:
        """Mark the batch failed with ``error`` (unless it is done)."""
        defaults = {"id": batch_id, **(fields or {})}
        argv = [json.dumps(defaults), error, f"{time.time():.3f}", self.keep]
        with self._turn():
            return bool(self._fail(keys=[batch_key(batch_id)], args=argv))

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """Wait for the pacer, write, note the write (even a failed one)."""
        if self.pacer is None:
            yield
            return
        self.pacer.wait_turn()
        try:
            yield
        finally:
            self.pacer.wrote()

    def state(self, batch_id: str) -> str:
        value = self.client.hget(batch_key(batch_id), "state")
        return BatchState.UNKNOWN if value is None else codec.text(value)


def _bytes(value: bytes | str) -> bytes:
    if isinstance(value, str):  # a client decoding replies cannot carry parts
        raise TypeError("the ledger needs a Redis client that does not decode replies")
    return value

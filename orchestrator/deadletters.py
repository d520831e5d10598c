"""The dead letters of a queue: the stream ``<stream>:dead``, or RQ's
``FailedJobRegistry`` for an RQ queue (``rq_backend``).

A dead-letter entry holds the original fields plus ``error``, ``attempts``,
``failed_at`` (epoch seconds) and ``original_id``. ``retry`` puts the
original fields back on the queue as a new entry (fresh attempts) and
removes the dead letter in the same MULTI/EXEC, so a retried job is never
both lost and never twice on the queue. Ids that name no dead letter
(``UnknownDeadLetters``) fail the whole call before anything changes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from orchestrator import codec

if TYPE_CHECKING:
    from orchestrator.config import QueueConfig

DEAD_LETTER_FIELDS = ("error", "attempts", "failed_at", "original_id")
RQ = "rq"  # config.Backend.RQ (not imported: workers import this module)
V = TypeVar("V", bound=str | bytes)  # a field's value: text, or bytes as read


class UnknownDeadLetters(LookupError):
    """Ids given that name no dead letter of the queue."""

    def __init__(self, where: str, ids: Sequence[str]) -> None:
        super().__init__(f"no dead letter {', '.join(ids)} in {where}: nothing changed")
        self.ids = list(ids)


def dead_letter_record(
    fields: Mapping[str, V],
    error: str,
    attempts: int,
    entry_id: str,
    failed_at: float | None = None,
) -> dict[str, V | str]:
    """A dead letter: the entry's fields, plus why (SPEC.md); ``failed_at``
    (epoch seconds) defaults to now. (``lua/park.lua`` builds the same
    record inside Redis.)"""
    return {
        **fields,
        "error": error,
        "attempts": str(attempts),
        "failed_at": f"{time.time() if failed_at is None else failed_at:.3f}",
        "original_id": entry_id,
    }


def dead_letter_fields(
    fields: Mapping[str, str | bytes], error: str, attempts: int, entry_id: str
) -> dict[bytes, bytes]:
    """``dead_letter_record`` ready for XADD: the entry's fields byte for byte."""
    return codec.fields_to_bytes(dead_letter_record(fields, error, attempts, entry_id))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    fields: dict[str, str]

    @property
    def error(self) -> str:
        return self.fields.get("error", "")

    @property
    def attempts(self) -> int:
        return int(self.fields.get("attempts", "0") or 0)

    @property
    def failed_at(self) -> float:
        return float(self.fields.get("failed_at", "0") or 0)

    @property
    def original_id(self) -> str:
        return self.fields.get("original_id", "")

    @property
    def original_fields(self) -> dict[str, str]:
        return {k: v for k, v in self.fields.items() if k not in DEAD_LETTER_FIELDS}


def list_dead(client: redis.Redis, queue: QueueConfig, limit: int = 100) -> list[DeadLetter]:
    if queue.backend == RQ:
        from orchestrator import rq_backend

        return rq_backend.failed_jobs(client, queue, limit)[1]
    return _letters(client.xrange(queue.dead_stream, count=limit))


def where(queue: QueueConfig) -> str:
    """Where the queue's dead letters are, for people."""
    return f"rq:failed:{queue.name}" if queue.backend == RQ else queue.dead_stream


def newest_dead(
    client: redis.Redis, queues: Sequence[QueueConfig], limit: int
) -> dict[str, tuple[int, list[DeadLetter]]]:
    """Per queue: how many dead letters, and the newest ``limit`` of them
    (one pipelined round trip for the stream queues, for the dashboard; RQ
    queues' failed jobs one queue at a time)."""
    streams = [q for q in queues if q.backend != RQ]
    pipe = client.pipeline(transaction=False)
    for queue in streams:
        pipe.xlen(queue.dead_stream)
        pipe.xrevrange(queue.dead_stream, count=limit)
    replies = pipe.execute()
    newest = {
        q.name: (int(replies[2 * i]), _letters(replies[2 * i + 1])) for i, q in enumerate(streams)
    }
    for queue in queues:
        if queue.backend == RQ:
            from orchestrator import rq_backend

            count, letters = rq_backend.failed_jobs(client, queue, limit, newest=True)
            newest[queue.name] = (count, letters)
    return newest


def count_dead(client: redis.Redis, queue: QueueConfig) -> int:
    if queue.backend == RQ:
        from orchestrator import rq_backend

        return rq_backend.failed_jobs(client, queue, 1)[0]
    return int(client.xlen(queue.dead_stream))


def retry_dead(
    client: redis.Redis, queue: QueueConfig, ids: Sequence[str] | None = None
) -> list[str]:
    """Re-queue dead letters (all, or ``ids``); returns the new entry ids
    (an RQ job keeps its id)."""
    if queue.backend == RQ:
        from orchestrator import rq_backend

        return rq_backend.retry_failed(client, queue, _rq_ids(client, queue, ids))
    letters = _select(client, queue, ids)
    if not letters:
        return []
    pipe = client.pipeline(transaction=True)
    for letter in letters:
        pipe.xadd(queue.stream, codec.fields_to_bytes(letter.original_fields))  # type: ignore[arg-type]
    pipe.xdel(queue.dead_stream, *[letter.id for letter in letters])
    replies = pipe.execute()
    return [codec.text(r) for r in replies[: len(letters)]]


def purge_dead(client: redis.Redis, queue: QueueConfig, ids: Sequence[str] | None = None) -> int:
    """Delete dead letters (all, or ``ids``); returns how many."""
    if queue.backend == RQ:
        from orchestrator import rq_backend

        return rq_backend.purge_failed(client, queue, _rq_ids(client, queue, ids))
    if ids:
        _select(client, queue, ids)  # all of them exist, or nothing is deleted
        return int(client.xdel(queue.dead_stream, *ids))
    count = count_dead(client, queue)
    client.delete(queue.dead_stream)
    return count


def _select(client: redis.Redis, queue: QueueConfig, ids: Sequence[str] | None) -> list[DeadLetter]:
    """The dead letters named (all when ``ids`` is empty); every one must exist."""
    if not ids:
        return _letters(client.xrange(queue.dead_stream))
    pipe = client.pipeline(transaction=False)
    for i in ids:
        pipe.xrange(queue.dead_stream, i, i)
    found = pipe.execute(raise_on_error=False)
    missing = [
        i for i, rows in zip(ids, found, strict=True) if not isinstance(rows, list) or not rows
    ]
    if missing:  # not a stream id (a ResponseError), or no such entry
        raise UnknownDeadLetters(queue.dead_stream, missing)
    return [d for rows in found for d in _letters(rows)]


def _rq_ids(client: redis.Redis, queue: QueueConfig, ids: Sequence[str] | None) -> list[str]:
    from orchestrator import rq_backend

    failed = rq_backend.failed_ids(client, queue)
    missing = [i for i in ids or () if i not in failed]
    if missing:
        raise UnknownDeadLetters(where(queue), missing)
    return list(ids) if ids else sorted(failed)


def _letters(rows: Any) -> list[DeadLetter]:
    """Fields decoded losslessly (``codec``): bytes that are not UTF-8 survive."""
    return [
        DeadLetter(codec.text(i), {codec.text(k): codec.text(v) for k, v in (f or {}).items()})
        for i, f in rows or []
    ]

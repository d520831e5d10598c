"""The dead-letter stream of a queue: ``<stream>:dead``.

An entry there holds the original fields plus ``error``, ``attempts``,
``failed_at`` (epoch seconds) and ``original_id``. ``retry`` puts the
original fields back on the queue as a new entry (fresh attempts) and
removes the dead letter in the same MULTI/EXEC, so a retried job is never
both lost and never twice on the queue.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from orchestrator import codec

if TYPE_CHECKING:
    from orchestrator.config import QueueConfig

DEAD_LETTER_FIELDS = ("error", "attempts", "failed_at", "original_id")


def dead_letter_fields(
    fields: Mapping[str, str | bytes], error: str, attempts: int, entry_id: str
) -> dict[bytes, bytes]:
    """A dead letter: the entry's fields byte for byte, plus why (SPEC.md).
    (``lua/park.lua`` builds the same record inside Redis.)"""
    return codec.fields_to_bytes(
        {
            **fields,
            "error": error,
            "attempts": str(attempts),
            "failed_at": f"{time.time():.3f}",
            "original_id": entry_id,
        }
    )


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
    return _letters(client.xrange(queue.dead_stream, count=limit))


def newest_dead(
    client: redis.Redis, queues: Sequence[QueueConfig], limit: int
) -> dict[str, tuple[int, list[DeadLetter]]]:
    """Per queue: how many dead letters, and the newest ``limit`` of them
    (one pipelined round trip, for the dashboard)."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.xlen(queue.dead_stream)
        pipe.xrevrange(queue.dead_stream, count=limit)
    replies = pipe.execute()
    return {
        q.name: (int(replies[2 * i]), _letters(replies[2 * i + 1])) for i, q in enumerate(queues)
    }


def count_dead(client: redis.Redis, queue: QueueConfig) -> int:
    return int(client.xlen(queue.dead_stream))


def retry_dead(
    client: redis.Redis, queue: QueueConfig, ids: Sequence[str] | None = None
) -> list[str]:
    """Re-queue dead letters (all, or ``ids``); returns the new entry ids."""
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
    if ids:
        return int(client.xdel(queue.dead_stream, *ids))
    count = count_dead(client, queue)
    client.delete(queue.dead_stream)
    return count


def _select(client: redis.Redis, queue: QueueConfig, ids: Sequence[str] | None) -> list[DeadLetter]:
    if not ids:
        return _letters(client.xrange(queue.dead_stream))
    return [d for i in ids for d in _letters(client.xrange(queue.dead_stream, i, i))]


def _letters(rows: Any) -> list[DeadLetter]:
    """Fields decoded losslessly (``codec``): bytes that are not UTF-8 survive."""
    return [
        DeadLetter(codec.text(i), {codec.text(k): codec.text(v) for k, v in (f or {}).items()})
        for i, f in rows or []
    ]

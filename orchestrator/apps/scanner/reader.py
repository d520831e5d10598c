"""The scanner's reads of its consumer group: its own pending entries first, then new ones.

``GroupReader.read`` returns the next entries as redis-py gives them (bytes
ids, ``{field: value}`` dicts), in stream order:

- Own pending entries (work the spawner handed to this consumer, recovered
  from a dead one) are read with a cursor: ``XREADGROUP ... <id>`` returns
  our pending entries *after* ``<id>``, so each is read once even while the
  ones before it are still in the pool, and nothing already in hand is
  delivered (and counted) twice. The cursor starts at ``0`` at start-up and
  again whenever the reader is told our pending list may have grown
  (``own_due``): after a blocking read that came back empty (it timed out,
  or the spawner cut it short with ``CLIENT UNBLOCK`` because it handed us
  entries) or when the caller noticed Redis holds more for us than it knows
  of. A restart of the cursor waits until the caller holds nothing
  (``held == 0``), since only then is everything pending on us unknown to us.
- New entries (``>``) come in adaptive batches (``batching.next_read_size``
  between ``batch_size_min`` and ``batch_size_max``), blocking only when
  the caller says so (nothing in flight).

Own pending entries deleted from the stream meanwhile come back without
fields: they are returned apart (``gone``), to be acknowledged as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import redis

from orchestrator.apps.scanner.batching import next_read_size
from orchestrator.apps.scanner.frames import Entry, Row, TickId, flat_rows

__all__ = ["GroupReader", "Read"]

_ID = itemgetter(0)
_FLAT = itemgetter(1)


@dataclass(slots=True)
class Read:
    """Entries read, in stream order: as ``ids`` + ``rows`` (the fast path), or
    ``entries`` (``(id, {field: value})``) when their fields are laid out unevenly."""

    ids: list[TickId] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    gone: list[TickId] = field(default_factory=list)  # pending, deleted from the stream
    own: bool = False  # from our own pending list

    def __len__(self) -> int:
        return len(self.ids) + len(self.entries) + len(self.gone)


class GroupReader:
    """XREADGROUP for one consumer; see the module doc.

    It installs a raw XREADGROUP reply callback on ``client``: redis-py's own
    builds a dict per entry in Python, which cost more than everything else
    the scanner's reading process does per tick.
    """

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        group: str,
        consumer: str,
        *,
        first_size: int,
        low: int,
        high: int,
    ) -> None:
        self.client = client
        client.set_response_callback("XREADGROUP", _raw)
        self.stream, self.group, self.consumer = stream, group, consumer
        self.low, self.high = low, high
        self.size = max(low, min(high, first_size))
        self.own_cursor: bytes | str | None = "0"  # reading our own pending list from here
        self.own_due = False  # restart the cursor once we hold nothing

    def read(self, held: int, block_ms: int | None = None) -> Read:
        """Own pending entries while there are any, else new ones (blocking ``block_ms``)."""
        if self.own_cursor is None and self.own_due and held == 0:
            self.own_cursor, self.own_due = "0", False
        if self.own_cursor is not None:
            got = self._read_own()
            if got:
                return got
        reply = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=self.size, block=block_ms
        )
        got = _parse(_entries(reply))  # new entries always have fields
        self.size = next_read_size(self.size, len(got), self.low, self.high)
        if not got and block_ms is not None:
            self.own_due = True  # timed out or woken up: we may have been handed entries
        return got

    def _read_own(self) -> Read:
        assert self.own_cursor is not None
        reply = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: self.own_cursor}, count=self.high
        )
        raw = _entries(reply)
        if not raw:
            self.own_cursor = None
            return Read()
        self.own_cursor = raw[-1][0]
        got = _parse([e for e in raw if e[1]])
        got.gone = [e[0] for e in raw if not e[1]]
        got.own = True
        return got


def _raw(response: Any, **_: Any) -> Any:
    return response


def _entries(reply: Any) -> list[Any]:
    """``[[id, [field, value, ...]], ...]`` of a one-stream reply (RESP3 map or RESP2 list)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(next(iter(reply.values())))
    return list(reply[0][1])


def _parse(raw: list[Any]) -> Read:
    if not raw:
        return Read()
    flats = list(map(_FLAT, raw))
    rows = flat_rows(flats)
    if rows is not None:
        return Read(ids=list(map(_ID, raw)), rows=rows)
    return Read(entries=[(e[0], dict(zip(e[1][0::2], e[1][1::2], strict=True))) for e in raw])

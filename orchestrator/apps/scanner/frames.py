"""The wire between the pool and its processes: frames over a pair of pipes.

A frame is a 14-byte header (payload length u32, kind u8, flags u8, batch id
u64, little-endian) and a payload. The pool writes INIT, BATCH and STOP
frames to a process's stdin and reads RESULT frames from its stdout.

Payloads are compact and built in C, never tick by tick in Python:

- BATCH: ``marshal`` of a list of rows ``(symbol, price, volume, ts)``, the
  values exactly as they came from the stream entry (str or bytes). marshal
  is safe here: both ends run the same interpreter. Tick ids stay in the
  parent; the process refers to ticks by their index in the batch.
- RESULT: ``marshal`` of ``(alerts, invalid, suppressed, checkpoint)`` where
  alerts are ``AlertRow`` tuples, invalid ``(index, reason)`` pairs and
  checkpoint the pickled state (bytes) or None.
- INIT: ``pickle`` of ``(PatternSettings, checkpoint bytes)``.

``split_entries`` turns stream entries into per-partition rows: partition =
crc32(symbol) mod partitions, so a symbol always lands in the same process.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from operator import itemgetter
from typing import Any

HEADER = struct.Struct("<IBBQ")
MAX_PAYLOAD = 0xFFFFFFFF

TickId = str | bytes
Entry = tuple[TickId, Mapping[Any, Any]]
Row = tuple[Any, Any, Any, Any]
_FIRST = itemgetter(0)
_FIELDS = itemgetter(1)
_TEXT_TYPES = {str, bytes}
_NAMES = ("symbol", "price", "volume", "ts")


class Kind(IntEnum):
    INIT = 1
    BATCH = 2
    STOP = 3
    RESULT = 4


class Flag(IntFlag):
    NONE = 0
    MUTE = 1  # update state and cool-offs, keep no alerts
    NO_REPLY = 2  # replay after a restart: no RESULT frame
    CHECKPOINT = 4  # send the state with the result


@dataclass(frozen=True, slots=True)
class Frame:
    kind: Kind
    flags: Flag
    batch_id: int
    payload: bytes


def header(kind: Kind, flags: Flag, batch_id: int, payload_len: int) -> bytes:
    if payload_len > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {payload_len} bytes is too large")
    return HEADER.pack(payload_len, kind, flags, batch_id)


def encode(kind: Kind, flags: Flag, batch_id: int, payload: bytes) -> bytes:
    return header(kind, flags, batch_id, len(payload)) + payload


class FrameReader:
    """Accumulates bytes read from a pipe and returns the complete frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos, size = 0, HEADER.size
        while len(buf) - pos >= size:
            length, kind, flags, batch_id = HEADER.unpack_from(buf, pos)
            end = pos + size + length
            if len(buf) < end:
                break
            frames.append(Frame(Kind(kind), Flag(flags), batch_id, bytes(buf[pos + size : end])))
            pos = end
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buf)


@dataclass(slots=True)
class Split:
    """Stream entries split by partition; entries without a symbol set apart."""

    ids: list[list[TickId]]
    rows: list[list[Row]]
    no_symbol: list[TickId] = field(default_factory=list)


def partition_of(symbol: str | bytes, partitions: int) -> int:
    """The stable partition of a symbol (crc32, the same in every process)."""
    raw = symbol.encode() if isinstance(symbol, str) else symbol
    return zlib.crc32(raw) % partitions


def split_entries(
    entries: Sequence[Entry], partitions: int, cache: dict[Any, int] | None = None
) -> Split:
    """Rows per partition, in entry order; ``cache`` remembers symbol partitions.

    The common case (every entry has the four fields) builds the rows in C
    with ``itemgetter``; with one partition there is no per-tick Python at all.
    """
    if not entries:
        return split_rows([], [], partitions, cache)
    keys = _keys(entries[0][1])
    try:
        rows: list[Row] = list(map(itemgetter(*keys), map(_FIELDS, entries)))
    except KeyError:
        return _split_slowly(entries, partitions, keys, cache)
    return split_rows(list(map(_FIRST, entries)), rows, partitions, cache)


def split_rows(
    ids: list[TickId], rows: list[Row], partitions: int, cache: dict[Any, int] | None = None
) -> Split:
    """``split_entries`` for rows already built (``flat_rows``): ids[i] is rows[i]'s."""
    split = Split(ids=[[] for _ in range(partitions)], rows=[[] for _ in range(partitions)])
    if partitions == 1 and set(map(type, map(_FIRST, rows))) <= _TEXT_TYPES:
        split.ids[0], split.rows[0] = ids, rows
        return split
    known = cache if cache is not None else {}
    for tick_id, row in zip(ids, rows, strict=True):
        part = known.get(row[0])
        if part is None:
            if not isinstance(row[0], str | bytes):
                split.no_symbol.append(tick_id)
                continue
            part = known[row[0]] = partition_of(row[0], partitions)
        split.ids[part].append(tick_id)
        split.rows[part].append(row)
    return split


def flat_rows(flats: Sequence[Sequence[Any]]) -> list[Row] | None:
    """Rows of entries whose fields come as flat ``[name, value, ...]`` lists (raw replies).

    When every entry lays its fields out like the first (a feed writes the
    same mapping every time), the rows are built in C; None otherwise (the
    caller falls back to ``split_entries`` on dicts).
    """
    if not flats:
        return []
    first = flats[0]
    names = first[0::2]
    wanted = tuple(n.encode() for n in _NAMES) if isinstance(names[0], bytes) else _NAMES
    try:
        at = tuple(names.index(n) * 2 for n in wanted)
        same_layout = set(map(itemgetter(*at), flats)) == {wanted}  # names where we look
    except (ValueError, IndexError):
        return None
    return list(map(itemgetter(*(i + 1 for i in at)), flats)) if same_layout else None


def _split_slowly(
    entries: Sequence[Entry], partitions: int, keys: tuple[Any, ...], cache: dict[Any, int] | None
) -> Split:
    """Some entry lacks a field: missing values become None (the process refuses them)."""
    complete: list[Entry] = [(e[0], {k: e[1].get(k) for k in keys}) for e in entries]
    return split_entries(complete, partitions, cache)


def _keys(fields: Mapping[Any, Any]) -> tuple[Any, ...]:
    """The field names in the type the client returns (bytes, or str when decoded)."""
    if any(isinstance(k, bytes) for k in fields):
        return tuple(n.encode() for n in _NAMES)
    return _NAMES

"""Submitting a batch: checked here as a worker would, split, queued at once.

``orchestrator batch submit`` builds the same payload a producer would
enqueue, reads it with the worker's own reader (so both refuse the same
jobs), checks the formula (and the timeframe, when the data root is
visible from here), splits it into shards and registers the batch with all
its shards in one Lua call (``BatchLedger.register``): a batch id is queued
once, whole, or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from orchestrator.apps.batch.batch_record import BatchLedger, batch_fields
from orchestrator.apps.batch.batch_settings import BatchSettings
from orchestrator.apps.batch.request import BatchRejected, BatchRequest, check_request
from orchestrator.apps.batch.runner import build_repository
from orchestrator.config import QueueConfig
from orchestrator.queues import ensure_group

__all__ = [
    "BatchExists",
    "Submitted",
    "build_payload",
    "parse_params",
    "prepare",
    "submit",
]


class BatchExists(Exception):
    """The batch id is taken."""


@dataclass(frozen=True, slots=True)
class Submitted:
    batch_id: str
    symbols: int
    shards: int
    stream: str


def parse_params(items: Sequence[str]) -> dict[str, float]:
    """``NAME=NUMBER`` items; ``BatchRejected`` names a bad one."""
    params: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            params[name.strip()] = float(value)
        except ValueError:
            raise BatchRejected(f"--param: expected NAME=NUMBER, got {item!r}") from None
    return params


def prepare(
    payload: dict[str, Any], settings: BatchSettings, cwd: Path, batch_id: str
) -> BatchRequest:
    """Read and check ``payload`` as the worker will (a universe file is read
    here, relative to ``cwd``, and its symbols are sent with the job)."""
    request = BatchRequest.from_payload(payload, batch_id, settings, cwd)
    # When the data lives on the workers' hosts only, the formula is still checked.
    visible = Path(settings.data_root).is_dir()
    check_request(request, build_repository(settings) if visible else None)
    return request


def submit(
    client: redis.Redis,
    queue: QueueConfig,
    request: BatchRequest,
    shard_size: int,
    keep_s: float,
) -> Submitted:
    """Queue ``request`` as shards of at most ``shard_size`` symbols (0: one)."""
    total = len(request.symbols)
    shards = request.split(shard_size)
    ensure_group(client, queue)
    fields = batch_fields(shards[0], total, queue.stream)
    payloads = [s.payload() for s in shards]
    if not BatchLedger(client, keep_s).register(fields, queue.stream, payloads):
        raise BatchExists(f"batch id {request.batch_id!r} exists already: choose another --id")
    return Submitted(request.batch_id, total, len(shards), queue.stream)


def build_payload(options: Mapping[str, Any]) -> dict[str, Any]:
    """The job payload from ``batch submit``'s options (``symbols``,
    ``universe``, ``timeframe``, ``formula``, ``params``, ``start``, ``end``,
    ``timeout``, ``memory_mb``, ``last_bar_only``): ``--symbols`` may repeat
    and hold commas, ``--param NAME=NUMBER`` may repeat."""
    payload: dict[str, Any] = {
        "timeframe": options["timeframe"],
        "formula": options["formula"],
        "parameters": parse_params(options.get("params", ())),
        "last_bar_only": bool(options.get("last_bar_only", False)),
    }
    if symbols := options.get("symbols"):
        payload["symbols"] = [s for item in symbols for s in item.replace(",", " ").split()]
    if options.get("universe") is not None:
        payload["universe"] = options["universe"]
    optional = {k: options.get(k) for k in ("start", "end", "timeout", "memory_mb")}
    payload.update({k: v for k, v in optional.items() if v is not None})
    return payload

"""Operator control of a queue, kept in Redis so every host obeys it.

``orchestrator pause|resume|drain QUEUE`` and ``orchestrator scale QUEUE N
| --reset`` write ``orch:control:<queue>``; every spawner reads it with its
tick's one round trip, so all hosts follow within a tick, and a restarted
spawner finds it there.

- **paused**: no worker starts; live ones are asked to give their slot up
  (they finish the job in hand and exit). Entries stay in the queue.
- **draining**: no new entries are taken; what workers already hold (read
  ahead, or parked from a gone worker) is finished, by workers that read
  their own pending entries only. Once nothing is held the queue is
  **drained** (said in the log and ``status``); it then stays so until
  resumed.
- **scale N**: the queue's ``max_concurrent`` on every host, until reset.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis

from orchestrator import codec, keys

PAUSED, DRAINING, SCALE = "paused", "draining", "scale"


@dataclass(frozen=True, slots=True)
class Control:
    paused: bool = False
    draining: bool = False
    scale: int | None = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Control:
        scale = fields.get(SCALE)
        return cls(
            paused=fields.get(PAUSED) == "1",
            draining=fields.get(DRAINING) == "1",
            scale=int(scale) if scale and scale.isdigit() else None,
        )

    @property
    def holds_back(self) -> bool:
        """No new work starts (paused or draining)."""
        return self.paused or self.draining

    def describe(self) -> str:
        parts = ["paused" if self.paused else "draining" if self.draining else ""]
        if self.scale is not None:
            parts.append(f"scaled to {self.scale}")
        return ", ".join(p for p in parts if p)


def pause(client: redis.Redis, queue: str) -> None:
    client.hset(keys.control(queue), mapping={PAUSED: "1", "at": f"{time.time():.3f}"})


def drain(client: redis.Redis, queue: str) -> None:
    client.hset(keys.control(queue), mapping={DRAINING: "1", "at": f"{time.time():.3f}"})


def resume(client: redis.Redis, queue: str) -> None:
    client.hdel(keys.control(queue), PAUSED, DRAINING)


def scale(client: redis.Redis, queue: str, workers: int | None) -> None:
    if workers is None:
        client.hdel(keys.control(queue), SCALE)
    else:
        client.hset(keys.control(queue), mapping={SCALE: str(workers), "at": f"{time.time():.3f}"})


def read(client: redis.Redis, queue: str) -> Control:
    raw = client.hgetall(keys.control(queue))
    return Control.from_fields({codec.text(k): codec.text(v) for k, v in raw.items()})

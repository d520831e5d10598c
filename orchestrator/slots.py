"""Global slots: at most ``global_max_concurrent`` workers of a queue across
every spawner sharing the Redis.

Before a spawner starts workers of such a queue it takes a slot for each
(``lua/slots.lua``: atomic, so the cap is exact under contention); a worker's
slot is released when it is gone. A slot is held while its host's
heartbeat lives (``orch:hosts``, renewed every tick): the slots of a host
whose heartbeat has expired are freed by the next spawner that takes one,
never before. A spawner frees its own slots that no worker holds: a start
that failed at once, and (when it adopts its predecessor's workers) those
of workers gone with a killed spawner of the same host name. Each tick a
spawner also publishes how many workers of the queue it wants
(``orch:demand:<queue>``, written by ``queues.TickProbe`` in the tick's one
round trip), so a host under its fair share (the cap over the hosts that want slots) is
served before one over it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis

from orchestrator import keys
from orchestrator.config import QueueConfig
from orchestrator.scripts import load_lua


class GlobalSlots:
    def __init__(self, client: redis.Redis, host: str) -> None:
        self.client = client
        self.host = host
        self._script = client.register_script(load_lua("slots.lua"))

    def take(self, q: QueueConfig, consumers: Sequence[str]) -> int:
        """Slots for the first consumers that may have one; how many."""
        return self._call("take", q, consumers)

    def adopt(self, q: QueueConfig, consumers: Sequence[str]) -> int:
        """Make these running workers (adopted after a restart) this host's
        slots of the queue, and free its others (workers gone with the
        killed spawner before)."""
        return self._call("adopt", q, consumers)

    def release(self, q: QueueConfig, consumers: Sequence[str]) -> int:
        return self._call("release", q, consumers)

    def _call(self, mode: str, q: QueueConfig, consumers: Sequence[str]) -> int:
        if q.global_max_concurrent is None or (not consumers and mode != "adopt"):
            return len(consumers) if mode != "release" else 0
        argv: list[str | int] = [mode, self.host, q.global_max_concurrent, f"{time.time():.3f}"]
        argv += consumers
        keys_ = [keys.slots(q.name), keys.HOSTS, keys.demand(q.name)]
        return int(self._script(keys=keys_, args=argv))

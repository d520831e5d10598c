"""The seed's API of the spawner: count, check, start and stop one queue's workers.

``WorkerSpawner`` keeps these four methods of seed 004 (``spawner.
get_active_worker_count("ai_processing")`` and so on) for programs that
drive a spawner themselves; the loop never calls them. They obey the same
rules as the loop: a queue's ``max_concurrent`` and global slots, the host's
``max_total_workers`` and memory, backoff and cooldown.
"""

from __future__ import annotations

import time

from orchestrator.config import Config
from orchestrator.fleet import StopReason, Worker, WorkerFleet
from orchestrator.memory import HostMemory
from orchestrator.queuestate import QueueState
from orchestrator.staffing import Staffing
from orchestrator.workforce import Workforce


class SeedAPI:
    """A mixin of ``WorkerSpawner``: the names below are the spawner's."""

    config: Config
    queues: dict[str, QueueState]
    fleet: WorkerFleet
    workforce: Workforce
    staffing: Staffing
    memory: HostMemory
    stopping: bool

    def get_active_worker_count(self, queue: str) -> int:
        return self.fleet.count(queue)

    def can_spawn_worker(self, queue: str) -> bool:
        """Could one more worker of ``queue`` start right now?"""
        state = self.queues.get(queue)
        if state is None or state.retired or self.stopping or not self.memory.ok:
            return False
        if len(self.fleet) >= self.config.spawner.max_total_workers:
            return False
        return self.staffing.room(queue, time.monotonic()) > 0

    def spawn_worker(self, queue: str, parked_share: int = 0) -> Worker | None:
        """Start one worker of ``queue`` if allowed; its lease is recorded."""
        if not self.can_spawn_worker(queue):
            return None
        started = self.staffing.start(self.queues[queue].config, [parked_share])
        return started[0] if started else None

    def terminate_worker(
        self, queue: str, worker_id: str | None = None, reason: StopReason = StopReason.OPERATOR
    ) -> int:
        """SIGTERM one worker of ``queue`` (or all); SIGKILL follows after grace."""
        q = self.queues[queue].config
        chosen = [w for w in self.fleet.of_queue(queue) if worker_id in (None, w.worker_id)]
        return sum(1 for w in chosen if self.workforce.terminate(w, reason, q))

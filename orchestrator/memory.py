"""Memory policing: the host's, and each worker tree's.

No worker starts while host memory (psutil) is above ``max_memory_percent``
(``HostMemory``, which logs once per change of state); a worker whose
process tree holds more resident memory than its queue's ``max_memory_mb``
is stopped like an overdue one (``over_cap``, ``stop_over_cap``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import psutil

from orchestrator import procs
from orchestrator.fleet import StopReason, Worker
from orchestrator.messages import SpawnerLog

if TYPE_CHECKING:
    from orchestrator.config import QueueConfig
    from orchestrator.workforce import Workforce


class HostMemory:
    def __init__(self, log: SpawnerLog) -> None:
        self.log = log
        self.ok = True

    def check(self, max_percent: float) -> bool:
        """Is host memory at or below ``max_percent``? Logged when it changes."""
        percent = psutil.virtual_memory().percent
        ok = percent <= max_percent
        if ok != self.ok:
            self.log.memory(ok, percent, max_percent)
        self.ok = ok
        return ok


def over_cap(workers: Iterable[Worker], cap_mb: Callable[[Worker], int | None]) -> list[Worker]:
    """Workers (not already being stopped) whose tree is over their queue's cap."""
    found = []
    for w in workers:
        cap = cap_mb(w)
        running = w.stop_reason in (None, StopReason.YIELD)
        if cap and running and procs.tree_rss_bytes(w.pid) > cap * 2**20:
            found.append(w)
    return found


def stop_over_cap(workforce: Workforce, queue_of: Callable[[str], QueueConfig]) -> None:
    """Stop the workers over their queue's ``max_memory_mb`` (SIGTERM, then
    SIGKILL of the tree after ``stop_grace``)."""
    for w in over_cap(workforce.fleet, lambda w: queue_of(w.queue).max_memory_mb):
        workforce.terminate(w, StopReason.MEMORY, queue_of(w.queue))

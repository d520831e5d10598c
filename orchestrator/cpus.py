"""How many CPUs this process may use: what pools are sized from.

Affinity-aware (``taskset``, cgroup cpusets), so a worker confined to some
cores does not start a process per core of the host. Imports nothing heavy:
config parsing uses it.
"""

from __future__ import annotations

import os

__all__ = ["usable_cpus"]


def usable_cpus() -> int:
    """CPUs this process may run on, at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)

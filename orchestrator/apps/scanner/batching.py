"""The adaptive read size: how many entries the scanner asks XREADGROUP for.

Seed 000 read a fixed 50. Here a read that comes back full means the stream
holds more than we ask for: the next read asks for twice as many (fewer round
trips while catching up). A read that comes back less than half full means we
are caught up: the next asks for half as many (smaller batches, lower latency
per batch), never less than what just came. Always within [low, high].
"""

from __future__ import annotations

__all__ = ["next_read_size"]


def next_read_size(current: int, got: int, low: int, high: int) -> int:
    """The COUNT for the next read after asking ``current`` and getting ``got``."""
    if got >= current:
        wanted = current * 2
    elif got * 2 < current:
        wanted = max(got, current // 2)
    else:
        wanted = current
    return max(low, min(high, wanted))

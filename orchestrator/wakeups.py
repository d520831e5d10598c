"""When the spawner's loop wakes: a signal, a watched stream, or a deadline.

The loop sleeps in one ``select`` on the signal pipe
(``procs.SignalWakeup``) and the stream watch's outstanding XREAD
(``queues.StreamWatch``), until the earliest moment something is due
without either: a worker's deadline or kill, the end of a backoff or of a
cooling slot, the next tick or status line. Never sooner than
``MIN_TICK_INTERVAL_S``; while stopping, every ``STOPPING_POLL_S``.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterable

MIN_TICK_INTERVAL_S = 0.005
STOPPING_POLL_S = 0.05  # stopping: how often the workers' exits are looked at
NOTHING_DUE_S = 3600.0


def next_deadline(now: float, due: Iterable[float]) -> float:
    """The earliest of ``due`` (monotonic), at least ``MIN_TICK_INTERVAL_S``
    from ``now``; an hour away when nothing is due."""
    return max(min([now + NOTHING_DUE_S, *due]), now + MIN_TICK_INTERVAL_S)


def sleep_until(deadline: float, fds: Iterable[int | None], stopping: bool) -> None:
    """Sleep until ``deadline`` (monotonic) or one of ``fds`` is readable
    (None: not open now); a signal cuts it short too."""
    timeout = max(0.0, deadline - time.monotonic())
    if stopping:
        timeout = min(timeout, STOPPING_POLL_S)
    with contextlib.suppress(InterruptedError):
        select.select([fd for fd in fds if fd is not None], [], [], timeout)

"""Cutting a running shard short: on SIGTERM/SIGINT, and before the deadline.

The worker runtime's stop signal handler lets the job in hand finish, which
for a shard of thousands of symbols may take far longer than the spawner's
``stop_grace``. While a shard runs, ``ShardGuard`` puts its own handler in
front of the runtime's (which it still calls, so the runtime takes no more
work): the engine is aborted, its processes are killed, and the runner
gives the shard back. A timer does the same shortly before ``ORCH_DEADLINE``
(``max_runtime``), before the spawner's own SIGTERM.

``engine.abort()`` is called from a short-lived thread, not from the signal
handler itself: the handler runs on the main thread, which may hold the
pool's lock at that moment.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from types import FrameType
from typing import Any

__all__ = ["DEADLINE_MARGIN_S", "ShardGuard", "StopCause"]

DEADLINE_MARGIN_S = 2.0  # the shard stops this long before ORCH_DEADLINE
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopCause(StrEnum):
    SIGNAL = "signal"
    DEADLINE = "deadline"


class ShardGuard:
    """``with ShardGuard(engine.abort, deadline):`` around one shard's run."""

    def __init__(self, abort: Callable[[], None], deadline: float) -> None:
        self.abort = abort
        self.deadline = deadline  # epoch seconds
        self.cause: StopCause | None = None
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._timer: threading.Timer | None = None

    def __enter__(self) -> ShardGuard:
        for signum in _SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)
        delay = max(0.0, self.deadline - DEADLINE_MARGIN_S - time.time())
        self._timer = threading.Timer(delay, self._stop, args=(StopCause.DEADLINE,))
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        near_deadline = time.time() >= self.deadline - DEADLINE_MARGIN_S - 0.5
        cause = StopCause.DEADLINE if near_deadline else StopCause.SIGNAL
        threading.Thread(target=self._stop, args=(cause,), daemon=True).start()
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)  # the runtime: take no more work

    def _stop(self, cause: StopCause) -> None:
        if self.cause is None:
            self.cause = cause
        self.abort()

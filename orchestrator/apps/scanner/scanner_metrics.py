"""The pool's counters, as the dict the scanner publishes and logs.

Counts are ticks unless the name says batches: ``submitted`` (accepted by
``submit``), ``completed`` (processed and reported), ``skipped_backlog``
(shed by ``on_backlog_full: shed_oldest``, reported as shed), ``invalid``
(unparseable, reported with a reason), ``failed`` (given up after repeated
crashes), ``alerts`` (raised), ``suppressed`` (held back by the cool-off),
restarts by cause, and ``ticks_per_s`` over the last ``RATE_WINDOW_S``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

RATE_WINDOW_S = 10.0
_SAMPLE_EVERY_S = 0.25


@dataclass(slots=True)
class PoolMetrics:
    submitted: int = 0
    completed: int = 0
    skipped_backlog: int = 0
    invalid: int = 0
    failed: int = 0
    alerts: int = 0
    suppressed: int = 0
    crash_restarts: int = 0
    memory_restarts: int = 0
    stall_restarts: int = 0
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def sample(self, now_s: float) -> None:
        """Remember (time, completed) at most every 0.25 s, for ``ticks_per_s``."""
        samples = self.samples
        if samples and now_s - samples[-1][0] < _SAMPLE_EVERY_S:
            return
        samples.append((now_s, self.completed))
        while len(samples) > 2 and now_s - samples[0][0] > RATE_WINDOW_S:
            samples.popleft()

    def ticks_per_s(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "submitted": self.submitted,
            "completed": self.completed,
            "skipped_backlog": self.skipped_backlog,
            "invalid": self.invalid,
            "failed": self.failed,
            "alerts": self.alerts,
            "suppressed": self.suppressed,
            "crash_restarts": self.crash_restarts,
            "memory_restarts": self.memory_restarts,
            "stall_restarts": self.stall_restarts,
            "ticks_per_s": round(self.ticks_per_s(), 1),
        }

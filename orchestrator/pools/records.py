"""What the parent knows of each worker and of the running batch.

A ``PoolWorker`` is a forked process as the parent sees it: its socket, its
state, the tasks it holds (``inflight``, the running one first) and what
the stall probe last measured. A ``PoolRun`` is one ``run``: the tasks not yet
given out (``pending``), the outcomes not yet yielded, and which tasks are
done (a task taken back from a stalled worker may run twice; its first
outcome counts).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

import psutil

from orchestrator.pools.pooltypes import Outcome, OutcomeKind, Task
from orchestrator.pools.treerss import TreeRss
from orchestrator.pools.wire import Channel

__all__ = ["Assigned", "PoolRun", "PoolWorker", "WorkerState"]


class WorkerState(StrEnum):
    STARTING = "starting"  # forked, running worker_init
    READY = "ready"
    EXITED = "exited"  # its socket closed; waiting for the launcher's exit status
    DYING = "dying"  # killed or retired by us; nothing more is expected of it


@dataclass(slots=True, eq=False)
class Assigned:
    seq: int
    task: Task
    sent_s: float = 0.0
    started_s: float = 0.0
    done: bool = False  # its outcome is out; a second run (see revoke_queued) is ignored


@dataclass(slots=True, eq=False)
class PoolWorker:
    pid: int
    channel: Channel
    proc: psutil.Process
    spawned_s: float
    state: WorkerState = WorkerState.STARTING
    ready: bool = False  # has finished worker_init
    batch_id: int = -1  # whose context it holds
    inflight: deque[Assigned] = field(default_factory=deque)
    next_sample_s: float = 0.0
    cpu_mark: tuple[float, float] | None = None  # (monotonic, cpu seconds)
    stalled: bool = False
    stolen: dict[int, Assigned] = field(default_factory=dict)  # revoked from its queue
    rss: TreeRss | None = None  # its memory probe, opened at the first sample

    @property
    def live(self) -> bool:
        return self.state in (WorkerState.STARTING, WorkerState.READY)

    def new_head(self) -> None:
        """A new task runs; its memory is sampled on the worker's own period
        (``next_sample_s`` is kept: one sample per task would cost the parent
        more than a task of a few milliseconds)."""
        self.cpu_mark, self.stalled = None, False


@dataclass(slots=True, eq=False)
class PoolRun:
    id: int
    context_blob: bytes
    pending: deque[Assigned]
    unfinished: int
    outcomes: deque[Outcome] = field(default_factory=deque)
    done_seqs: set[int] = field(default_factory=set)

    def finish(
        self,
        item: Assigned,
        kind: OutcomeKind,
        value: object = None,
        error: str | None = None,
        elapsed_s: float = 0.0,
    ) -> None:
        """``item``'s outcome, unless it has one (a task that ran twice)."""
        if item.done:
            return
        item.done = True
        self.done_seqs.add(item.seq)
        self.outcomes.append(Outcome(item.task.key, kind, value, error, elapsed_s))
        self.unfinished -= 1

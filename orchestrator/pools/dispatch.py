"""Giving a batch's tasks to workers, and taking them back.

``dispatch`` fills the workers' queues (how deep: ``decisions.dispatch_depth``;
who gets how many: ``decisions.plan_grants``), one message per worker;
``revoke_queued`` takes back the tasks queued behind a stalled worker's
running one; ``requeue`` gives back all a
worker held (it died or was killed). None of them waits: a worker whose
socket fails is handed to ``lost`` and the launcher reports how it ended.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Sequence

from orchestrator.pools.decisions import plan_grants
from orchestrator.pools.records import Assigned, PoolRun, PoolWorker, WorkerState

__all__ = ["assign", "dispatch", "requeue", "revoke_queued"]

Lost = Callable[[PoolWorker], None]


def dispatch(
    batch: PoolRun, live: Sequence[PoolWorker], slots: int, max_depth: int, now: float, lost: Lost
) -> None:
    """Give out pending tasks as ``decisions.plan_grants`` says: a first
    task to idle workers while fewer than ``slots`` hold some, then every
    running, unstalled worker topped up to ``max_depth`` but never beyond
    its share of what is left. What a worker gets goes out in one message."""
    if not batch.pending:
        return
    ready = [w for w in live if w.state is WorkerState.READY and not w.stalled]
    holders = sum(1 for w in live if w.inflight)
    held = [len(w.inflight) for w in ready]
    grants = plan_grants(held, holders, slots, len(batch.pending), max_depth)
    for worker, has, gets in zip(ready, held, grants, strict=True):
        if gets > has:
            assign(worker, batch, gets - has, now, lost)


def assign(worker: PoolWorker, batch: PoolRun, n: int, now: float, lost: Lost) -> None:
    """Send up to ``n`` pending tasks (and the batch context, once) to ``worker``."""
    items: list[Assigned] = []
    while batch.pending and len(items) < n:
        item = batch.pending.popleft()
        if not item.done:  # done: a stolen task its first worker ran after all
            items.append(item)
    if not items:
        return
    try:
        if worker.batch_id != batch.id:
            worker.channel.send(("context", batch.context_blob))
            worker.batch_id = batch.id
        worker.channel.send(("tasks", [(item.seq, item.task.payload) for item in items]))
    except OSError:  # it died; the launcher will tell us how
        batch.pending.extendleft(reversed(items))
        lost(worker)
        worker.state = WorkerState.EXITED
        return
    for item in items:
        item.sent_s = now
    if not worker.inflight:
        items[0].started_s = now
        worker.new_head()
    worker.inflight.extend(items)


def revoke_queued(worker: PoolWorker, batch: PoolRun | None) -> None:
    """A stalled worker's queued tasks go back to the queue, and it is
    told to drop them. Should it resume and start one before it reads
    that, the task runs twice; the first outcome counts."""
    followers = list(worker.inflight)[1:]
    worker.inflight = deque(list(worker.inflight)[:1])
    with contextlib.suppress(OSError):
        worker.channel.send(("revoke", [item.seq for item in followers]))
    worker.stolen.update((item.seq, item) for item in followers)
    if batch is not None:
        batch.pending.extendleft(reversed(followers))


def requeue(worker: PoolWorker, batch: PoolRun | None) -> None:
    """Everything ``worker`` held goes back to the front of the queue."""
    if batch is not None:
        batch.pending.extendleft(reversed(worker.inflight))
    worker.inflight.clear()

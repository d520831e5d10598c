"""Per-partition bookkeeping of batches: the pool's memory of what is where.

A batch moves ``waiting`` (accepted, still in the parent) -> ``sent`` (in the
pipe or being processed) -> done. Done batches since the last checkpoint form
the ``tail``: the last checkpoint (the process's pickled state after some
batch) plus the tail, replayed muted, rebuild a replacement process to
exactly the state the lost one had after its last reported batch. Batches
still ``sent`` go back to the front of ``waiting`` and are processed again by
the replacement; as their results were never reported, nothing is reported
twice and nothing is lost. The tail is bounded: a checkpoint is requested
every ``checkpoint_batches`` dispatches, and a checkpoint clears the tail.

Pure data and decisions, no processes: tested without any.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from orchestrator.apps.scanner.frames import Flag, TickId

GIVE_UP_AFTER_CRASHES = 3


@dataclass(slots=True)
class TickBatch:
    id: int
    ids: list[TickId]
    payload: bytes
    internal: bool = False  # warm-up: processed muted, never reported
    flags: Flag = Flag.NONE

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(slots=True)
class Ledger:
    partition: int
    checkpoint_every: int
    waiting: deque[TickBatch]
    sent: dict[int, TickBatch]
    tail: list[TickBatch]
    checkpoint: bytes = b""
    dispatched_since_checkpoint: int = 0
    crashes_in_a_row: int = 0
    last_progress_s: float = 0.0

    @classmethod
    def empty(cls, partition: int, checkpoint_every: int) -> Ledger:
        return cls(partition, checkpoint_every, deque(), {}, [])

    @property
    def in_flight(self) -> int:
        return len(self.waiting) + len(self.sent)

    def next_to_send(self, window: int, now_s: float) -> TickBatch | None:
        """The next waiting batch if fewer than ``window`` are with the process."""
        if not self.waiting or len(self.sent) >= window:
            return None
        batch = self.waiting.popleft()
        if not self.sent:
            self.last_progress_s = now_s
        self.dispatched_since_checkpoint += 1
        if self.dispatched_since_checkpoint >= self.checkpoint_every:
            self.dispatched_since_checkpoint = 0
            batch.flags |= Flag.CHECKPOINT
        self.sent[batch.id] = batch
        return batch

    def complete(self, batch_id: int, checkpoint: bytes | None, now_s: float) -> TickBatch | None:
        """Record a result; the batch, or None if it is not ours (given up)."""
        batch = self.sent.pop(batch_id, None)
        if batch is None:
            return None
        self.crashes_in_a_row = 0
        self.last_progress_s = now_s
        if checkpoint is not None:
            self.checkpoint = checkpoint
            self.tail.clear()
        else:
            self.tail.append(batch)
        return batch

    def after_crash(self) -> TickBatch | None:
        """Requeue what the lost process held; the batch given up on, if any.

        After ``GIVE_UP_AFTER_CRASHES`` crashes without a single result, the
        oldest batch it held is presumed to kill the process and is given up
        (reported as failed), so one poison batch cannot stop the partition.
        """
        self.crashes_in_a_row += 1
        failed = None
        if self.sent and self.crashes_in_a_row % GIVE_UP_AFTER_CRASHES == 0:
            failed = self.sent.pop(next(iter(self.sent)))
        self.requeue_sent()
        return failed

    def requeue_sent(self) -> None:
        """Put the batches the process held back in front of the waiting ones."""
        self.waiting.extendleft(reversed(self.sent.values()))
        self.sent.clear()

    def oldest_waiting(self) -> TickBatch | None:
        return self.waiting[0] if self.waiting else None

    def stalled(self, now_s: float, timeout_s: float) -> bool:
        """The process holds batches and has not answered for ``timeout_s``."""
        return bool(self.sent) and now_s - self.last_progress_s > timeout_s

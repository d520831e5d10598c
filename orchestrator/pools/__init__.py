"""A process pool whose tasks can time out, crash or blow their memory cap.

``concurrent.futures.ProcessPoolExecutor`` cannot keep a per-task timeout
(a running call can be neither cancelled nor killed) and one dead process
breaks the whole pool. ``KillablePool`` is the small alternative this
project uses for CPU-bound batches:

* **Workers** are long-lived processes, each with its own socket to the
  parent. The parent keeps each worker's queue just deep enough to cover
  its own reaction time (``dispatch_depth``: up to ``prefetch`` tasks when
  they take milliseconds, one when they take longer), so a worker never
  waits for the parent and no task waits long behind a slow one. It knows
  which task each worker is running and since when (workers report each
  task's end with a monotonic timestamp). While every worker has work
  queued, the parent lets results pile up for a few milliseconds
  (``linger_time``): one wake-up then serves several, which matters on a
  machine whose cores the workers already fill.
* **A task that overruns** ``timeout_s`` (sleep, busy loop, blocked
  syscall), or whose worker tree's RSS exceeds ``memory_limit_mb``, gets its
  outcome at once; the worker's process tree is snapshotted and SIGKILLed
  (an abandoned task gets no grace) and a fresh worker takes its place.
* **A worker that dies** (``os._exit``, abort, the OOM killer) fails only
  the task it was running, with its exit code or signal; the tasks queued
  behind it go to other workers.
* **Stalls do not waste cores.** A task that has used almost no CPU for
  ``stall_after_s`` (it sleeps or waits on I/O) frees its CPU slot: up to
  ``max_spare`` extra workers (default: the pool's size, at least
  ``MIN_SPARE``) run while others are stalled, so a handful of
  hanging tasks costs their timeout in latency, not in throughput; the
  tasks queued behind a stalled one go back to the queue (the worker is
  told to drop them; if it resumes first and runs one anyway, that task
  runs twice and its first outcome counts: tasks should be idempotent). A
  ``standby`` worker, started and idle, takes over at once from a worker
  that stalls, is killed or dies (its own replacement is forked meanwhile).

Start method: neither ``fork`` (the parent may have threads, e.g. a
heartbeat, and forking a threaded process can deadlock the child on a lock
some other thread held), nor ``spawn`` (every replacement would pay a fresh
interpreter plus the numeric imports, about half a second of CPU), nor
multiprocessing's ``forkserver`` (a process-wide singleton that inherits
the parent's environment at first use and outlives the pool). Each pool
starts its own **launcher**: a clean interpreter started with fork+exec,
with the pool's environment (one thread per numeric library and an
allocator that keeps its memory, see ``WORKER_ENV``), which imports the
``preload`` modules once and then forks a worker whenever the parent asks,
in a few milliseconds. The launcher never runs task code, so it holds no
lock when it forks (the idle helper threads that importing polars starts
hold none either). It reaps the workers and reports their exit status; the
parent kills them by pid. Closing the pool tells the launcher to SIGKILL
what is left and exit, and the parent sweeps the tree it snapshotted
before. If the launcher itself dies, its workers are killed, their tasks
go back to the queue and a new launcher starts.

A ``KillablePool`` belongs to one thread. ``abort()`` is the one method
any thread may call: it makes the owner's ``run`` stop, kill every process
and raise ``PoolAborted``.

The package, one module per concept: ``model`` (settings, tasks, outcomes,
errors), ``decisions`` (the pure choices: workers, queue depth, linger),
``channel`` (the wire format), ``worker`` (the worker side), ``launcher``
(the launcher process, and the parent's handle on it), ``records`` (what
the parent knows of workers and the batch), ``dispatch`` (giving tasks out
and taking them back), ``probes`` (stall and memory sampling), ``fleet``
(the processes) and ``pool`` (``KillablePool``).
"""

from __future__ import annotations

from orchestrator.pools.decisions import (
    MAX_LINGER_S,
    REACTION_S,
    WorkerPlan,
    dispatch_depth,
    linger_time,
    plan_grants,
    plan_workers,
)
from orchestrator.pools.forker import launcher_main
from orchestrator.pools.killable import MAX_START_FAILURES, KillablePool
from orchestrator.pools.poolchild import describe_exception
from orchestrator.pools.pooltypes import (
    RETAIN_MEMORY_ENV,
    SINGLE_THREAD_ENV,
    WORKER_ENV,
    Outcome,
    OutcomeKind,
    PoolAborted,
    PoolError,
    PoolSettings,
    Task,
    default_pool_size,
)
from orchestrator.pools.probes import STALL_CPU_FRACTION

__all__ = [
    "MAX_LINGER_S",
    "MAX_START_FAILURES",
    "REACTION_S",
    "RETAIN_MEMORY_ENV",
    "SINGLE_THREAD_ENV",
    "STALL_CPU_FRACTION",
    "WORKER_ENV",
    "KillablePool",
    "Outcome",
    "OutcomeKind",
    "PoolAborted",
    "PoolError",
    "PoolSettings",
    "Task",
    "WorkerPlan",
    "default_pool_size",
    "describe_exception",
    "dispatch_depth",
    "launcher_main",
    "linger_time",
    "plan_grants",
    "plan_workers",
]

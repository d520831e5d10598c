"""The worker side: what a pool worker process runs once forked.

``worker_main`` runs ``worker_init``, says it is ready, then serves tasks in
order: between two (at most every ``LOOK_EVERY_S``, and whenever its queue
is empty), it takes in what the parent sent (more tasks, a new batch
context, tasks revoked from its queue, stop). Each task's reply
carries its result or its error (``describe_exception``) and the monotonic
time it ended, by which the parent times the next one.

No process a task starts outlives it (``Leftovers``): the worker is a child
subreaper, so a task's orphans (a ``setsid`` daemon whose parent exited)
re-parent to it rather than to init, and after each task whatever is still
running below the worker is SIGKILLed and reaped. The worker's processes
also carry its tag (``POOL_TAG_VARIABLE``): the parent finds by it any that
escaped its tree when it kills the worker.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.pools.pooltypes import POOL_TAG_VARIABLE
from orchestrator.pools.wire import Channel
from orchestrator.procs import set_subreaper, snapshot_tree

__all__ = ["Leftovers", "describe_exception", "resolve", "worker_main"]

_MAX_SWEEPS = 20  # rounds of kill-and-reap; each catches the orphans of the last
LOOK_EVERY_S = 0.005  # with tasks queued, how often a worker reads what the parent sent


@dataclass(frozen=True, slots=True)
class _BrokenContext:
    error: str


def resolve(path: str) -> Callable[..., Any]:
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{path} is not callable")
    return obj  # type: ignore[no-any-return]


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` (or just ``Type``), as task errors are reported."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Leftovers:
    """The processes a task left running below this worker, ended after it.

    Checking costs one ``pread`` of the main thread's ``children`` file (a
    fraction of a microsecond): orphans re-parent to the main thread of a
    subreaper. Children that a task started from another thread and left
    running are not seen here; the parent's kill of the worker's tree (and
    tag) ends them with the worker.
    """

    def __init__(self) -> None:
        set_subreaper()
        pid = os.getpid()
        try:
            self._fd = os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY)
        except OSError:  # no children file: look for the tree every time
            self._fd = -1

    def any(self) -> bool:
        if self._fd < 0:
            return len(snapshot_tree(os.getpid())) > 1
        try:
            return bool(os.pread(self._fd, 64, 0).strip())
        except OSError:
            return True

    def end(self) -> int:
        """SIGKILL and reap everything below this worker; how many rounds it took."""
        rounds = 0
        while rounds < _MAX_SWEEPS and self.any():
            rounds += 1
            below = snapshot_tree(os.getpid())[1:]  # all at once: none forks away
            for proc in below:
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGKILL)
            for proc in below:  # our children die; theirs re-parent to us: next round
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(proc.pid, 0)
        return rounds


def worker_main(
    sock: socket.socket, target: Callable[..., Any], init: Callable[[], Any] | None
) -> int:
    os.environ[POOL_TAG_VARIABLE] = f"{os.environ.get(POOL_TAG_VARIABLE, '')}w{os.getpid()}"
    leftovers = Leftovers()
    channel = Channel(sock)
    if init is not None:
        init()
    try:
        channel.send(("ready",))
        return _serve_tasks(channel, target, leftovers)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the pool let us go, or is gone


def _serve_tasks(channel: Channel, target: Callable[..., Any], leftovers: Leftovers) -> int:
    """Run tasks in order; take in what the parent sent (more tasks, a new
    context, tasks revoked from this queue, stop) whenever the queue is
    empty (waiting for it) and between two tasks, at most every
    ``LOOK_EVERY_S``: sooner would only cost a system call per task of a
    few milliseconds, for nothing (a revoke follows a task that ran far
    longer; new tasks come before the queue runs out)."""
    inbox = _Inbox()
    looked_s = -LOOK_EVERY_S
    while True:
        if not inbox.queue or time.monotonic() - looked_s >= LOOK_EVERY_S:
            if not inbox.take_in(channel):
                return 0
            looked_s = time.monotonic()
        if inbox.queue:
            seq, payload = inbox.queue.popleft()
            reply = _run_task(target, inbox.context, seq, payload)
            leftovers.end()  # before the reply: the next task starts clean
            _send_reply(channel, reply)


class _Inbox:
    """What the parent sent a worker: the batch context and the tasks queued."""

    def __init__(self) -> None:
        self.context: object = None
        self.queue: deque[tuple[int, object]] = deque()

    def take_in(self, channel: Channel) -> bool:
        """All that came (waiting for something while the queue is empty);
        False when told to stop, or when the parent is gone."""
        try:
            messages = [] if self.queue else [channel.receive()]
        except EOFError:
            return False
        messages += channel.receive_ready()  # all that came: a revoke may follow tasks
        for message in messages:
            if message[0] == "stop":
                return False
            if message[0] == "context":
                self.context = _load_context(message[1])
            elif message[0] == "tasks":
                self.queue.extend(message[1])
            elif message[0] == "revoke":
                revoked = set(message[1])
                self.queue = deque(item for item in self.queue if item[0] not in revoked)
        return not channel.eof


def _send_reply(channel: Channel, reply: tuple[str, int, bool, object, float, float]) -> None:
    try:
        channel.send(reply)
    except (BrokenPipeError, ConnectionResetError):
        raise
    except Exception as exc:  # the result does not pickle
        error = f"result could not be sent: {describe_exception(exc)}"
        channel.send(("done", reply[1], False, error, reply[4], reply[5]))


def _load_context(blob: bytes) -> object:
    try:
        return pickle.loads(blob)
    except Exception as exc:
        return _BrokenContext(f"batch context could not be loaded: {describe_exception(exc)}")


def _run_task(
    target: Callable[..., Any], context: object, seq: int, payload: object
) -> tuple[str, int, bool, object, float, float]:
    started = time.monotonic()
    ok, value = True, None
    if isinstance(context, _BrokenContext):
        ok, value = False, context.error
    else:
        try:
            value = target(context, payload)
        except BaseException as exc:  # SystemExit from a task is a failed task too
            ok, value = False, describe_exception(exc)
    finished = time.monotonic()
    return ("done", seq, ok, value, finished, finished - started)

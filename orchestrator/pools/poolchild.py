"""The worker side: what a pool worker process runs once forked.

``worker_main`` runs ``worker_init``, says it is ready, then serves tasks in
order: between two, it takes in what the parent sent (more tasks, a new
batch context, tasks revoked from its queue, stop). Each task's reply
carries its result or its error (``describe_exception``) and the monotonic
time it ended, by which the parent times the next one.
"""

from __future__ import annotations

import importlib
import pickle
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.pools.wire import Channel

__all__ = ["describe_exception", "resolve", "worker_main"]


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


def worker_main(
    sock: socket.socket, target: Callable[..., Any], init: Callable[[], Any] | None
) -> int:
    channel = Channel(sock)
    if init is not None:
        init()
    try:
        channel.send(("ready",))
        return _serve_tasks(channel, target)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the pool let us go, or is gone


def _serve_tasks(channel: Channel, target: Callable[..., Any]) -> int:
    """Run tasks in order; between two, take in what the parent sent
    (more tasks, a new context, tasks revoked from this queue, stop)."""
    context: object = None
    queue: deque[tuple[int, object]] = deque()
    while True:
        try:
            messages = [] if queue else [channel.receive()]  # idle: wait for something
        except EOFError:
            return 0
        messages += channel.receive_ready()  # all that came: a revoke may follow tasks
        for message in messages:
            if message[0] == "stop":
                return 0
            if message[0] == "context":
                context = _load_context(message[1])
            elif message[0] == "tasks":
                queue.extend(message[1])
            elif message[0] == "revoke":
                revoked = set(message[1])
                queue = deque(item for item in queue if item[0] not in revoked)
        if channel.eof:
            return 0
        if queue:
            seq, payload = queue.popleft()
            _send_reply(channel, _run_task(target, context, seq, payload))


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

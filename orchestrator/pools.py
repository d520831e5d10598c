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
  ``max_spare`` extra workers run while others are stalled, so a handful of
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
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import count
from types import MappingProxyType
from typing import Any

import psutil

from orchestrator.procs import ExitStatus, kill_tree, signal_tree, snapshot_tree

__all__ = [
    "RETAIN_MEMORY_ENV",
    "SINGLE_THREAD_ENV",
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
    "plan_workers",
]

SINGLE_THREAD_ENV: Mapping[str, str] = MappingProxyType(
    {
        "POLARS_MAX_THREADS": "1",
        "RAYON_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "VECLIB_MAXIMUM_THREADS": "1",
    }
)
"""One thread per numeric library, so N workers on N cores do not fight."""

RETAIN_MEMORY_ENV: Mapping[str, str] = MappingProxyType(
    {
        "MALLOC_MMAP_THRESHOLD_": str(16 << 20),
        "MALLOC_TRIM_THRESHOLD_": str(64 << 20),
    }
)
"""glibc keeps freed memory up to 64 MB instead of unmapping it: numpy
temporaries of a few hundred kB (an indicator over 19,000 bars) otherwise
map and fault in fresh pages every time, a third of a worker's CPU."""

WORKER_ENV: Mapping[str, str] = MappingProxyType({**SINGLE_THREAD_ENV, **RETAIN_MEMORY_ENV})
"""The default environment added for a pool's processes."""

STALL_CPU_FRACTION = 0.2
"""A running task using less than this share of one core is stalled."""

REACTION_S = 0.05
"""Work a worker should hold queued to cover the parent's reaction time,
which on a loaded machine (the parent waits for a core too) reaches tens of
milliseconds. Prefetching more only makes tasks wait behind a slow one."""

MAX_LINGER_S = 0.01
"""Longest the parent lets results pile up while every worker has work queued:
one wake-up then handles several results (the parent shares the cores)."""

MAX_START_FAILURES = 3
"""Workers dying before they are ready this many times in a row is fatal."""

MAX_LAUNCHER_RESTARTS = 3

_HEADER = struct.Struct("!I")
_PACKET_BYTES = 1 << 16
_BOOTSTRAP = (
    "import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
    "from orchestrator.pools import launcher_main; launcher_main(int(sys.argv[2]))"
)


def default_pool_size() -> int:
    """CPUs this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class PoolError(RuntimeError):
    """The pool itself failed (launcher or workers cannot start)."""


class PoolAborted(PoolError):
    """``abort()`` was called; every process of the pool is gone."""


class OutcomeKind(StrEnum):
    OK = "ok"
    ERROR = "error"  # the task raised; ``error`` holds "Type: message"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    DIED = "died"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """What a pool runs and how. ``target`` and ``worker_init`` are
    ``"package.module:function"`` paths, resolved in the launcher."""

    target: str  # called as target(context, payload) in a worker
    size: int = field(default_factory=default_pool_size)  # CPU slots
    preload: tuple[str, ...] = ()  # imported once by the launcher, before forking
    worker_init: str | None = None  # called once in each new worker
    env: Mapping[str, str] = field(default_factory=lambda: WORKER_ENV)  # added to os.environ
    prefetch: int = 16  # most tasks a worker holds; dispatch_depth picks fewer for long ones
    max_spare: int | None = None  # extra workers while others stall; None = size
    standby: int = 1  # idle, started workers kept to replace others at once
    stall_after_s: float | None = 0.1  # None: never count a task as stalled
    sample_interval_s: float = 0.05  # RSS sampling period of memory-capped tasks
    start_timeout_s: float = 60.0  # launcher preload, worker init
    close_grace_s: float = 2.0

    def __post_init__(self) -> None:
        if self.size < 1 or self.prefetch < 1:
            raise ValueError(f"size and prefetch must be >= 1, got {self.size}, {self.prefetch}")
        if (self.max_spare is not None and self.max_spare < 0) or self.standby < 0:
            raise ValueError(f"max_spare and standby must be >= 0, got {self}")

    @property
    def spare(self) -> int:
        return self.size if self.max_spare is None else self.max_spare


@dataclass(frozen=True, slots=True)
class Task:
    key: str  # the caller's name for the task, echoed in its outcome
    payload: object  # picklable; keep it small
    timeout_s: float | None = None  # from the moment the task starts running
    memory_limit_mb: float | None = None  # RSS of the worker's process tree


@dataclass(frozen=True, slots=True)
class Outcome:
    key: str
    kind: OutcomeKind
    value: object = None  # what target returned, when kind is OK
    error: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.kind is OutcomeKind.OK


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    start: int  # workers to start
    retire: int  # idle workers to let go
    slots: int  # workers that may hold tasks


def plan_workers(
    *,
    size: int,
    max_spare: int,
    standby: int,
    live: int,
    stalled: int,
    idle: int,
    has_pending: bool,
) -> WorkerPlan:
    """The workers a pool needs now.

    ``size`` may hold tasks, plus one per stalled worker (at most
    ``max_spare``) while tasks wait, so that ``size`` workers can use the
    CPU. ``standby`` more are kept started and idle, to take over at once
    from a worker that stalls, is killed or dies (and not to be forked and
    warmed up while the others compute).
    """
    slots = size + (min(stalled, max_spare) if has_pending else 0)
    wanted = slots + standby
    if live < wanted:
        return WorkerPlan(wanted - live, 0, slots)
    return WorkerPlan(0, min(idle, live - wanted), slots)


def dispatch_depth(task_s: float | None, prefetch: int) -> int:
    """Tasks a worker may hold: the running one, plus enough queued to last
    ``REACTION_S`` (more only makes them wait behind a slow task), at most
    ``prefetch``; all of ``prefetch`` while task durations are unknown."""
    if task_s is None:
        return prefetch
    return max(1, min(prefetch, 1 + int(REACTION_S / max(task_s, 1e-6))))


def linger_time(task_s: float | None, queued: Sequence[int]) -> float:
    """How long results may pile up before the parent looks: half the work
    the least busy worker still has queued behind its running task (``queued``
    holds each active worker's count), at most ``MAX_LINGER_S``; 0 when too
    short to matter."""
    if task_s is None or not queued:
        return 0.0
    linger = min(MAX_LINGER_S, 0.5 * min(queued) * task_s)
    return linger if linger >= MAX_LINGER_S / 10 else 0.0


# --------------------------------------------------------------- channel


class _Channel:
    """Length-prefixed pickles over a stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.eof = False
        self._buffer = bytearray()

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: object) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.sock.sendall(_HEADER.pack(len(data)) + data)

    def receive(self) -> Any:
        """Block for one message; ``EOFError`` when the peer is gone."""
        while (frame := self._next_frame()) is None:
            try:
                chunk = self.sock.recv(_PACKET_BYTES)
            except ConnectionResetError:  # closed with our replies unread
                chunk = b""
            if not chunk:
                raise EOFError
            self._buffer += chunk
        return pickle.loads(frame)

    def receive_ready(self, *, drain: bool = False) -> list[Any]:
        """Whole messages that have arrived, without blocking.

        A short read usually means the socket is empty; the selector
        reports it again if not. ``drain`` reads on until EOF or nothing.
        """
        while not self.eof:
            try:
                chunk = self.sock.recv(_PACKET_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
            self._buffer += chunk
            if len(chunk) < _PACKET_BYTES and not drain:
                break
        messages = []
        while (frame := self._next_frame()) is not None:
            try:
                messages.append(pickle.loads(frame))
            except Exception as exc:  # a result class the parent cannot import
                messages.append(("garbled", f"{type(exc).__name__}: {exc}"))
        return messages

    def _next_frame(self) -> bytes | None:
        if len(self._buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self._buffer)
        end = _HEADER.size + size
        if len(self._buffer) < end:
            return None
        frame = bytes(self._buffer[_HEADER.size : end])
        del self._buffer[:end]
        return frame

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------- worker process


@dataclass(frozen=True, slots=True)
class _BrokenContext:
    error: str


def _resolve(path: str) -> Callable[..., Any]:
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


def _worker_main(
    sock: socket.socket, target: Callable[..., Any], init: Callable[[], Any] | None
) -> int:
    channel = _Channel(sock)
    if init is not None:
        init()
    try:
        channel.send(("ready",))
        return _serve_tasks(channel, target)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the pool let us go, or is gone


def _serve_tasks(channel: _Channel, target: Callable[..., Any]) -> int:
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


def _send_reply(channel: _Channel, reply: tuple[str, int, bool, object, float, float]) -> None:
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


# ----------------------------------------------------- launcher process


@dataclass(frozen=True, slots=True)
class _LauncherConfig:
    preload: tuple[str, ...]
    target: str
    worker_init: str | None


def launcher_main(control_fd: int) -> None:
    """The launcher process (started by the pool with ``_BOOTSTRAP``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    control = socket.socket(fileno=control_fd)
    try:
        config: _LauncherConfig = pickle.loads(control.recv(_PACKET_BYTES))
        for module in config.preload:
            importlib.import_module(module)
        target = _resolve(config.target)
        init = _resolve(config.worker_init) if config.worker_init else None
    except BaseException:
        control.send(pickle.dumps(("failed", traceback.format_exc()[-8000:])))
        sys.exit(1)
    _Launchpad(control, target, init).serve()


class _Launchpad:
    """The launcher's loop: fork a worker per request, report exits."""

    def __init__(
        self, control: socket.socket, target: Callable[..., Any], init: Callable[[], Any] | None
    ) -> None:
        self.control = control
        self.target = target
        self.init = init
        self.children: set[int] = set()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self._send(("ready",))
        while True:
            readable, _, _ = select.select([self.control.fileno(), self.wake_r], [], [])
            if self.wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
                self._reap(block=False)
            if self.control.fileno() in readable and not self._serve_request():
                break
        for pid in list(self.children):
            signal_tree(snapshot_tree(pid), signal.SIGKILL)
        self._reap(block=True)

    def _serve_request(self) -> bool:
        try:
            message, fds, _, _ = socket.recv_fds(self.control, _PACKET_BYTES, 1)
        except ConnectionResetError:  # closed with our reports unread
            return False
        if message != b"spawn":
            return False  # "stop", or EOF: the pool is closing
        for fd in fds:
            pid = self._fork(fd)
            self.children.add(pid)
            self._send(("spawned", pid))
        return True

    def _fork(self, fd: int) -> int:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 70
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                self.control.close()
                os.close(self.wake_r)
                os.close(self.wake_w)
                code = _worker_main(socket.socket(fileno=fd), self.target, self.init)
            except BaseException:
                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        os.close(fd)
        return pid

    def _reap(self, *, block: bool) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            with contextlib.suppress(OSError):
                self._send(("exited", pid, status))

    def _send(self, message: object) -> None:
        self.control.send(pickle.dumps(message))


class _LauncherLost(Exception):
    pass


class _Launcher:
    """The parent's handle on its launcher process."""

    def __init__(self, popen: subprocess.Popen[bytes], control: socket.socket) -> None:
        self.popen = popen
        self.control = control
        self._exits: list[tuple[int, int]] = []

    @property
    def pid(self) -> int:
        return self.popen.pid

    def fileno(self) -> int:
        return self.control.fileno()

    @classmethod
    def start(cls, settings: PoolSettings, wake_fd: int) -> _Launcher:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [sys.executable, "-c", _BOOTSTRAP, _json_path(), str(theirs.fileno())]
        popen = subprocess.Popen(
            argv,
            env={**os.environ, **settings.env},
            stdin=subprocess.DEVNULL,
            pass_fds=(theirs.fileno(),),
            close_fds=True,
        )
        theirs.close()
        launcher = cls(popen, ours)
        config = _LauncherConfig(settings.preload, settings.target, settings.worker_init)
        ours.send(pickle.dumps(config))
        launcher._await_ready(settings.start_timeout_s, wake_fd)
        return launcher

    def _await_ready(self, timeout_s: float, wake_fd: int) -> None:
        readable, _, _ = select.select([self.control.fileno(), wake_fd], [], [], timeout_s)
        if self.control.fileno() not in readable:
            self.close(0.0)
            if wake_fd in readable:
                raise PoolAborted("aborted while the pool was starting")
            raise PoolError(f"the pool's launcher was not ready within {timeout_s:.0f}s")
        message = pickle.loads(self.control.recv(_PACKET_BYTES) or pickle.dumps(("failed", "")))
        if message[0] != "ready":
            self.close(0.0)
            raise PoolError(f"the pool's launcher failed to start:\n{message[1]}")

    def spawn(self) -> tuple[int, socket.socket]:
        """Ask for a new worker; its pid and our end of its socket."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            socket.send_fds(self.control, [b"spawn"], [theirs.fileno()])
        except OSError as exc:
            ours.close()
            raise _LauncherLost from exc
        finally:
            theirs.close()
        try:
            while (message := self._receive(block=True))[0] != "spawned":
                self._exits.append((int(message[1]), int(message[2])))
        except _LauncherLost:
            ours.close()
            raise
        return int(message[1]), ours

    @property
    def has_exits(self) -> bool:
        """Exit reports read while waiting in ``spawn`` and not yet collected."""
        return bool(self._exits)

    def exits(self) -> list[tuple[int, int]]:
        """(pid, wait status) of workers reaped since the last call."""
        while (message := self._receive(block=False)) is not None:
            self._exits.append((int(message[1]), int(message[2])))
        exits, self._exits = self._exits, []
        return exits

    def _receive(self, *, block: bool) -> Any:
        try:
            data = self.control.recv(_PACKET_BYTES, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise _LauncherLost from exc
        if not data:
            raise _LauncherLost
        return pickle.loads(data)

    def close(self, grace_s: float) -> None:
        """Tell the launcher to SIGKILL its workers and exit; wait for it."""
        with contextlib.suppress(OSError):
            self.control.send(b"stop")  # not just EOF: a fork elsewhere may hold our fd
        self.control.close()
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            kill_tree(self.popen.pid, grace_s=0.5)
            self.popen.wait()


def _json_path() -> str:
    return json.dumps([entry or os.getcwd() for entry in sys.path])


# ------------------------------------------------------- parent records


class _State(StrEnum):
    STARTING = "starting"  # forked, running worker_init
    READY = "ready"
    EXITED = "exited"  # its socket closed; waiting for the launcher's exit status
    DYING = "dying"  # killed or retired by us; nothing more is expected of it


@dataclass(slots=True, eq=False)
class _Assigned:
    seq: int
    task: Task
    sent_s: float = 0.0
    started_s: float = 0.0
    done: bool = False  # its outcome is out; a second run (see _steal) is ignored


@dataclass(slots=True, eq=False)
class _Worker:
    pid: int
    channel: _Channel
    proc: psutil.Process
    spawned_s: float
    state: _State = _State.STARTING
    ready: bool = False  # has finished worker_init
    batch_id: int = -1  # whose context it holds
    inflight: deque[_Assigned] = field(default_factory=deque)
    next_sample_s: float = 0.0
    cpu_mark: tuple[float, float] | None = None  # (monotonic, cpu seconds)
    stalled: bool = False
    stolen: dict[int, _Assigned] = field(default_factory=dict)  # revoked from its queue

    @property
    def live(self) -> bool:
        return self.state in (_State.STARTING, _State.READY)

    def new_head(self) -> None:
        self.cpu_mark, self.stalled, self.next_sample_s = None, False, 0.0


@dataclass(slots=True, eq=False)
class _Batch:
    id: int
    context_blob: bytes
    pending: deque[_Assigned]
    unfinished: int
    outcomes: deque[Outcome] = field(default_factory=deque)
    done_seqs: set[int] = field(default_factory=set)


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _probe_stall(worker: _Worker, started_s: float, now: float, half_s: float) -> float:
    """Sample the worker's CPU time every ``half_s`` once its task is that old;
    mark it stalled while it uses less than ``STALL_CPU_FRACTION`` of a core
    and is asleep (a worker waiting for a busy core is runnable, not
    stalled). Returns when to sample next."""
    if now < started_s + half_s:
        return started_s + half_s
    mark = worker.cpu_mark
    if mark is not None and now < mark[0] + half_s:
        return mark[0] + half_s
    try:
        cpu_s = _cpu_seconds(worker.proc)
        idle = mark is not None and (cpu_s - mark[1]) < STALL_CPU_FRACTION * (now - mark[0])
        worker.stalled = idle and worker.proc.status() != psutil.STATUS_RUNNING
    except psutil.Error:
        return now + half_s  # exiting; its exit status will tell
    worker.cpu_mark = (now, cpu_s)
    return now + half_s


def _rss_over(worker: _Worker, limit_mb: float) -> str | None:
    """The error for a worker tree over ``limit_mb``, else None."""
    try:
        rss_mb = _tree_rss_bytes(worker.proc) / 2**20
    except psutil.Error:
        return None
    if rss_mb <= limit_mb:
        return None
    return f"memory limit exceeded: {rss_mb:.0f} MB > {limit_mb:g} MB cap"


def _tree_rss_bytes(proc: psutil.Process) -> int:
    """RSS of a process and its descendants.

    Descendants come from ``/proc/PID/task/TID/children`` (tens of
    microseconds) rather than psutil's scan of every process on the host
    (milliseconds), since this runs every ``sample_interval_s``.
    """
    total = proc.memory_info().rss
    for pid in _descendants(proc.pid):
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return int(total)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as handle:
                    kids = [int(k) for k in handle.read().split()]
            except FileNotFoundError:
                if parent == pid and not found:  # kernel without the file
                    return [p.pid for p in snapshot_tree(pid)[1:]]
                continue
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


# ----------------------------------------------------------------- fleet


class _Fleet:
    """The pool's processes as the parent sees them: the launcher, the
    workers, their sockets in the pool's selector. Knows nothing of tasks."""

    def __init__(self, settings: PoolSettings, selector: selectors.BaseSelector) -> None:
        self.settings = settings
        self.selector = selector
        self.launcher: _Launcher | None = None
        self.workers: dict[int, _Worker] = {}
        self.restarts = 0

    def live(self) -> list[_Worker]:
        return [w for w in self.workers.values() if w.live]

    def pids(self) -> list[int]:
        if self.launcher is None:
            return []
        return [self.launcher.pid, *(w.pid for w in self.live())]

    def start(self, wake_fd: int) -> None:
        self.launcher = _Launcher.start(self.settings, wake_fd)
        self.selector.register(self.launcher.fileno(), selectors.EVENT_READ, None)

    def spawn(self) -> bool:
        """One more worker; False when the launcher is gone."""
        assert self.launcher is not None
        try:
            pid, sock = self.launcher.spawn()
        except _LauncherLost:
            return False
        worker = _Worker(pid, _Channel(sock), psutil.Process(pid), time.monotonic())
        self.workers[pid] = worker
        self.selector.register(sock.fileno(), selectors.EVENT_READ, worker)
        return True

    def exits(self) -> list[tuple[_Worker, ExitStatus]] | None:
        """Workers reaped since the last call (None: the launcher is gone).
        Workers we killed or retired are dropped silently."""
        assert self.launcher is not None
        try:
            reaped = self.launcher.exits()
        except _LauncherLost:
            return None
        exits = []
        for pid, status in reaped:
            worker = self.workers.pop(pid, None)
            if worker is not None and worker.state is not _State.DYING:
                exits.append((worker, ExitStatus.from_wait_status(status)))
        return exits

    def retire(self, worker: _Worker) -> None:
        with contextlib.suppress(OSError):
            worker.channel.send(("stop",))
        self.forget(worker)
        worker.state = _State.DYING

    def terminate(self, worker: _Worker) -> None:
        """SIGKILL the worker's tree (snapshotted first, so children
        re-parented at its death are still found); expect nothing more."""
        signal_tree(snapshot_tree(worker.pid), signal.SIGKILL)
        self.forget(worker)
        worker.state = _State.DYING

    def forget(self, worker: _Worker) -> None:
        if worker.channel.sock.fileno() >= 0:
            self.selector.unregister(worker.channel.fileno())
            worker.channel.close()

    def relaunch(self, wake_fd: int) -> list[_Worker]:
        """The launcher died: its workers cannot be reaped any more. Kill
        them, start a new launcher; return them (their tasks go back)."""
        self.restarts += 1
        lost = list(self.workers.values())
        for worker in lost:
            self.terminate(worker)
        self.workers.clear()
        self._drop_launcher(0.0)
        if self.restarts > MAX_LAUNCHER_RESTARTS:
            raise PoolError("the pool's launcher keeps dying")
        self.start(wake_fd)
        return lost

    def close(self) -> None:
        """Everything ends: workers, their children, the launcher."""
        tree = snapshot_tree(self.launcher.pid) if self.launcher is not None else []
        for worker in self.workers.values():
            self.forget(worker)
        self.workers.clear()
        self._drop_launcher(self.settings.close_grace_s)
        alive = [p for p in tree if p.is_running()]
        signal_tree(alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=self.settings.close_grace_s)

    def _drop_launcher(self, grace_s: float) -> None:
        launcher, self.launcher = self.launcher, None
        if launcher is not None:
            self.selector.unregister(launcher.fileno())
            launcher.close(grace_s)


# ------------------------------------------------------------------ pool


class KillablePool:
    """N long-lived workers; per-task timeouts, memory caps, crash isolation.

    ``run(tasks, context)`` yields one ``Outcome`` per task, in completion
    order; ``context`` (pickled once, sent once to each worker) and each
    task's payload are passed to ``target(context, payload)``. Processes
    start at the first ``start()`` or ``run()``; ``close()`` (or leaving the
    ``with`` block) ends them all. A closed pool cannot be restarted.
    """

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self._selector = selectors.DefaultSelector()
        self._fleet = _Fleet(settings, self._selector)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_lock = threading.Lock()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._aborted = False
        self._closed = False
        self._batch: _Batch | None = None
        self._seqs = count()
        self._batch_ids = count()
        self._start_failures = 0
        self._task_s: float | None = None  # moving average of task durations

    def __enter__(self) -> KillablePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- public

    @property
    def started(self) -> bool:
        return self._fleet.launcher is not None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def aborted(self) -> bool:
        return self._aborted

    def pids(self) -> list[int]:
        """The launcher's pid and those of the live workers (for tests and logs)."""
        return self._fleet.pids()

    def start(self) -> None:
        """Start the launcher and ``size`` workers (no-op when running)."""
        if self._closed:
            raise PoolError("the pool is closed")
        if self.started:
            return
        try:
            self._fleet.start(self._wake_r)
        except PoolAborted:
            self.close()
            raise
        self._reconcile()

    def abort(self) -> None:
        """From any thread: stop the running batch, kill every process."""
        self._aborted = True
        with self._wake_lock:
            if self._wake_w >= 0:
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"!")

    def run(self, tasks: Iterable[Task], context: object = None) -> Iterator[Outcome]:
        """Run ``tasks``; yield each outcome as it is known."""
        self._check_abort()
        self.start()
        items = deque(_Assigned(next(self._seqs), task) for task in tasks)
        blob = pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL)
        batch = _Batch(next(self._batch_ids), blob, items, len(items))
        self._batch = batch
        try:
            while batch.unfinished:
                self._check_abort()
                self._reconcile()
                self._wait(self._police(time.monotonic()))
                while batch.outcomes:
                    yield batch.outcomes.popleft()
        finally:
            self._batch = None
            if not self._closed:
                self._end_batch()

    def close(self) -> None:
        """Kill and reap every process of the pool; idempotent."""
        self._closed = True
        self._fleet.close()
        with self._wake_lock:
            if self._wake_w >= 0:
                self._selector.close()
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1

    # ---- waiting and events

    def _check_abort(self) -> None:
        if self._aborted:
            self.close()
            raise PoolAborted("the pool was aborted")

    def _wait(self, wake_at: float | None) -> None:
        launcher = self._fleet.launcher
        timeout = None if wake_at is None else max(0.0, wake_at - time.monotonic())
        if launcher is not None and launcher.has_exits:
            timeout = 0.0
        linger = self._linger_s()
        if linger and (timeout is None or timeout > linger) and launcher is not None:
            # Results may wait a moment; an abort or a death may not.
            select.select([self._wake_r, launcher.fileno()], [], [], linger)
            timeout = None if timeout is None else timeout - linger
        for key, _ in self._selector.select(timeout):
            if isinstance(key.data, _Worker):
                self._on_readable(key.data)
            elif key.fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)
            else:
                self._on_launcher()
        if self._fleet.launcher is not None and self._fleet.launcher.has_exits:
            self._on_launcher()

    def _linger_s(self) -> float:
        if self._batch is None or not self._batch.pending:
            return 0.0
        busy = [w for w in self._fleet.live() if w.inflight and not w.stalled]
        return linger_time(self._task_s, [len(w.inflight) - 1 for w in busy])

    def _on_launcher(self) -> None:
        exits = self._fleet.exits()
        if exits is None:
            for worker in self._fleet.relaunch(self._wake_r):
                self._requeue(worker)
            return
        for worker, status in exits:
            self._on_death(worker, status)

    def _on_readable(self, worker: _Worker, *, drain: bool = False) -> None:
        for message in worker.channel.receive_ready(drain=drain):
            self._on_message(worker, message)
        if worker.channel.eof and worker.state is not _State.DYING:
            self._fleet.forget(worker)
            worker.state = _State.EXITED

    def _on_message(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        if message[0] == "ready":
            worker.state, worker.ready = _State.READY, True
            self._start_failures = 0
            return
        if message[0] == "garbled":
            if worker.inflight:
                head = worker.inflight.popleft()
                self._finish(head, OutcomeKind.ERROR, error=f"result unreadable: {message[1]}")
                worker.new_head()
            return
        _, seq, ok, value, finished_s, elapsed_s = message
        item = self._answered(worker, seq, finished_s)
        if item is not None:
            kind = OutcomeKind.OK if ok else OutcomeKind.ERROR
            self._finish(item, kind, value if ok else None, None if ok else value, elapsed_s)
        self._task_s = elapsed_s if self._task_s is None else 0.8 * self._task_s + 0.2 * elapsed_s

    def _answered(self, worker: _Worker, seq: int, finished_s: float) -> _Assigned | None:
        """The task a result is for: the one the worker was running, or one
        taken back from it that it ran anyway (see ``_steal``); None for a
        second run of a task whose outcome is already out."""
        if worker.inflight and worker.inflight[0].seq == seq:
            item = worker.inflight.popleft()
            worker.new_head()
            if worker.inflight:
                nxt = worker.inflight[0]
                nxt.started_s = max(finished_s, nxt.sent_s)
            return item
        taken_back = worker.stolen.pop(seq, None)
        if taken_back is not None:
            return taken_back
        if self._batch is not None and seq in self._batch.done_seqs:
            return None
        raise PoolError(f"worker {worker.pid} answered task {seq}, which it does not hold")

    def _on_death(self, worker: _Worker, status: ExitStatus) -> None:
        if worker.state is not _State.EXITED:
            self._on_readable(worker, drain=True)  # results it sent before dying come first
            self._fleet.forget(worker)
        if not worker.ready:
            self._start_failures += 1
            if self._start_failures >= MAX_START_FAILURES:
                raise PoolError(f"workers die while starting ({status.describe()}); see stderr")
        if worker.inflight:
            culprit = worker.inflight.popleft()
            error = f"worker died: {status.describe()}"
            self._finish(culprit, OutcomeKind.DIED, error=error, elapsed_s=self._age(culprit))
        self._requeue(worker)

    # ---- policing running tasks

    def _police(self, now: float) -> float | None:
        """Enforce deadlines and caps; return when to look again."""
        wake: list[float] = []
        for worker in list(self._fleet.workers.values()):
            if worker.state is _State.STARTING:
                limit = worker.spawned_s + self.settings.start_timeout_s
                if now >= limit:
                    self._kill(worker, OutcomeKind.DIED, "worker did not start in time")
                else:
                    wake.append(limit)
            elif worker.state is _State.READY and worker.inflight:
                wake.extend(self._police_task(worker, now))
        return min(wake, default=None)

    def _police_task(self, worker: _Worker, now: float) -> list[float]:
        head = worker.inflight[0]
        timeout_s, limit_mb = head.task.timeout_s, head.task.memory_limit_mb
        wake = []
        if timeout_s is not None:
            if now >= head.started_s + timeout_s:
                self._kill(worker, OutcomeKind.TIMEOUT, f"timed out after {timeout_s:g}s")
                return []
            wake.append(head.started_s + timeout_s)
        if limit_mb is not None:
            if now >= worker.next_sample_s:
                error = _rss_over(worker, limit_mb)
                if error is not None:
                    self._kill(worker, OutcomeKind.MEMORY, error)
                    return []
                worker.next_sample_s = now + self.settings.sample_interval_s
            wake.append(worker.next_sample_s)
        if self.settings.stall_after_s is not None:
            wake.append(_probe_stall(worker, head.started_s, now, self.settings.stall_after_s / 2))
            if worker.stalled and len(worker.inflight) > 1:
                self._steal(worker)
        return wake

    def _steal(self, worker: _Worker) -> None:
        """A stalled worker's queued tasks go back to the queue, and it is
        told to drop them. Should it resume and start one before it reads
        that, the task runs twice; the first outcome counts."""
        followers = list(worker.inflight)[1:]
        worker.inflight = deque(list(worker.inflight)[:1])
        with contextlib.suppress(OSError):
            worker.channel.send(("revoke", [item.seq for item in followers]))
        worker.stolen.update((item.seq, item) for item in followers)
        if self._batch is not None:
            self._batch.pending.extendleft(reversed(followers))

    # ---- acting on workers

    def _reconcile(self) -> None:
        batch = self._batch
        live = self._fleet.live()
        idle = [w for w in live if not w.inflight]  # starting ones too: they are the newest
        plan = plan_workers(
            size=self.settings.size,
            max_spare=self.settings.spare,
            standby=self.settings.standby,
            live=len(live),
            stalled=sum(w.stalled for w in live),
            idle=len(idle),
            has_pending=batch is not None and bool(batch.pending),
        )
        for worker in sorted(idle, key=lambda w: -w.spawned_s)[: plan.retire]:
            self._fleet.retire(worker)  # the newest go first: the others are warm
        for _ in range(plan.start):
            if not self._fleet.spawn():
                self._on_launcher()  # lost: relaunch (raises if it keeps dying)...
                self._reconcile()  # ...and start over with the new one
                return
        if batch is not None and batch.pending:
            self._dispatch(batch, live, plan.slots)

    def _dispatch(self, batch: _Batch, live: Sequence[_Worker], slots: int) -> None:
        """Idle workers get a first task while fewer than ``slots`` hold
        some; then every running, unstalled worker is topped up, breadth
        first, to ``dispatch_depth`` but never beyond its share of what is
        left (guided self-scheduling: queues shrink as the batch drains, so
        the workers finish together)."""
        now = time.monotonic()
        holders = sum(1 for w in live if w.inflight)
        ready = [w for w in live if w.state is _State.READY and not w.stalled]
        for worker in ready:
            if batch.pending and not worker.inflight and holders < slots:
                self._assign(worker, batch, 1, now)
                holders += 1
        share = 1 + len(batch.pending) // max(1, holders)
        for depth in range(2, min(share, dispatch_depth(self._task_s, self.settings.prefetch)) + 1):
            for worker in ready:
                if not batch.pending:
                    return
                if 0 < len(worker.inflight) < depth and worker.state is _State.READY:
                    self._assign(worker, batch, depth - len(worker.inflight), now)

    def _assign(self, worker: _Worker, batch: _Batch, n: int, now: float) -> None:
        items: list[_Assigned] = []
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
            self._fleet.forget(worker)
            worker.state = _State.EXITED
            return
        for item in items:
            item.sent_s = now
        if not worker.inflight:
            items[0].started_s = now
            worker.new_head()
        worker.inflight.extend(items)

    def _kill(self, worker: _Worker, kind: OutcomeKind, error: str) -> None:
        """Fail the task it runs, requeue the rest, SIGKILL its tree."""
        if worker.inflight and worker.state is _State.READY:
            culprit = worker.inflight.popleft()
            self._finish(culprit, kind, error=error, elapsed_s=self._age(culprit))
        self._requeue(worker)
        self._fleet.terminate(worker)

    def _requeue(self, worker: _Worker) -> None:
        if self._batch is not None:
            self._batch.pending.extendleft(reversed(worker.inflight))
        worker.inflight.clear()

    def _end_batch(self) -> None:
        """After a batch ends early: kill workers still busy with it."""
        for worker in list(self._fleet.workers.values()):
            worker.stolen.clear()
            if worker.inflight:
                worker.inflight.clear()
                self._fleet.terminate(worker)
        with contextlib.suppress(PoolError):
            self._reconcile()

    def _finish(
        self,
        item: _Assigned,
        kind: OutcomeKind,
        value: object = None,
        error: str | None = None,
        elapsed_s: float = 0.0,
    ) -> None:
        batch = self._batch
        if batch is None or item.done:
            return
        item.done = True
        batch.done_seqs.add(item.seq)
        batch.outcomes.append(Outcome(item.task.key, kind, value, error, elapsed_s))
        batch.unfinished -= 1

    @staticmethod
    def _age(item: _Assigned) -> float:
        return max(0.0, time.monotonic() - item.started_s) if item.started_s else 0.0

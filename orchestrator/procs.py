"""Start, signal, name and reap process trees.

The rule everywhere in this project: a stop goes SIGTERM -> grace -> SIGKILL
to the *whole* tree, and the tree is snapshotted before the first signal so
that children re-parented to init on their parent's death are still found.
The direct parent is the only one that reaps (``waitpid``) its children.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil
import setproctitle


def set_title(title: str) -> None:
    """What ``ps`` and ``top`` show for this process (its command line):
    ``orch-spawner <host>``, ``orch-forkserver``, ``orch-worker <label> <worker id>``."""
    setproctitle.setproctitle(title)


def worker_title(label: str, worker_id: str) -> str:
    return f"orch-worker {label} {worker_id}"


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a process ended: an exit code or the signal that killed it."""

    code: int | None
    signal: int | None

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        if os.WIFSIGNALED(status):
            return cls(code=None, signal=os.WTERMSIG(status))
        return cls(code=os.waitstatus_to_exitcode(status), signal=None)

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        if returncode < 0:
            return cls(code=None, signal=-returncode)
        return cls(code=returncode, signal=None)

    @property
    def ok(self) -> bool:
        return self.code == 0

    def describe(self) -> str:
        if self.signal is not None:
            return f"signal {self.signal} ({signal_name(self.signal)})"
        return f"code {self.code}"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def start_process(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (never through a shell) as a worker of this process.

    The worker stays in our process group, so supervisord's ``killasgroup``
    still reaches it if we die, and it gets SIGTERM from the kernel when we
    exit (PR_SET_PDEATHSIG), so no worker outlives its spawner. Only call
    this from a single-threaded process (``preexec_fn`` runs after fork).
    """
    _libc()
    return subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        close_fds=True,
        preexec_fn=die_with_parent,
    )


def snapshot_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants, parent first; [] if it is gone."""
    try:
        root = psutil.Process(pid)
        kids = descendants(pid)
        if kids is None:
            return [root, *root.children(recursive=True)]
        return [root, *existing(kids)]
    except psutil.NoSuchProcess:
        return []


def descendants(pid: int) -> list[int] | None:
    """Pids below ``pid``, from /proc/<pid>/task/<tid>/children.

    A walk down from ``pid`` instead of psutil's scan of every process on
    the host (milliseconds on a busy one). None where the kernel has no
    ``children`` file, so the caller can fall back to the scan.
    """
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
                if not os.path.exists(f"/proc/{parent}/task/{tid}"):
                    continue  # the thread (or process) ended meanwhile
                return None  # a kernel without the children file
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (from /proc, without scanning every process)."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as handle:
            found.extend(int(k) for k in handle.read().split())
    return found


def existing(pids: Sequence[int]) -> list[psutil.Process]:
    """Handles for those of ``pids`` still running (one may exit meanwhile)."""
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            out.append(psutil.Process(pid))
    return out


def signal_tree(procs: Sequence[psutil.Process], signum: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(signum)


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants (0 if gone)."""
    total = 0
    for proc in snapshot_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total


def kill_tree(pid: int, grace_s: float, *, reap: bool = True) -> None:
    """SIGTERM the tree of ``pid``, wait ``grace_s``, SIGKILL what is left.

    Blocking; meant for pools and tests. The spawner runs the same two steps
    from its event loop instead (see ``spawner``), so it never blocks.
    ``reap`` waits for the root when it is our child, so no zombie remains.
    """
    tree = snapshot_tree(pid)
    signal_tree(tree, signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=grace_s)
    if alive:
        # Children started during the grace period join the final sweep.
        extra = [c for p in alive for c in _children_or_empty(p)]
        signal_tree([*alive, *extra], signal.SIGKILL)
        psutil.wait_procs([*alive, *extra], timeout=5.0)
    if reap:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _children_or_empty(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def start_ticks(pid: int) -> int | None:
    """The process' start time (clock ticks since boot), None if it is gone
    or a zombie: with the pid, it names one process, never a later one."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def tagged_processes(
    prefix: str, variable: str, *, also: tuple[str, str] | None = None
) -> dict[int, str]:
    """Live processes whose environment ``variable`` (a tag their
    descendants inherit: a worker's consumer, see ``workerenv``) starts
    with ``prefix``: pid -> its value. ``also`` (a variable and its value):
    only those whose environment holds it too.

    Reads every ``/proc/<pid>/environ`` (milliseconds on a busy host): for
    rare moments only, such as a spawner's start or a pool's kill.
    """
    needle = f"{variable}=".encode()
    also_item = "=".join(also).encode() if also is not None else None
    found: dict[int, str] = {}
    own = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == own:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        tags = [item[len(needle) :] for item in environ if item.startswith(needle)]
        if tags and (also_item is None or also_item in environ):
            value = tags[0].decode(errors="replace")
            if value.startswith(prefix) and start_ticks(int(entry)) is not None:
                found[int(entry)] = value
    return found


def kill_tagged(
    tag: str,
    variable: str,
    *,
    prefix: bool = False,
    also: tuple[str, str] | None = None,
) -> list[int]:
    """SIGKILL every process whose ``variable`` is ``tag`` (or, with
    ``prefix``, starts with it; holding ``also`` when given); their pids."""
    found = tagged_processes(tag, variable, also=also)
    pids = [pid for pid, value in found.items() if prefix or value == tag]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: Sequence[int], timeout_s: float) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive."""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if pid_alive(p)]
    return alive


class SignalWakeup:
    """Signals as bytes on a pipe, so one ``select`` waits for everything.

    Python runs signal handlers only between bytecodes of the main thread;
    with ``signal.set_wakeup_fd`` the C handler also writes the signal
    number to a pipe, which wakes a ``select`` at once. ``drain()`` returns
    the signals received since the last call, in order.
    """

    def __init__(self, signals: tuple[int, ...]) -> None:
        self.signals = signals
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self._previous: dict[int, object] = {}
        self._previous_fd = -1

    def install(self) -> None:
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, _ignore)
        self._previous_fd = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)

    def fileno(self) -> int:
        return self.read_fd

    def drain(self) -> list[int]:
        got: list[int] = []
        while True:
            try:
                data = os.read(self.read_fd, 512)
            except BlockingIOError:
                return got
            if not data:
                return got
            got.extend(data)

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        os.close(self.read_fd)
        os.close(self.write_fd)


def _ignore(signum: int, frame: object) -> None:
    """A Python-level handler must exist for the wakeup fd to be written."""


_CLONE_PARENT = 0x00008000
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)


def fork_sibling() -> int | None:
    """Fork a child that is our *parent's* child (``clone(CLONE_PARENT)``,
    Linux): our parent gets its SIGCHLD, reaps it and is its only parent
    from its first instruction, with one fork instead of two and no wait to
    be re-parented. Python's own fork hooks run around it as for
    ``os.fork``. Returns 0 in the child, the pid in the parent, or None
    where the system cannot (then fork another way)."""
    libc = _libc()
    if _SYS_CLONE is None or libc is None or not hasattr(libc, "syscall"):
        return None
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = int(libc.syscall(_SYS_CLONE, _CLONE_PARENT | signal.SIGCHLD, 0, 0, 0, 0))
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(ctypes.get_errno(), "clone(CLONE_PARENT) failed")
    return pid


def set_subreaper() -> bool:
    """Make orphaned descendants re-parent to us (Linux), so none escapes."""
    return _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER


def die_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``signum`` when our parent exits (Linux)."""
    return _prctl(1, signum)  # PR_SET_PDEATHSIG


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


def _prctl(option: int, value: int) -> bool:
    libc = _libc()  # loaded before any fork: preexec_fn must not dlopen
    if libc is None or not hasattr(libc, "prctl"):
        return False
    return int(libc.prctl(option, value, 0, 0, 0)) == 0

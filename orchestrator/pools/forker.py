"""The launcher: a clean interpreter that forks the pool's workers.

Started by the parent with fork+exec (``Launcher.start``) and the pool's
environment, it imports the ``preload`` modules once, then forks a worker
whenever the parent asks (``spawn``: a socket pair's end is passed over
the control socket), in a few milliseconds. It never runs task code, so it
holds no lock when it forks. It reaps the workers and reports their exit
status; on ``stop`` (or EOF) it SIGKILLs what is left and exits.
``Launcher`` is the parent's handle on it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.pools.poolchild import resolve, worker_main
from orchestrator.pools.pooltypes import (
    POOL_TAG_VARIABLE,
    PoolAborted,
    PoolError,
    PoolSettings,
)
from orchestrator.pools.wire import PACKET_BYTES
from orchestrator.procs import kill_tree, signal_tree, snapshot_tree

__all__ = ["Launcher", "LauncherLost", "launcher_main"]

_BOOTSTRAP = (
    "import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
    "from orchestrator.pools.forker import launcher_main; launcher_main(int(sys.argv[2]))"
)


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
        config: _LauncherConfig = pickle.loads(control.recv(PACKET_BYTES))
        for module in config.preload:
            importlib.import_module(module)
        target = resolve(config.target)
        init = resolve(config.worker_init) if config.worker_init else None
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
            message, fds, _, _ = socket.recv_fds(self.control, PACKET_BYTES, 1)
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
                code = worker_main(socket.socket(fileno=fd), self.target, self.init)
            except BaseException as exc:
                from orchestrator.worker import log_crash  # only now: a worker starts light

                log_crash(exc)
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


class LauncherLost(Exception):
    pass


class Launcher:
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
    def start(cls, settings: PoolSettings, wake_fd: int, tag: str) -> Launcher:
        """Start the launcher, its processes tagged ``tag`` (``POOL_TAG_VARIABLE``)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [sys.executable, "-c", _BOOTSTRAP, _json_path(), str(theirs.fileno())]
        popen = subprocess.Popen(
            argv,
            env={**os.environ, **settings.env, POOL_TAG_VARIABLE: tag},
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
        message = pickle.loads(self.control.recv(PACKET_BYTES) or pickle.dumps(("failed", "")))
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
            raise LauncherLost from exc
        finally:
            theirs.close()
        try:
            while (message := self._receive(block=True))[0] != "spawned":
                self._exits.append((int(message[1]), int(message[2])))
        except LauncherLost:
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
            data = self.control.recv(PACKET_BYTES, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise LauncherLost from exc
        if not data:
            raise LauncherLost
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

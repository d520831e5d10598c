"""The parent's end of one pool process: the process and its two pipes.

Writes never block the parent: a frame goes straight into the pipe when it
has room (the pipes are enlarged to 1 MiB where Linux allows) and what does
not fit waits in ``outbuf`` until the pool's selector reports the pipe
writable. Reads are non-blocking too. A broken pipe or end of file marks the
channel ``dead``; the pool then replaces the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestrator.apps.scanner.frames import Frame, FrameReader
from orchestrator.procs import kill_tree

PIPE_SIZE = 1 << 20
READ_CHUNK = 1 << 20
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def default_argv() -> list[str]:
    return [sys.executable, "-m", "orchestrator.apps.scanner.poolproc"]


def child_env(base: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment, with this package importable in the child."""
    env = dict(base)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = f"{PACKAGE_ROOT}{os.pathsep}{path}" if path else PACKAGE_ROOT
    return env


class PoolPipe:
    """One running pool process serving ``partition``."""

    def __init__(self, partition: int, argv: Sequence[str]) -> None:
        self.partition = partition
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(os.environ),
            bufsize=0,
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.write_fd = self.proc.stdin.fileno()
        self.read_fd = self.proc.stdout.fileno()
        for fd in (self.write_fd, self.read_fd):
            os.set_blocking(fd, False)
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self.outbuf = bytearray()
        self.reader = FrameReader()
        self.dead = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def pending(self) -> bool:
        """Bytes still waiting for room in the pipe."""
        return bool(self.outbuf)

    def send(self, head: bytes, payload: bytes = b"") -> None:
        """Queue a frame; write what fits now."""
        if self.dead:
            return
        if self.outbuf:
            self.outbuf += head
            self.outbuf += payload
            return
        try:
            written = os.writev(self.write_fd, [head, payload])
        except BlockingIOError:
            written = 0
        except OSError:
            self.dead = True
            return
        if written < len(head) + len(payload):
            self.outbuf += (head + payload)[written:]

    def flush(self) -> None:
        """Write as much of ``outbuf`` as the pipe takes."""
        while self.outbuf and not self.dead:
            try:
                written = os.write(self.write_fd, self.outbuf)
            except BlockingIOError:
                return
            except OSError:
                self.dead = True
                return
            del self.outbuf[:written]

    def receive(self) -> list[Frame]:
        """The complete frames readable now; marks the channel dead at end of file."""
        frames: list[Frame] = []
        while not self.dead:
            try:
                data = os.read(self.read_fd, READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.dead = True
                break
            frames += self.reader.feed(data)
            if len(data) < READ_CHUNK:
                break
        return frames

    def close(self, grace_s: float) -> None:
        """Close stdin (the process exits on EOF); kill the tree after ``grace_s``."""
        self.dead = True
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc.pid, grace_s=min(grace_s, 1.0), reap=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5.0)

    def kill(self) -> None:
        """Stop the process now (memory or stall): SIGTERM, then SIGKILL, then reap."""
        if self.proc.poll() is None:
            kill_tree(self.proc.pid, grace_s=0.5, reap=False)
        self.close(grace_s=1.0)

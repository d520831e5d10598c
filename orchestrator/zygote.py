"""A fork server: Python workers that start in milliseconds, not seconds.

Starting a Python worker costs a few hundred milliseconds, nearly all of it
importing redis, loguru and the orchestrator. The spawner therefore keeps a
*zygote*: a child process that has imported them once (plus
``spawner.preload``) and, for each ``script`` worker, forks a copy that runs
the script as ``__main__`` (compiled once per version of the file) — as
``python script.py`` would, but already warm.

The zygote forks each worker as the spawner's own child (``clone`` with
``CLONE_PARENT``, see ``procs.fork_sibling``): one fork, and the spawner is
the worker's parent from its first instruction, so it gets its SIGCHLD and
remains the only reaper of its workers. Where the system cannot, it
double-forks: the worker's first parent exits at once and the worker is
re-parented to the spawner, its child subreaper. Either way the worker then
asks for SIGTERM on its parent's death, so it dies with the spawner like any
other worker.

Used only by ``orchestrator run`` (which is a subreaper) and only for queues
with ``script:``; ``command:`` workers are always started with exec.
"""

from __future__ import annotations

import builtins
import contextlib
import gc
import importlib
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import CodeType
from typing import Any, NoReturn

from loguru import logger

from orchestrator import procs
from orchestrator.logs import LogConfig, log_uncaught
from orchestrator.worker.workerenv import WARM_UP, identity, log_env, warm_up_env

DEFAULT_PRELOAD = (
    "orchestrator.worker",
    # Imported lazily on a worker's first connect: encoding the host name
    # (idna, ~2 ms) and redis-py's connection pool id (secrets).
    "encodings.idna",
    "secrets",
)
REPARENT_TIMEOUT_S = 2.0
STANDBY_AFTER_S = 0.05  # a used standby is replaced once requests pause this long


class ZygoteError(RuntimeError):
    pass


class Zygote:
    """The spawner's side: start the fork server, ask it for workers."""

    def __init__(
        self,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        warm_url: str = "",
        log: LogConfig | None = None,
    ) -> None:
        """``warm_url``: the spawner's Redis, which a standby's rehearsal
        connects to; ``log``: how its workers log (each can change it)."""
        self.preload = list(dict.fromkeys([*DEFAULT_PRELOAD, *preload]))
        self.warm_url = warm_url or "redis://127.0.0.1:6379/0"
        self.log = log or LogConfig()
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self._buffer = b""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator.zygote",
                str(theirs.fileno()),
                self.warm_url,
                *self.preload,
            ],
            pass_fds=(theirs.fileno(),),
            env={**os.environ, **log_env(self.log)},
            stdin=subprocess.DEVNULL,
            preexec_fn=procs.die_with_parent,
        )
        theirs.close()
        ours.settimeout(30.0)
        self.sock = ours
        ready = self._reply()
        if not ready.get("ready"):
            raise ZygoteError(f"fork server failed to start: {ready.get('error')}")
        ours.settimeout(5.0)

    def spawn_many(
        self, workers: Sequence[tuple[Sequence[str], Mapping[str, str]]], cwd: str
    ) -> list[int]:
        """Fork workers, each running ``argv[1]`` (a script) with ``argv[2:]``
        and its ``env``, in one go: one request, one middle process for all
        of them. Their pids, in order; fewer when a fork failed part way (the
        rest were not started)."""
        if self.sock is None:
            raise ZygoteError("fork server not running")
        request = {
            "workers": [{"argv": list(argv), "env": dict(env)} for argv, env in workers],
            "cwd": cwd,
            "parent": os.getpid(),
        }
        try:
            self.sock.sendall(json.dumps(request).encode() + b"\n")
            reply = self._reply()
        except OSError as exc:
            self.close()
            raise ZygoteError(f"fork server gone: {exc}") from exc
        if "pids" not in reply:
            raise ZygoteError(str(reply.get("error", "no pid")))
        return [int(pid) for pid in reply["pids"]]

    def standbys(self) -> set[int]:
        """Pids of the standbys (the spawner's children that are no workers yet)."""
        if self.sock is None:
            return set()
        try:
            self.sock.sendall(b'{"cmd": "standbys"}\n')
            return {int(pid) for pid in self._reply().get("standbys", [])}
        except (OSError, ZygoteError):
            return set()

    def _reply(self) -> dict[str, Any]:
        assert self.sock is not None
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ZygoteError("fork server closed its socket")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        value = json.loads(line)
        return value if isinstance(value, dict) else {}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()  # the zygote exits on EOF
            self.sock = None
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


# Interpreter settings a fork cannot apply (PYTHONPATH it can: sys.path).
_STARTUP_ONLY = frozenset(
    {
        "PYTHONHOME",
        "PYTHONHASHSEED",
        "PYTHONOPTIMIZE",
        "PYTHONDEVMODE",
        "PYTHONWARNINGS",
        "PYTHONSAFEPATH",
        "PYTHONNOUSERSITE",
        "PYTHONSTARTUP",
        "PYTHONEXECUTABLE",
        "PYTHONMALLOC",
    }
)


def eligible(argv: Sequence[str], queue_env: Mapping[str, str]) -> bool:
    """A ``script`` worker (our interpreter on a Python file) whose queue
    sets no interpreter start-up variable; anything else is exec'd."""
    return is_script(argv) and not (_STARTUP_ONLY & set(queue_env))


def is_script(argv: Sequence[str]) -> bool:
    return len(argv) >= 2 and argv[0] == sys.executable and argv[1].endswith(".py")


def exec_argv(argv: Sequence[str]) -> list[str]:
    """A ``script`` worker's argv when it is exec'd, not forked: run by this
    module as a forked one is (``run_script``: its title, its log set up
    before its first line, so even a traceback at import is one JSON line)."""
    return [sys.executable, "-m", "orchestrator.zygote", "--script", *argv[1:]]


def run_script(argv: Sequence[str]) -> NoReturn:
    """``python -m orchestrator.zygote --script script.py [args]``: as the
    fork server's worker runs it, in this fresh interpreter."""
    job = {"argv": [sys.executable, *argv], "env": dict(os.environ), "cwd": os.getcwd()}
    _become_worker({**job, "parent": os.getppid()}, reparented=False)


# -- the zygote process ------------------------------------------------------


@dataclass
class Standby:
    """A worker forked ahead of need: already the spawner's child, its start
    rehearsed (``_warm_up``), waiting on a pipe for the job it becomes."""

    pid: int
    job_fd: int  # the zygote's end: the job is written there, then closed


@dataclass
class ForkServer:
    sock: socket.socket
    warm_url: str  # the spawner's Redis: the standby's rehearsal connects to it
    standby: Standby | None = None

    def serve(self) -> None:
        """Answer the spawner's requests until it closes the line. A used
        standby is replaced once the requests have paused for
        ``STANDBY_AFTER_S``: making one (a fork and a rehearsal, some
        milliseconds of CPU) must not slow the worker it has just become."""
        self.standby = _make_standby(self)
        self.sock.sendall(_line({"ready": True}))
        buffer, quiet_since = b"", time.monotonic()
        while True:
            if b"\n" not in buffer:
                wait_s = (
                    None
                    if self.standby
                    else max(0.0, quiet_since + STANDBY_AFTER_S - time.monotonic())
                )
                if not select.select([self.sock], [], [], wait_s)[0]:
                    self.standby = _make_standby(self)
                    continue
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                continue
            line, _, buffer = buffer.partition(b"\n")
            self.sock.sendall(_line(self.answer(json.loads(line))))
            quiet_since = time.monotonic()

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("cmd") == "standbys":
            return {"standbys": [self.standby.pid] if self.standby else []}
        try:
            return {"pids": self.fork_workers(request)}
        except OSError as exc:
            return {"error": f"fork failed: {exc}"}

    def fork_workers(self, request: dict[str, Any]) -> list[int]:
        """The standby becomes the first worker; the others are forked, each
        as the spawner's own child (``procs.fork_sibling``: one fork, no
        re-parenting), or where the system cannot, through a short-lived
        middle process they are re-parented from. The pids."""
        pids: list[int] = []
        for worker in request["workers"]:
            job = {**worker, "cwd": request["cwd"], "parent": request["parent"]}
            if (pid := self._activate(job)) is not None:
                pids.append(pid)
                continue
            job["code"] = _compiled(worker["argv"][1])
            try:
                pid = procs.fork_sibling()
            except OSError:
                break  # the spawner learns which were started from the pids
            if pid is None:
                rest = request["workers"][len(pids) :]
                return pids + _fork_through_middle(rest, request, self.sock)
            if pid == 0:
                _leave_the_zygote(self.sock)
                _become_worker(job, reparented=False)
            pids.append(pid)
        return pids

    def _activate(self, job: dict[str, Any]) -> int | None:
        """Give ``job`` to the standby; its pid, or None (no standby, or it died)."""
        standby, self.standby = self.standby, None
        if standby is None:
            return None
        try:
            os.write(standby.job_fd, json.dumps(job).encode())
        except OSError:
            return None
        finally:
            os.close(standby.job_fd)
        return standby.pid


def serve(fd: int, preload: Sequence[str], warm_url: str) -> int:
    sock = socket.socket(fileno=fd)
    try:
        for module in preload:
            importlib.import_module(module)
    except Exception as exc:
        sock.sendall(_line({"error": f"preload failed: {exc!r}"}))
        return 1
    from orchestrator.worker import configure_logging

    procs.set_title("orch-forkserver")
    configure_logging()  # workers inherit it
    gc.freeze()  # what the preload made is shared with workers, not copied by their GC
    ForkServer(sock, warm_url).serve()
    return 0


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _make_standby(server: ForkServer) -> Standby | None:
    """Fork the next standby (None where the system cannot fork siblings)."""
    read_fd, write_fd = os.pipe()
    try:
        pid = procs.fork_sibling()
    except OSError:
        pid = None
    if pid == 0:
        os.close(write_fd)
        _leave_the_zygote(server.sock)
        _stand_by(read_fd, os.getppid(), server.warm_url)
    os.close(read_fd)
    if pid is None:
        os.close(write_fd)
        return None
    return Standby(pid, write_fd)


def _stand_by(job_fd: int, parent: int, warm_url: str) -> NoReturn:
    """The standby: rehearse a worker's start, wait for the job, become it."""
    try:
        procs.set_title("orch-standby")
        _await_parent(parent, reparented=False)
        _warm_up(warm_url)
        chunks = []
        while chunk := os.read(job_fd, 65536):
            chunks.append(chunk)
        if not chunks:  # the zygote closed without a job: it is shutting down
            os._exit(0)
        job = json.loads(b"".join(chunks))
    except BaseException:
        os._exit(1)
    job["code"] = _compiled(job["argv"][1])  # compiled in the zygote before we forked
    _become_worker(job, reparented=False)


def _warm_up(redis_url: str) -> None:
    """Run what a worker's start runs, on throwaway values: a forked process
    pays a copy-on-write fault for every page it first writes, a few
    milliseconds of them on the first pass through redis-py and the
    runtime. A standby pays them before its job arrives, not after; and
    connects the worker's and its heartbeat's clients, which it keeps."""
    from orchestrator.worker import Heartbeat, Settings, WorkerRuntime
    from orchestrator.worker.client import keep_spare, keep_spare_client, worker_client
    from orchestrator.worker.jobs import per_job

    env = warm_up_env(redis_url)
    settings = Settings.from_env(env)
    _set_environ({**os.environ, WARM_UP: "1"})
    _set_environ({k: v for k, v in os.environ.items() if k != WARM_UP})
    _script_path(__file__, env)
    with contextlib.suppress(Exception):  # Redis down: warm as far as it goes
        keep_spare(settings)  # the worker's own connections, made before its job comes
        client = worker_client(settings)  # the spare itself: taken and put back
        WorkerRuntime(settings, per_job(lambda job: None), client)
        Heartbeat(settings, 0)
        keep_spare_client(settings.redis_url, client)
    json.loads(json.dumps({"payload": "{}"}))


def _fork_through_middle(
    workers: Sequence[dict[str, Any]], request: dict[str, Any], sock: socket.socket
) -> list[int]:
    """Fork a middle process that forks each worker and exits (the workers
    are re-parented to the spawner, a subreaper); the workers' pids."""
    read_fd, write_fd = os.pipe()
    middle = os.fork()
    if middle == 0:  # the short-lived middle process
        os.close(read_fd)
        pids = []
        for worker in workers:
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                os.close(write_fd)
                _leave_the_zygote(sock)
                job = {**worker, "cwd": request["cwd"], "parent": request["parent"]}
                _become_worker({**job, "code": _compiled(worker["argv"][1])}, reparented=True)
            pids.append(pid)
        os.write(write_fd, " ".join(map(str, pids)).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(middle, 0)  # the workers are the spawner's children before it knows their pids
    return [int(pid) for pid in data.split()]


def _leave_the_zygote(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        os.close(sock.fileno())  # the worker must not hold the spawner's line


_CODE: dict[str, tuple[float, CodeType]] = {}


def _compiled(path: str) -> CodeType | None:
    """The script's code, compiled once per version of the file (in the
    zygote, so every worker forked from it starts without compiling)."""
    try:
        mtime = os.stat(path).st_mtime
        cached = _CODE.get(path)
        if cached is None or cached[0] != mtime:
            with open(path, "rb") as source:
                _CODE[path] = (mtime, compile(source.read(), path, "exec", dont_inherit=True))
        return _CODE[path][1]
    except (OSError, SyntaxError, ValueError):
        return None  # the worker runs it the slow way, and fails there, saying why


def _become_worker(request: dict[str, Any], reparented: bool) -> NoReturn:
    """In the forked worker: make sure it is the spawner's, then run the script."""
    code = 1
    try:
        _await_parent(int(request["parent"]), reparented)
        argv, env = request["argv"], request["env"]
        os.chdir(request["cwd"])
        _set_environ(env)
        _take_worker_title_and_log(env)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        sys.argv = list(argv[1:])
        sys.path[:] = _script_path(argv[1], env)
        _run_main(argv[1], request.get("code"))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            logger.bind(event="worker_exit").error(str(exc.code))  # as Python prints it
    except BaseException as exc:
        log_uncaught(type(exc), exc, exc.__traceback__)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _take_worker_title_and_log(env: Mapping[str, str]) -> None:
    """What ``python script.py`` shows in ps, and how it logs (the spawner's
    config for this worker, set up already unless it changed since)."""
    from orchestrator.worker import configure_logging, identify

    configure_logging()
    identify(*identity(env))


def _set_environ(env: Mapping[str, str]) -> None:
    """``os.environ`` becomes ``env``: only what differs is changed (most of
    a worker's environment is the spawner's, which the zygote has already)."""
    for key in [k for k in os.environ if k not in env]:
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _run_main(path: str, code: CodeType | None) -> None:
    """Run the script as ``__main__``, as ``python script.py`` would."""
    if code is None:
        runpy.run_path(path, run_name="__main__")
        return
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def _script_path(script: str, env: Mapping[str, str]) -> list[str]:
    """``sys.path`` as ``python script.py`` would start with, given ``env``:
    the script's directory (in place of the zygote's own first entry), then
    PYTHONPATH, then the interpreter's own entries."""
    rest = sys.path[1:]
    extra = [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [os.path.dirname(os.path.abspath(script)), *[p for p in extra if p not in rest], *rest]


def _await_parent(parent: int, reparented: bool) -> None:
    """Die with the spawner, and be sure it is our parent: at once when
    forked as its child; after the middle process exits when re-parented."""
    deadline = time.monotonic() + REPARENT_TIMEOUT_S
    while reparented and os.getppid() != parent:
        if time.monotonic() > deadline:
            raise SystemExit(f"not re-parented to the spawner {parent} (is it a subreaper?)")
        time.sleep(0.0005)
    procs.die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:  # the spawner died in between
        raise SystemExit(f"spawner {parent} is gone")


if __name__ == "__main__":
    if sys.argv[1] == "--script":
        run_script(sys.argv[2:])
    sys.exit(serve(int(sys.argv[1]), sys.argv[3:], warm_url=sys.argv[2]))

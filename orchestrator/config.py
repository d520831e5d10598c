"""The config file, ``config/workers.yaml``, as frozen dataclasses.

``load_config(path)`` is the one way in (no path: ``find_config()``, which
tries ``$ORCH_CONFIG`` then ``SEARCH_PATH``): it parses YAML
(``validate.read_yaml``: UTF-8, no duplicate keys), applies defaults,
converts units once (durations are seconds, as floats named ``*_s``), checks
types and ranges, rejects unknown keys, and raises ``ConfigError`` listing
every problem with its key path. Nothing here reads the environment at import
time; ``ORCH_REDIS_URL`` is applied by ``load_config`` when it is called.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from orchestrator import plugins
from orchestrator.connections import SENTINEL_SCHEME, URL_SCHEMES, SentinelAddress, redact_url
from orchestrator.logs import LogConfig, LogFormat
from orchestrator.validate import YEAR_S, ConfigError, Problems, Section, read_yaml

RQ_WORKER_ARGV = (sys.executable, "-m", "orchestrator.rq_backend")  # an rq queue's default
REDIS_URL_ENV = "ORCH_REDIS_URL"
EMBEDDED = "embedded"

__all__ = [
    "EMBEDDED",
    "Backend",
    "Config",
    "ConfigError",
    "LogConfig",
    "QueueConfig",
    "SpawnerConfig",
    "describe",
    "find_config",
    "load_config",
    "parse_config",
]


class Backend(StrEnum):
    STREAM = "stream"
    RQ = "rq"


@dataclass(frozen=True, slots=True)
class SpawnerConfig:
    poll_interval_s: float = 1.0
    status_interval_s: float = 10.0
    max_total_workers: int = 0  # resolved: "auto" = 4 x CPU count
    max_memory_percent: float = 90.0
    stop_grace_s: float = 10.0
    host: str = ""  # resolved: the machine's host name
    heartbeat_ttl_s: float = 15.0
    crash_window_s: float = 5.0
    crash_backoff_max_s: float = 300.0
    fork_server: bool = True
    preload: tuple[str, ...] = ()
    metrics_port: int | None = None  # Prometheus exposition; None: off
    metrics_host: str = "127.0.0.1"
    history: str = "auto"  # auto (while a dashboard runs), true, false: see ``history``


@dataclass(frozen=True, slots=True)
class QueueConfig:
    name: str
    label: str
    argv: tuple[str, ...]
    backend: Backend = Backend.STREAM
    stream: str = ""
    group: str = "workers"
    max_concurrent: int = 1
    cooldown_s: float = 0.0
    max_runtime_s: float = 300.0
    jobs_per_worker: int = 1
    idle_timeout_s: float = 5.0
    max_attempts: int = 3
    then: str | None = None
    batch_size: int = 100
    max_memory_mb: int | None = None
    serializer: str = "json"
    env: Mapping[str, str] = field(default_factory=dict)
    global_max_concurrent: int | None = None  # across every spawner on the Redis
    rate_limit: RateLimit | None = None  # jobs started per second, by every worker on every host

    @property
    def dead_stream(self) -> str:
        return f"{self.stream}:dead"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``rate_limit: 120/min``: a token bucket shared by every worker of the queue."""

    per_s: float
    burst: int  # most jobs started at once after a quiet spell
    text: str  # as written, for people

    UNITS = MappingProxyType({"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0})
    MAX_PER_S = 1_000_000.0

    @classmethod
    def parse(cls, text: str, burst: int | None) -> RateLimit | None:
        """``N/s``, ``N/min`` or ``N/h`` (N > 0, at most ``MAX_PER_S`` a
        second); None if it is not that."""
        count, _, unit = text.replace(" ", "").partition("/")
        try:
            n = float(count)
        except ValueError:
            return None
        if unit not in cls.UNITS or not math.isfinite(n) or n <= 0:
            return None
        per_s = n / cls.UNITS[unit]
        if per_s > cls.MAX_PER_S:
            return None
        return cls(per_s, burst or max(1, math.ceil(per_s)), text)


@dataclass(frozen=True, slots=True)
class Config:
    redis_url: str
    spawner: SpawnerConfig
    log: LogConfig
    queues: Mapping[str, QueueConfig]
    path: Path | None = None
    root: Path = field(default_factory=Path.cwd)
    sections: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # redis.wait_replicas: workers' acknowledgements wait (WAIT) for this many replicas
    wait_replicas: int = 0
    wait_timeout_s: float = 1.0

    def queue(self, name: str) -> QueueConfig:
        try:
            return self.queues[name]
        except KeyError:
            known = ", ".join(self.queues) or "none"
            raise KeyError(f"unknown queue {name!r} (configured: {known})") from None


def describe(config: Config) -> dict[str, Any]:
    """The config resolved with defaults, keyed as in the YAML file.

    Durations are ``*_s`` in code and plain keys in YAML (``cooldown_s`` is
    ``cooldown``); a queue's program is shown as the argv it resolves to.
    """

    def keyed(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(obj):
            if f.name in skip:
                continue
            value = getattr(obj, f.name)
            if isinstance(value, StrEnum):
                value = value.value
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name.removesuffix("_s")] = value
        return out

    queues = {}
    for name, q in config.queues.items():
        entry = keyed(q, skip=("name", "argv", "rate_limit"))
        entry["command"] = list(q.argv)
        entry["rate_limit"] = q.rate_limit.text if q.rate_limit else None
        entry["rate_burst"] = q.rate_limit.burst if q.rate_limit else None
        queues[name] = entry
    resolved = {
        "redis": {
            "url": config.redis_url,
            "wait_replicas": config.wait_replicas,
            "wait_timeout": config.wait_timeout_s,
        },
        "spawner": keyed(config.spawner),
        "log": keyed(config.log),
        "queues": queues,
        **{name: _section_dict(value) for name, value in config.sections.items()},
    }
    redacted: dict[str, Any] = _redacted(resolved)
    return redacted


SECRET_KEY = re.compile(r"password|passwd|secret|token", re.IGNORECASE)


def _redacted(value: Any, key: str = "") -> Any:
    """Secrets out, as the log shows them: passwords of URLs (``redact_url``)
    and the values of keys named like a password, secret or token."""
    if isinstance(value, dict):
        return {k: _redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, key) for v in value]
    if isinstance(value, str) and value and SECRET_KEY.search(key):
        return "***"
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


def _section_dict(value: Any) -> Any:
    """A section's dataclass as YAML keys (``timeout_s`` -> ``timeout``).

    A section whose YAML shape is not its fields' (a mapping of names, say)
    says so with a ``to_yaml()`` method.
    """
    if hasattr(value, "to_yaml"):
        return _section_dict(value.to_yaml())
    if isinstance(value, set | frozenset):
        return sorted(_section_dict(v) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        return {
            f.name.removesuffix("_s"): _section_dict(getattr(value, f.name)) for f in fields(value)
        }
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Mapping):
        return {k: _section_dict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_section_dict(v) for v in value]
    return value


# Where ``load_config()`` looks when neither ``-c`` nor ``ORCH_CONFIG`` names the file.
CONFIG_ENV = "ORCH_CONFIG"
SEARCH_PATH = (
    Path("config/workers.yaml"),
    Path("workers.yaml"),
    Path("~/.config/orchestrator/workers.yaml"),
    Path("/etc/orchestrator/workers.yaml"),
)


def find_config(env: Mapping[str, str] | None = None) -> Path:
    """``$ORCH_CONFIG`` if set, else the first file of ``SEARCH_PATH`` that exists."""
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    candidates = [p.expanduser() for p in SEARCH_PATH]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(p.absolute()) for p in candidates)
    raise ConfigError([f"no config file: give -c FILE or set {CONFIG_ENV}; looked for {looked}"])


def base_directory(file: Path) -> Path:
    """What relative paths of a config file are relative to, and where its
    workers run: the file's folder, or its parent when that folder is named
    ``config`` (the repository layout: ``config/workers.yaml`` -> the repo)."""
    folder = file.resolve().parent
    return folder.parent if folder.name == "config" else folder


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read, validate and resolve the config file at ``path`` (else ``find_config()``)."""
    file = Path(path) if path is not None else find_config()
    data, key_lines = read_yaml(file)
    return parse_config(
        data, path=file.resolve(), root=base_directory(file), env=os.environ, key_lines=key_lines
    )


def parse_config(
    data: object,
    path: Path | None = None,
    root: Path | None = None,
    env: Mapping[str, str] | None = None,
    key_lines: Mapping[str, int] | None = None,
) -> Config:
    """Validate an already-parsed mapping; see ``load_config``."""
    problems = Problems(key_lines=key_lines or {})
    top = Section(data, "", problems)
    env = env or {}
    root = root or Path.cwd()

    redis_section = top.child("redis")
    redis_url = redis_section.string("url", "redis://127.0.0.1:6379/0")
    if not env.get(REDIS_URL_ENV):
        _check_redis_url(redis_url, lambda m: redis_section.error("url", m))
    wait_replicas = redis_section.integer("wait_replicas", 0, min=0, max=64)
    wait_timeout_s = redis_section.number("wait_timeout", 1.0, min=0.001, max=60)
    redis_section.done()
    if env.get(REDIS_URL_ENV):
        redis_url = env[REDIS_URL_ENV]
        _check_redis_url(redis_url, lambda m: problems.add(f"${REDIS_URL_ENV}", m))

    spawner = _parse_spawner(top.child("spawner"))
    log = _parse_log(top.child("log"))
    queues = _parse_queues(top.child("queues"), root)
    sections = _parse_sections(top)
    top.done()
    _check_links(queues, problems)
    problems.raise_if_any()
    return Config(
        redis_url=redis_url,
        wait_replicas=wait_replicas,
        wait_timeout_s=wait_timeout_s,
        spawner=spawner,
        log=log,
        queues=MappingProxyType(queues),
        path=path,
        root=root,
        sections=MappingProxyType(sections),
    )


def _check_redis_url(url: str, error: Callable[[str], None]) -> None:
    if url == EMBEDDED:
        return
    if not url.startswith(URL_SCHEMES):
        error(f"must start with one of {', '.join(URL_SCHEMES)}, got {redact_url(url)!r}")
    elif url.startswith(SENTINEL_SCHEME):
        try:
            SentinelAddress.parse(url)
        except ValueError as exc:
            error(f"{redact_url(url)!r} {exc}")


def _parse_spawner(s: Section) -> SpawnerConfig:
    d = SpawnerConfig()
    max_total = s.raw("max_total_workers", "auto")
    if max_total == "auto":
        max_total = 4 * (os.cpu_count() or 1)
    elif (
        not isinstance(max_total, int) or isinstance(max_total, bool) or not 1 <= max_total <= 10**5
    ):
        s.error("max_total_workers", f"must be 'auto' or an integer 1-100000, got {max_total!r}")
        max_total = 4 * (os.cpu_count() or 1)
    cfg = SpawnerConfig(
        poll_interval_s=s.number("poll_interval", d.poll_interval_s, min=0.01, max=60),
        status_interval_s=s.number("status_interval", d.status_interval_s, min=0.1, max=86400),
        max_total_workers=max_total,
        max_memory_percent=s.number("max_memory_percent", d.max_memory_percent, min=1, max=100),
        stop_grace_s=s.number("stop_grace", d.stop_grace_s, min=0, max=3600),
        host=_parse_host(s),
        heartbeat_ttl_s=s.number("heartbeat_ttl", d.heartbeat_ttl_s, min=1, max=86400),
        crash_window_s=s.number("crash_window", d.crash_window_s, min=0, max=86400),
        crash_backoff_max_s=s.number("crash_backoff_max", d.crash_backoff_max_s, min=1, max=86400),
        fork_server=s.boolean("fork_server", d.fork_server),
        preload=s.string_list("preload", d.preload),
        **_parse_telemetry(s),
    )
    s.done()
    return cfg


HISTORY_MODES = ("auto", "true", "false")


def _parse_telemetry(s: Section) -> dict[str, Any]:
    """``metrics_port`` (null: off), ``metrics_host`` and ``history``; YAML
    reads ``history: true`` as a boolean, kept here as its text."""
    d = SpawnerConfig()
    port = s.raw("metrics_port")
    if port is not None and (
        not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535
    ):
        s.error("metrics_port", f"must be a port number 1-65535 (or null: off), got {port!r}")
        port = None
    history = s.raw("history", d.history)
    history = str(history).lower() if isinstance(history, bool) else history
    if history not in HISTORY_MODES:
        s.error("history", f"must be auto, true or false, got {history!r}")
        history = d.history
    return {
        "metrics_port": port,
        "metrics_host": s.string("metrics_host", d.metrics_host),
        "history": history,
    }


# A host name is part of every consumer name ("<host>/<worker id>") and of
# Redis keys: no separator, no blanks, no glob characters.
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


def _parse_host(s: Section) -> str:
    given = s.string("host", "")
    host = given or socket.gethostname()
    if not HOST_NAME.fullmatch(host):
        whose = "" if given else f"the machine's host name {host!r} cannot be used; set it: "
        s.error(
            "host",
            f"{whose}must be 1-128 letters, digits and . _ @ + - (starting with a letter or "
            f"digit), got {host!r}",
        )
    return host


def _parse_log(s: Section) -> LogConfig:
    d = LogConfig()
    cfg = LogConfig(
        format=LogFormat(s.string("format", d.format.value, choices=[f.value for f in LogFormat])),
        emoji=s.boolean("emoji", d.emoji),
        level=s.string("level", d.level, choices=["DEBUG", "INFO", "WARNING", "ERROR"]),
    )
    s.done()
    return cfg


def _parse_queues(s: Section, root: Path) -> dict[str, QueueConfig]:
    queues: dict[str, QueueConfig] = {}
    if not s.data:
        s.problems.add(s.path, "at least one queue must be configured")
    for name, _ in list(s.items()):
        queue = _parse_queue(name, s.child(name), root)
        if queue is not None:
            queues[name] = queue
    return queues


def _parse_queue(name: str, s: Section, root: Path) -> QueueConfig | None:
    d = QueueConfig(name=name, label=name, argv=())
    backend = Backend(s.string("backend", d.backend.value, choices=[b.value for b in Backend]))
    if backend is Backend.RQ and not s.has("script") and not s.has("command"):
        argv: tuple[str, ...] = RQ_WORKER_ARGV
    else:
        argv = _parse_program(s, root)
    env = s.raw("env", {})
    if not isinstance(env, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        s.error("env", "must be a mapping of strings to strings")
        env = {}
    cfg = QueueConfig(
        name=name,
        label=s.string("label", name.split("_")[0].upper()),
        argv=argv,
        backend=backend,
        stream=s.string("stream", name),
        group=s.string("group", d.group),
        max_concurrent=s.integer("max_concurrent", d.max_concurrent, min=1, max=10_000),
        cooldown_s=s.number("cooldown", d.cooldown_s, min=0, max=86400),
        max_runtime_s=s.number("max_runtime", d.max_runtime_s, min=0.1, max=YEAR_S),
        jobs_per_worker=s.integer("jobs_per_worker", d.jobs_per_worker, min=1, max=1_000_000),
        idle_timeout_s=s.number("idle_timeout", d.idle_timeout_s, min=0, max=YEAR_S),
        max_attempts=s.integer("max_attempts", d.max_attempts, min=1, max=1000),
        then=s.string("then", None) if s.raw("then") is not None else None,
        batch_size=s.integer("batch_size", d.batch_size, min=1, max=100_000),
        max_memory_mb=(
            s.integer("max_memory_mb", None, min=1, max=1 << 24)
            if s.raw("max_memory_mb") is not None
            else None
        ),
        serializer=s.string("serializer", d.serializer, choices=["json", "pickle"]),
        env=dict(env),
        global_max_concurrent=(
            s.integer("global_max_concurrent", None, min=1, max=100_000)
            if s.raw("global_max_concurrent") is not None
            else None
        ),
        rate_limit=_parse_rate_limit(s),
    )
    s.done()
    return cfg


def _parse_rate_limit(s: Section) -> RateLimit | None:
    has_burst = s.raw("rate_burst") is not None
    burst = s.integer("rate_burst", None, min=1, max=1_000_000) if has_burst else None
    text = s.raw("rate_limit")
    if text is None:
        if burst is not None:
            s.error("rate_burst", "needs rate_limit")
        return None
    limit = RateLimit.parse(text, burst) if isinstance(text, str) else None
    if limit is None:
        s.error(
            "rate_limit", f"must be like 120/min, 5/s or 1000/h (at most 1000000/s), got {text!r}"
        )
    return limit


def _parse_program(s: Section, root: Path) -> tuple[str, ...]:
    """``script`` runs under our own interpreter; ``command`` is an argv."""
    has_script, has_command = s.has("script"), s.has("command")
    if has_script == has_command:
        s.problems.add(s.path, "exactly one of 'script' or 'command' is required")
        s.raw("script")
        s.raw("command")
        return ()
    if has_script:
        script = s.string("script")
        if not isinstance(script, str):
            return ()
        if not (root / script).is_file():
            s.error("script", f"no such file: {root / script} (relative paths are from {root})")
        return (sys.executable, str(root / script))
    command = s.string_list("command")
    if not isinstance(command, tuple):
        return ()
    if not command:
        s.error("command", "must not be empty")
    elif _program(command[0], root, s.raw("env", {})) is None:
        s.error("command", f"{command[0]!r} is not an executable file (nor found on PATH)")
    return command


def _program(name: str, root: Path, env: object) -> str | None:
    """Where a command's program is: a path (from ``root``, the workers'
    directory) or a name on the workers' PATH; None if not executable."""
    if "/" in name:
        path = root / name
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    search = env.get("PATH") if isinstance(env, Mapping) else None
    return shutil.which(name, path=search if isinstance(search, str) else None)


def _parse_sections(top: Section) -> dict[str, Any]:
    """Settings of the apps (``orchestrator.plugins``), each validated by its owner."""
    parsed: dict[str, Any] = {}
    for name, parse in plugins.section_parsers().items():
        if top.has(name):
            parsed[name] = parse(top.child(name))
        else:
            parsed[name] = parse(Section({}, name, top.problems))
    return parsed


def _check_links(queues: Mapping[str, QueueConfig], problems: Problems) -> None:
    streams: dict[str, str] = {}
    labels: dict[str, str] = {}
    for name, queue in queues.items():
        other = labels.setdefault(queue.label, name)
        if other != name:
            problems.add(
                f"queues.{name}.label",
                f"{queue.label!r} is the label of {other!r} too (a label defaults to the "
                "name's first word in capitals); give each queue its own",
            )
        if queue.then is not None and queue.then not in queues:
            problems.add(f"queues.{name}.then", f"names unknown queue {queue.then!r}")
        elif queue.then is not None and queues[queue.then].backend is not Backend.STREAM:
            problems.add(f"queues.{name}.then", "must name a stream queue")
        if queue.then is not None and queue.backend is not Backend.STREAM:
            problems.add(f"queues.{name}.then", "is only supported on stream queues")
        if queue.backend is Backend.STREAM:
            other = streams.setdefault(queue.stream, name)
            if other != name:
                problems.add(f"queues.{name}.stream", f"{queue.stream!r} is used by {other!r} too")

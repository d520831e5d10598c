"""The ORCH_* environment: what the spawner sets and what a worker reads.

One module for both sides, so each variable's name and meaning live once:
``worker_env`` (the launcher) writes the variables of SPEC.md over the
spawner's own environment, and ``Settings.from_env`` (the worker) reads
them back; ``CONSUMER`` and ``REDIS_URL`` tag a worker's processes (the
spawner and the guard find them by it), ``config_path`` is the file a
worker program loads, ``identity`` names a forked worker's process and
``warm_up_env`` is the fork server's rehearsal. No other module spells an
``ORCH_*`` variable of a worker. A worker started by hand needs only ``ORCH_QUEUE``,
``ORCH_REDIS_URL`` and ``ORCH_STREAM``; the rest then take the config's
queue defaults.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.logs import LogConfig, LogFormat

if TYPE_CHECKING:
    from orchestrator.config import Config, QueueConfig

# Every worker carries its consumer name in CONSUMER, and its descendants
# inherit it: the tag that finds a worker's processes even once they have
# left its tree (``procs.tagged_processes``; a ``setsid`` daemon re-parented
# to init), on the Redis in REDIS_URL (another orchestrator on this machine,
# on another Redis, is none of ours).
CONSUMER = "ORCH_CONSUMER"
REDIS_URL = "ORCH_REDIS_URL"
CONFIG = "ORCH_CONFIG"
WARM_UP = "ORCH_WARM_UP"  # set for an instant by the fork server's warm-up; read by no one
REQUIRED = ("ORCH_QUEUE", REDIS_URL, "ORCH_STREAM")


@dataclass(frozen=True, slots=True)
class Settings:
    """The worker's environment, as set by the spawner (see SPEC.md)."""

    redis_url: str  # ORCH_REDIS_URL
    queue: str  # ORCH_QUEUE
    worker_id: str  # ORCH_WORKER_ID
    stream: str  # ORCH_STREAM
    group: str  # ORCH_GROUP
    consumer: str  # ORCH_CONSUMER: "<host>/<worker id>"
    deadline: float  # ORCH_DEADLINE: epoch seconds of max_runtime
    idle_timeout_s: float  # ORCH_IDLE_TIMEOUT
    max_attempts: int  # ORCH_MAX_ATTEMPTS
    then: str | None  # ORCH_THEN: the stream results go to
    batch_size: int = 100  # ORCH_BATCH_SIZE
    host: str = ""  # ORCH_HOST
    spawner_pid: int | None = None  # ORCH_SPAWNER_PID
    config_path: str | None = None  # ORCH_CONFIG
    rq_serializer: str = "json"  # ORCH_RQ_SERIALIZER
    rate_per_s: float | None = None  # ORCH_RATE_LIMIT: the queue's jobs per second, shared
    rate_burst: int = 1  # ORCH_RATE_BURST
    drain: bool = False  # ORCH_DRAIN: the queue drains: own pending entries only
    wait_replicas: int = 0  # ORCH_WAIT_REPLICAS: acknowledgements wait for this many replicas
    wait_timeout_s: float = 1.0  # ORCH_WAIT_TIMEOUT
    report_reaction: bool = False  # ORCH_METRICS=1: the spawner serves metrics
    label: str = ""  # ORCH_LABEL: the queue's label (the process title)
    log: LogConfig = field(default_factory=LogConfig)  # ORCH_LOG_FORMAT, _LEVEL, _EMOJI

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        missing = [k for k in REQUIRED if not e.get(k)]
        if missing:
            raise SystemExit(
                f"not started by the orchestrator: {', '.join(missing)} missing; "
                "run it through 'orchestrator run' (or set the ORCH_* variables)"
            )
        d = _queue_defaults() if any(not e.get(k) for k in _DEFAULTED) else None
        worker_id = e.get("ORCH_WORKER_ID") or f"{e['ORCH_QUEUE']}_{os.getpid()}"
        return cls(
            redis_url=e[REDIS_URL],
            queue=e["ORCH_QUEUE"],
            worker_id=worker_id,
            stream=e["ORCH_STREAM"],
            group=e.get("ORCH_GROUP") or _default(d, "group"),
            consumer=e.get(CONSUMER) or worker_id,
            deadline=float(e.get("ORCH_DEADLINE") or time.time() + _default(d, "max_runtime_s")),
            idle_timeout_s=float(e.get("ORCH_IDLE_TIMEOUT") or _default(d, "idle_timeout_s")),
            max_attempts=int(e.get("ORCH_MAX_ATTEMPTS") or _default(d, "max_attempts")),
            then=e.get("ORCH_THEN") or None,
            batch_size=int(e.get("ORCH_BATCH_SIZE") or _default(d, "batch_size")),
            host=e.get("ORCH_HOST", ""),
            spawner_pid=int(e["ORCH_SPAWNER_PID"]) if e.get("ORCH_SPAWNER_PID") else None,
            config_path=config_path(e),
            rq_serializer=e.get("ORCH_RQ_SERIALIZER") or _default(d, "serializer"),
            rate_per_s=float(e["ORCH_RATE_LIMIT"]) if e.get("ORCH_RATE_LIMIT") else None,
            rate_burst=int(e.get("ORCH_RATE_BURST") or 1),
            wait_replicas=int(e.get("ORCH_WAIT_REPLICAS") or 0),
            wait_timeout_s=float(e.get("ORCH_WAIT_TIMEOUT") or 1.0),
            drain=e.get("ORCH_DRAIN") == "1",
            report_reaction=e.get("ORCH_METRICS") == "1",
            label=e.get("ORCH_LABEL") or e["ORCH_QUEUE"],
            log=log_config(e),
        )


def config_path(env: Mapping[str, str]) -> str | None:
    """The config file the spawner named (``ORCH_CONFIG``), if any: what a
    worker program loads with ``orchestrator.worker.load_worker_config``."""
    return env.get(CONFIG) or None


def identity(env: Mapping[str, str]) -> tuple[str, str, str]:
    """The worker's queue, label and id (empty when unset): what names its
    process before its settings are read."""
    return env.get("ORCH_QUEUE", ""), env.get("ORCH_LABEL", ""), env.get("ORCH_WORKER_ID", "")


def warm_up_env(redis_url: str) -> dict[str, str]:
    """Every variable a spawned worker has, on throwaway values (so reading
    them imports no config): the fork server's rehearsal of a worker's start."""
    return {
        "ORCH_QUEUE": "warm-up",
        "ORCH_WORKER_ID": "warm-up",
        "ORCH_STREAM": "warm-up",
        "ORCH_GROUP": "workers",
        CONSUMER: "warm-up",
        "ORCH_DEADLINE": "0",
        "ORCH_IDLE_TIMEOUT": "5",
        "ORCH_MAX_ATTEMPTS": "3",
        "ORCH_BATCH_SIZE": "100",
        "ORCH_RQ_SERIALIZER": "json",
        REDIS_URL: redis_url,
    }


def log_config(env: Mapping[str, str]) -> LogConfig:
    """The spawner's ``log`` section, as ``log_env`` passed it (defaults when unset)."""
    d = LogConfig()
    return LogConfig(
        format=LogFormat(env.get("ORCH_LOG_FORMAT") or d.format),
        emoji=env.get("ORCH_LOG_EMOJI", "1" if d.emoji else "0") != "0",
        level=env.get("ORCH_LOG_LEVEL") or d.level,
    )


def log_env(log: LogConfig) -> dict[str, str]:
    """``log`` as the variables a worker (and the fork server) reads back with ``log_config``."""
    return {
        "ORCH_LOG_FORMAT": log.format.value,
        "ORCH_LOG_LEVEL": log.level,
        "ORCH_LOG_EMOJI": "1" if log.emoji else "0",
    }


# Variables a spawned worker always has; only a worker started by hand
# falls back to the config's queue defaults for them.
_DEFAULTED = (
    "ORCH_GROUP",
    "ORCH_DEADLINE",
    "ORCH_IDLE_TIMEOUT",
    "ORCH_MAX_ATTEMPTS",
    "ORCH_BATCH_SIZE",
    "ORCH_RQ_SERIALIZER",
)


def _queue_defaults() -> QueueConfig:
    from orchestrator.config import QueueConfig  # not on a spawned worker's path

    return QueueConfig(name="", label="", argv=())


def _default(defaults: QueueConfig | None, name: str) -> Any:
    assert defaults is not None  # loaded whenever a variable is missing
    return getattr(defaults, name)


def worker_env(
    config: Config,
    queue: QueueConfig,
    worker_id: str,
    consumer: str,
    deadline: float,
    drain: bool = False,
) -> dict[str, str]:
    """The environment a worker starts with (SPEC.md), over the spawner's own."""
    then = config.queues.get(queue.then) if queue.then else None
    rate = queue.rate_limit
    env = dict(os.environ)
    env.update(queue.env)
    env.update(
        {
            "ORCH_QUEUE": queue.name,
            "ORCH_LABEL": queue.label,
            "ORCH_WORKER_ID": worker_id,
            REDIS_URL: config.redis_url,
            "ORCH_STREAM": queue.stream,
            "ORCH_GROUP": queue.group,
            CONSUMER: consumer,
            "ORCH_DEADLINE": f"{deadline:.3f}",
            "ORCH_IDLE_TIMEOUT": f"{queue.idle_timeout_s:g}",
            "ORCH_MAX_ATTEMPTS": str(queue.max_attempts),
            "ORCH_THEN": then.stream if then else "",
            "ORCH_BATCH_SIZE": str(queue.batch_size),
            "ORCH_HOST": config.spawner.host,
            "ORCH_SPAWNER_PID": str(os.getpid()),
            CONFIG: str(config.path or ""),
            "ORCH_RQ_SERIALIZER": queue.serializer,
            "ORCH_RATE_LIMIT": repr(rate.per_s) if rate else "",
            "ORCH_RATE_BURST": str(rate.burst) if rate else "",
            "ORCH_DRAIN": "1" if drain else "",
            "ORCH_WAIT_REPLICAS": str(config.wait_replicas) if config.wait_replicas else "",
            "ORCH_WAIT_TIMEOUT": f"{config.wait_timeout_s:g}" if config.wait_replicas else "",
            "ORCH_METRICS": "1" if config.spawner.metrics_port is not None else "",
            "PYTHONUNBUFFERED": "1",
            **log_env(config.log),
        }
    )
    return env

"""The worker's Redis client: one connection, made ahead of need when it can be.

A fork server's standby connects before its job arrives (``keep_spare``):
the worker it becomes takes that client instead of connecting on its start
path, and its heartbeat takes the spare one ``heartbeat`` keeps.
"""

from __future__ import annotations

import redis

from orchestrator.connections import connect
from orchestrator.worker import heartbeat
from orchestrator.worker.workerenv import Settings

# A client made ahead of need (a fork server's standby connects before its
# job arrives), for the worker it becomes: Redis URL -> client.
_SPARE: dict[str, redis.Redis] = {}


def worker_client(settings: Settings) -> redis.Redis:
    """The worker's client: one connection (``CLIENT UNBLOCK`` of its id must
    reach the blocking read), replies decoded losslessly, a read timeout
    longer than the longest wait for work. A spare one, connected already,
    is taken when there is one."""
    timeout_s = max(settings.idle_timeout_s, 5.0) + 10.0
    client = _SPARE.pop(settings.redis_url, None)
    if client is not None and client.connection is not None:
        client.connection.socket_timeout = timeout_s
        if (sock := getattr(client.connection, "_sock", None)) is not None:
            sock.settimeout(timeout_s)
        return client
    return connect(
        settings.redis_url,
        timeout_s=timeout_s,
        connect_timeout_s=5.0,
        decode=True,  # by hiredis, in C; bytes that are not UTF-8 survive (codec)
        single_connection=True,
        fail_fast=False,
        c_packer=True,  # an acknowledgement carries a batch of ids
    )


def keep_spare(settings: Settings) -> None:
    """Connect the clients now for the worker this process will become."""
    keep_spare_client(settings.redis_url, worker_client(settings))
    heartbeat.keep_spare(settings.redis_url)


def keep_spare_client(url: str, client: redis.Redis) -> None:
    _SPARE[url] = client

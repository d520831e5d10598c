"""The scanner's Redis client: commands packed in C.

redis-py converts each command's arguments in a Python loop before handing
them to hiredis; for the scanner's XACK of a couple of thousand tick ids per
commit that loop was an eighth of the reading process's CPU. ``CPacker``
hands the arguments to ``hiredis.pack_command`` as they are, and leaves
what it cannot pack (a command name with a space, such as ``XINFO GROUPS``;
memoryviews) to redis-py's own packer.

The client reads with ``single_connection_client``: the spawner wakes a
blocked read with ``CLIENT UNBLOCK <id>``, so the id in the heartbeat must
be the reading connection's. (Pipelines take a second connection.)
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis
from redis.connection import HiredisRespSerializer

from orchestrator.worker import QUICK_CONNECT

__all__ = ["CPacker", "connect"]


class CPacker:
    """``pack(*args)`` for redis-py connections, in one C call."""

    def __init__(self) -> None:
        self._fallback = HiredisRespSerializer()

    def pack(self, *args: Any) -> list[bytes]:
        name = args[0]
        if isinstance(name, str) and " " not in name:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass  # e.g. a memoryview: redis-py converts it
        packed: list[bytes] = self._fallback.pack(*args)
        return packed


def connect(url: str, *, socket_timeout_s: float = 30.0) -> redis.Redis:
    """A client for the scanner: one reading connection, commands packed in C."""
    return redis.Redis.from_url(
        url,
        single_connection_client=True,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=5.0,
        command_packer=CPacker(),
        **QUICK_CONNECT,
    )

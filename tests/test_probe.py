"""Depth probes against real Redis 7 and 6.2: one round trip, lag, pending."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from redis.connection import Connection

from orchestrator.config import parse_config
from orchestrator.embedded import EmbeddedRedis
from orchestrator.queues import DepthProbe

CONFIG = parse_config(
    {
        "queues": {
            "ai": {"command": ["true"]},
            "up": {"command": ["true"], "stream": "uploads", "group": "uploaders"},
            "rq_jobs": {"command": ["true"], "backend": "rq"},
        }
    },
    env={},
)


@pytest.fixture(params=["redis7", "redis62"])
def server(request: Any) -> EmbeddedRedis:
    fixture = "redis_server" if request.param == "redis7" else "redis62_server"
    srv: EmbeddedRedis = request.getfixturevalue(fixture)
    redis.Redis.from_url(srv.url).flushall()
    return srv


def test_missing_streams_and_groups_are_created(server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(server.url)
    depths = DepthProbe(CONFIG.queues.values()).measure(client)
    assert {n: d.undelivered for n, d in depths.items()} == {"ai": 0, "up": 0, "rq_jobs": 0}
    assert [g["name"] for g in client.xinfo_groups("uploads")] == [b"uploaders"]


def test_lag_pending_and_consumers(server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(server.url)
    probe = DepthProbe(CONFIG.queues.values())
    probe.measure(client)
    for i in range(7):
        client.xadd("ai", {"payload": json.dumps({"i": i})})
    client.xreadgroup("workers", "h/w1", {"ai": ">"}, count=2)
    client.xreadgroup("workers", "h/w2", {"ai": ">"}, count=1)
    client.rpush("rq:queue:rq_jobs", "a", "b")
    client.xadd("ai:dead", {"error": "x"})
    d = probe.measure(client)["ai"]
    assert (d.undelivered, d.pending, d.dead_letters) == (4, 3, 1)
    assert d.pending_by_consumer == {"h/w1": 2, "h/w2": 1}
    assert d.oldest_age_s is not None and d.oldest_age_s < 5
    assert probe.measure(client)["rq_jobs"].undelivered == 2


def test_lag_after_deletions_is_counted(server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(server.url)
    probe = DepthProbe(CONFIG.queues.values())
    probe.measure(client)
    ids = [client.xadd("ai", {"n": str(i)}) for i in range(5)]
    client.xreadgroup("workers", "h/w1", {"ai": ">"}, count=1)
    client.xdel("ai", ids[3])  # makes Redis 7's lag field unknown
    assert probe.measure(client)["ai"].undelivered == 3


def test_one_round_trip_per_probe(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = redis.Redis.from_url(redis_url)
    queues = parse_config(
        {"queues": {f"q{i}": {"command": ["true"]} for i in range(20)}}, env={}
    ).queues
    probe = DepthProbe(queues.values())
    probe.load(client)
    sends = []
    original: Any = Connection.send_packed_command

    def counting(self: Connection, command: Any, check_health: bool = True) -> None:
        sends.append(command)
        original(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counting)
    depths = probe.measure(client)
    assert len(depths) == 20
    assert len(sends) == 1

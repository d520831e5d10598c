"""Redis Sentinel: jobs keep flowing across a failover, and none is lost.

A real master, replica and Sentinel (``redis-server --sentinel``); the
spawner and its workers are configured with a ``redis+sentinel://`` URL.
The master is SIGKILLed while jobs are in flight; the Sentinel promotes the
replica; every job staged before (confirmed on the replica with ``WAIT``)
and after the failover is done. Workers record what they did in a file,
since a failover may forget the last acknowledgements (a job may then run
twice: at least once, never lost).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator.connections import connect
from orchestrator.embedded import EmbeddedRedis, _die_with_parent, find_redis_server, free_port
from tests.helpers import wait_until
from tests.spawn_harness import worker_script

FILE_WORKER = worker_script("file_worker.py")
SERVICE = "orch"


def _replica_linked(replica: EmbeddedRedis) -> bool:
    info = redis.Redis.from_url(replica.url).info("replication")
    return info.get("master_link_status") == "up"


@dataclass
class Replicated:
    master: EmbeddedRedis
    replica: EmbeddedRedis
    url: str = ""  # redis+sentinel:// once a Sentinel watches them


@pytest.fixture
def pair() -> Iterator[Replicated]:
    """A master and one replica linked to it."""
    binary = find_redis_server()
    with contextlib.ExitStack() as stack:
        quick_sync = ("--repl-diskless-sync-delay", "0")  # not 5 s for more replicas
        master = stack.enter_context(EmbeddedRedis(binary=binary, extra_args=quick_sync))
        replica = stack.enter_context(
            EmbeddedRedis(binary=binary, extra_args=("--replicaof", "127.0.0.1", str(master.port)))
        )
        wait_until(lambda: _replica_linked(replica), 15, message="replica never linked")
        yield Replicated(master, replica)


@pytest.fixture
def replicated(tmp_path: Path, pair: Replicated) -> Iterator[Replicated]:
    """The pair watched by one Sentinel that fails over half a second
    after the master stops answering; ``url`` is ``redis+sentinel://``."""
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {tmp_path}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {pair.master.port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 500\n"
        f"sentinel failover-timeout {SERVICE} 3000\n"
    )
    sentinel = subprocess.Popen(
        [find_redis_server(), str(conf), "--sentinel"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    try:
        asking = redis.Redis(port=port)
        wait_until(lambda: _knows_replica(asking), 15)
        pair.url = f"redis+sentinel://127.0.0.1:{port}/{SERVICE}/0"
        yield pair
    finally:
        sentinel.kill()
        sentinel.wait()


def _knows_replica(sentinel: redis.Redis) -> bool:
    with contextlib.suppress(redis.RedisError):
        return bool(sentinel.sentinel_slaves(SERVICE))
    return False


def stage(client: redis.Redis, out: Path, ids: Iterable[int], seconds: float) -> None:
    pipe = client.pipeline(transaction=False)
    for i in ids:
        job = {"id": i, "out": str(out), "seconds": seconds}
        pipe.xadd("ai_processing", {"payload": json.dumps(job)})
    pipe.execute()


def done(out: Path) -> set[int]:
    return {int(line) for line in out.read_text().split()} if out.exists() else set()


def test_jobs_flow_across_a_failover_and_none_is_lost(
    tmp_path: Path, replicated: Replicated, spawner_factory: Any
) -> None:
    out = tmp_path / "done.txt"
    client = connect(replicated.url, fail_fast=False)
    queues = {"ai_processing": {"script": FILE_WORKER, "label": "AI", "max_concurrent": 4}}
    sp = spawner_factory(replicated.url, queues, shipped_defaults=True).start()
    stage(client, out, range(40), seconds=0.2)
    assert client.wait(1, 5000) == 1  # the replica has them
    wait_until(lambda: len(done(out)) >= 8, 15)
    os.kill(replicated.master.pid or 0, signal.SIGKILL)
    sp.wait_log("Redis unavailable", timeout_s=10)
    sp.wait_log("Redis reachable again", timeout_s=20)
    stage(client, out, range(40, 60), seconds=0)  # through the new master
    wait_until(
        lambda: done(out) >= set(range(60)),
        30,
        message=lambda: f"missing {sorted(set(range(60)) - done(out))}\n{sp.text()[-3000:]}",
    )
    promoted = redis.Redis.from_url(replicated.replica.url).info("replication")
    assert promoted["role"] == "master"
    wait_until(lambda: client.xpending("ai_processing", "workers")["pending"] == 0, 15)


def test_wait_replicas_makes_acknowledgements_wait_for_the_replica(
    tmp_path: Path, pair: Replicated, spawner_factory: Any
) -> None:
    """``redis.wait_replicas: 1`` with one replica: the replica has every
    acknowledgement once the job is done; asking for two (there is one):
    each WAIT times out, the worker says so once and carries on."""
    out = tmp_path / "done.txt"
    queues = {"ai_processing": {"script": FILE_WORKER, "label": "AI", "max_concurrent": 2}}
    master = redis.Redis.from_url(pair.master.url)
    replica = redis.Redis.from_url(pair.replica.url)

    def run(want: int) -> list[str]:
        """Four jobs done with ``wait_replicas: want``; the lines saying short."""
        sp = spawner_factory(pair.master.url, queues, name=f"want{want}", shipped_defaults=True)
        sp.write_config({**sp.config, "redis": {"url": pair.master.url, "wait_replicas": want}})
        sp.start()
        ids = set(range(want * 100, want * 100 + 4))
        stage(master, out, ids, seconds=0)
        wait_until(lambda: done(out) >= ids, 30, message=sp.text)
        wait_until(lambda: master.xpending("ai_processing", "workers")["pending"] == 0, 10)
        sp.stop()
        short: list[str] = sp.lines("replica(s) after 1s (redis.wait_replicas)")
        return short

    assert not run(1)
    assert replica.xpending("ai_processing", "workers")["pending"] == 0
    assert run(2)  # one replica for two: said, and every job done all the same

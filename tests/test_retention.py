"""Bounded Redis memory: streams trimmed, never below what a group still needs.

End to end, a real spawner and real workers run a two-stage queue, the
scanner's tick stream and a failing queue past their retention while
another consumer group lags on the first two (entries pending on it, and
entries not delivered to it yet); the trim itself (``lua/trim.lua``) on
Redis 7 and on Redis 6.2 (no ``lag`` in XINFO GROUPS).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis

from orchestrator.config import parse_config
from orchestrator.embedded import EmbeddedRedis
from orchestrator.queues import LAG_COUNT_CAP
from orchestrator.retention import TRIM_INTERVAL_S, queue_trim
from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import worker_script
from tests.test_scanner_worker import GROUP, STREAM, add, all_acked, random_rows, start_scanner

AUDIT = "audit"  # the lagging group: someone else reading the same stream
WAIT_S = 6 * TRIM_INTERVAL_S + 20.0
DROPPED_RE = re.compile(r"Dropped the (\d+) oldest dead letter\(s\) of FAILING")


def ids_of(r: TextRedis, stream: str) -> list[str]:
    return [entry_id for entry_id, _ in r.xrange(stream)]


def lag_behind(r: TextRedis, stream: str, read: int, acked: int) -> None:
    """The audit group reads ``read`` entries and acknowledges the first
    ``acked``: the rest of them stay pending, the entries after undelivered."""
    got = r.xreadgroup(AUDIT, "auditor", {stream: ">"}, count=read)
    read_ids = [entry_id for entry_id, _ in got[0][1]]
    assert len(read_ids) == read
    r.xack(stream, AUDIT, *read_ids[:acked])


def catch_up(r: TextRedis, stream: str) -> None:
    """The audit group acknowledges what it holds, then reads and
    acknowledges everything else."""
    pending = r.xpending_range(stream, AUDIT, "-", "+", 100_000)
    r.xack(stream, AUDIT, *[p["message_id"] for p in pending])
    while got := r.xreadgroup(AUDIT, "auditor", {stream: ">"}, count=1000):
        r.xack(stream, AUDIT, *[entry_id for entry_id, _ in got[0][1]])


def stream_is(r: TextRedis, stream: str, expected: Sequence[str]) -> bool:
    return ids_of(r, stream) == list(expected)


def wait_stream(r: TextRedis, stream: str, expected: Sequence[str]) -> None:
    wait_until(
        lambda: stream_is(r, stream, expected),
        WAIT_S,
        interval_s=0.1,
        message=lambda: f"{stream}: {r.xlen(stream)} entries, expected {len(expected)}",
    )


def group_done(r: TextRedis, stream: str, group: str) -> bool:
    g = next((g for g in r.xinfo_groups(stream) if g["name"] == group), None)
    return g is not None and g["pending"] == 0 and g["lag"] == 0


def enqueue(r: TextRedis, stream: str, jobs: Sequence[dict[str, Any]]) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for job in jobs:
        pipe.xadd(stream, {"payload": json.dumps(job)})
    return [str(i) for i in pipe.execute()]


def test_shipped_defaults_bound_every_stream_queue() -> None:
    config = parse_config({"queues": {"q": {"command": ["true"]}}}, env={})
    assert (config.queues["q"].retention, config.queues["q"].max_dead_letters) == (10_000, 10_000)


def test_a_queue_and_its_then_stream_past_retention_keep_what_a_lagging_group_needs(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    worker = worker_script("job_worker.py")
    queues = {
        "jobs": {"script": worker, "max_concurrent": 2, "retention": 100, "then": "results"},
        "results": {"script": worker, "max_concurrent": 1, "retention": 100},
    }
    r.xgroup_create("jobs", AUDIT, "0", mkstream=True)
    ids = enqueue(r, "jobs", [{"id": i} for i in range(1000)])
    lag_behind(r, "jobs", read=450, acked=400)  # 50 pending on it, 550 not delivered to it
    sp = spawner_factory(redis_url, queues).start()
    wait_until(lambda: r.llen("test:log") == 2000, WAIT_S, message=sp.text)
    wait_until(lambda: group_done(r, "results", "workers"), WAIT_S, message=sp.text)

    # The workers are done with every entry; the audit group is not: its
    # oldest pending entry and all after it stay, the 400 before it go.
    wait_stream(r, "jobs", ids[400:])
    wait_until(lambda: r.xlen("results") == 100, WAIT_S, message=sp.text)  # its newest 100

    catch_up(r, "jobs")
    wait_stream(r, "jobs", ids[-100:])
    assert r.xlen("jobs:dead") == 0


def test_the_scanners_tick_stream_past_retention_keeps_what_a_lagging_group_needs(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    r.xgroup_create(STREAM, AUDIT, "0", mkstream=True)
    ids = add(r, random_rows(2000, symbols=20))
    lag_behind(r, STREAM, read=600, acked=500)
    sp = start_scanner(spawner_factory, redis_url, r, {}, retention=300)
    wait_until(lambda: all_acked(r, 2000), WAIT_S, message=sp.text)
    wait_stream(r, STREAM, ids[500:])

    catch_up(r, STREAM)
    wait_stream(r, STREAM, ids[-300:])
    assert group_done(r, STREAM, GROUP)


def test_dead_letters_past_their_cap_drop_the_oldest_and_say_how_many(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    queue = {
        "script": worker_script("job_worker.py"),
        "label": "FAILING",
        "max_attempts": 1,
        "max_dead_letters": 5,
    }
    ids = enqueue(r, "failing", [{"id": i, "action": "raise"} for i in range(20)])
    sp = spawner_factory(redis_url, {"failing": queue}).start()

    def dropped() -> int:
        return sum(int(m.group(1)) for m in DROPPED_RE.finditer(sp.text()))

    wait_until(lambda: dropped() == 15, WAIT_S, message=sp.text)
    letters = r.xrange("failing:dead")
    assert [f["original_id"] for _, f in letters] == ids[-5:]
    assert "failing:dead keeps the newest 5 (max_dead_letters)" in sp.text()


# -- the script on its own, on Redis 7 and 6.2 ---------------------------------------------


@pytest.fixture(params=["7", "6.2"])
def any_redis(request: pytest.FixtureRequest, redis_server: EmbeddedRedis) -> Iterator[TextRedis]:
    """A clean client of the session's Redis, and of a Redis 6.2."""
    server = redis_server if request.param == "7" else request.getfixturevalue("redis62_server")
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


def trim(r: TextRedis, stream: str, keep: int, count_cap: int | None = None) -> int:
    pipe = r.pipeline(transaction=False)
    queue_trim(pipe, [(stream, keep)], count_cap or LAG_COUNT_CAP)
    (removed,) = pipe.execute()
    return int(removed[0])


def two_groups(r: TextRedis, n: int) -> list[str]:
    """``n`` entries; the group ``workers`` has acknowledged them all."""
    r.xgroup_create("s", "workers", "0", mkstream=True)
    r.xgroup_create("s", AUDIT, "0")
    ids = enqueue(r, "s", [{"n": i} for i in range(n)])
    while got := r.xreadgroup("workers", "w", {"s": ">"}, count=500):
        r.xack("s", "workers", *[entry_id for entry_id, _ in got[0][1]])
    return ids


def test_trim_stops_at_the_oldest_pending_entry_of_any_group(any_redis: TextRedis) -> None:
    ids = two_groups(any_redis, 1000)
    lag_behind(any_redis, "s", read=300, acked=250)  # pending 250..299, 700 undelivered
    assert trim(any_redis, "s", keep=100) == 250
    assert ids_of(any_redis, "s") == ids[250:]


def test_trim_keeps_the_retention_when_it_holds_all_that_is_needed(any_redis: TextRedis) -> None:
    ids = two_groups(any_redis, 1000)
    lag_behind(any_redis, "s", read=980, acked=970)  # 10 pending, 20 undelivered
    assert trim(any_redis, "s", keep=100) == 900
    assert ids_of(any_redis, "s") == ids[-100:]
    assert trim(any_redis, "s", keep=100) == 0


def test_trim_stops_at_the_first_undelivered_entry(any_redis: TextRedis) -> None:
    ids = two_groups(any_redis, 1000)
    lag_behind(any_redis, "s", read=600, acked=600)
    assert trim(any_redis, "s", keep=100) == 600
    assert ids_of(any_redis, "s") == ids[600:]


def test_too_much_to_count_keeps_all_that_is_needed(any_redis: TextRedis) -> None:
    ids = two_groups(any_redis, 1000)
    lag_behind(any_redis, "s", read=560, acked=550)  # needed: 450 entries, > the count cap
    assert trim(any_redis, "s", keep=500, count_cap=100) == 550
    assert ids_of(any_redis, "s") == ids[550:]


def test_a_stream_no_group_reads_keeps_its_newest(any_redis: TextRedis) -> None:
    ids = enqueue(any_redis, "s", [{"n": i} for i in range(300)])
    assert trim(any_redis, "s", keep=100) == 200
    assert ids_of(any_redis, "s") == ids[-100:]
    assert trim(any_redis, "missing", keep=100) == 0

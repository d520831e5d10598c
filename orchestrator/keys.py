"""Every Redis key the orchestrator owns, in one place.

All of them live under one prefix (``orch:``) so that ``status``, a second
host and a restarted spawner read the same truth, and an operator can list
them with ``SCAN MATCH orch:*``:

==============================  ======  ===============================================
key                             type    contents
==============================  ======  ===============================================
``orch:hosts``                  zset    host name -> heartbeat expiry (epoch seconds)
``orch:host:<host>``            string  JSON record of the spawner holding the host name
``orch:leases:<host>``          hash    worker id -> lease JSON (queue, pid, consumer,
                                        started_at, deadline, create_time)
``orch:status:<host>``          string  JSON snapshot of the host's per-queue figures
``orch:worker:<consumer>``      string  JSON heartbeat of a running worker (TTL'd)
``orch:inhand:<consumer>``      string  ids a worker is handling now (suspect entries)
``orch:done:<consumer>``        string  set once the worker completed a job (crash-loop rule)
``orch:slots:<queue>``          hash    consumer -> host: the queue's global slots in use
``orch:demand:<queue>``         hash    host -> workers it wants (fair shares of slots)
``orch:rate:<queue>``           hash    the rate limit's token bucket (tokens, at, throttled_until)
``orch:control:<queue>``        hash    operator control: paused, draining, scale (+ at)
``orch:history:<host>``         hash    the host's per-queue figures in 10 s buckets, one
                                        field per bucket of the last hour (``history``)
``orch:reaction:<host>``        hash    its workers' reaction times, as histogram bucket
                                        counts per queue (written only with metrics on)
``orch:dashboard``              string  set while a dashboard runs (TTL 30 s): spawners with
                                        ``history: auto`` then record their history
``orch:wake:<host>``            stream  its newest entry only: a worker of the host gave
                                        entries back (the spawner's watch wakes on it)
``orch:parked``                 --      not a key: the consumer that holds parked entries in
                                        every group, until the spawner hands them on
==============================  ======  ===============================================

Apps keep their own keys under the same prefix, in their own modules
(``orch:scanner:<consumer>``, ``orch:batch:<id>``).

Queue data itself stays where producers put it: a stream queue is the stream
named in the config (consumer group ``workers`` by default), its dead letters
``<stream>:dead``; an RQ queue uses RQ's own keys.
"""

from __future__ import annotations

PREFIX = "orch:"
HOSTS = f"{PREFIX}hosts"

# Consumers are named "<host>/<worker id>", so any reaper can tell which
# host's heartbeat vouches for a consumer.
CONSUMER_SEPARATOR = "/"


def host(name: str) -> str:
    return f"{PREFIX}host:{name}"


def leases(host_name: str) -> str:
    return f"{PREFIX}leases:{host_name}"


def status(host_name: str) -> str:
    return f"{PREFIX}status:{host_name}"


def worker_heartbeat(consumer: str) -> str:
    return f"{PREFIX}worker:{consumer}"


def in_hand(consumer: str) -> str:
    return f"{PREFIX}inhand:{consumer}"


def worker_done(consumer: str) -> str:
    return f"{PREFIX}done:{consumer}"


def slots(queue: str) -> str:
    return f"{PREFIX}slots:{queue}"


def demand(queue: str) -> str:
    return f"{PREFIX}demand:{queue}"


def rate(queue: str) -> str:
    return f"{PREFIX}rate:{queue}"


def control(queue: str) -> str:
    return f"{PREFIX}control:{queue}"


def history(host_name: str) -> str:
    return f"{PREFIX}history:{host_name}"


def reaction(host_name: str) -> str:
    return f"{PREFIX}reaction:{host_name}"


DASHBOARD = f"{PREFIX}dashboard"

# The consumer, in every group, that holds entries given back (by a worker
# that will not start them soon) or taken from a gone worker, until the
# spawner hands them to a worker.
PARKING_CONSUMER = f"{PREFIX}parked"


def wake(host_name: str) -> str:
    return f"{PREFIX}wake:{host_name}"


def dead_stream(stream: str) -> str:
    return f"{stream}:dead"


def consumer_name(host_name: str, worker_id: str) -> str:
    return f"{host_name}{CONSUMER_SEPARATOR}{worker_id}"


def consumer_host(consumer: str) -> str | None:
    """The host part of a consumer we named; None for foreign consumers."""
    head, sep, _ = consumer.partition(CONSUMER_SEPARATOR)
    return head if sep else None


def consumer_worker_id(consumer: str) -> str:
    return consumer.rpartition(CONSUMER_SEPARATOR)[2]


def rq_queue(name: str) -> str:
    return f"rq:queue:{name}"

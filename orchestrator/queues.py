"""Queue depth probes, stream watching, and putting jobs on queues.

``DepthProbe`` measures every configured queue in one Lua call (see
``lua/probe.lua``), queued on a pipeline the caller executes, so a spawner
tick costs one Redis round trip whatever the number of queues.

``StreamWatch`` is how the spawner reacts in milliseconds rather than at the
next poll: a dedicated connection keeps an ``XREAD BLOCK`` outstanding on the
streams that have room for more workers (and on the host's wake stream,
where a worker says it gave entries back), and its socket sits in the
spawner's ``select`` beside the signal pipe. ``XREAD`` (not ``XREADGROUP``)
consumes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from orchestrator import codec, keys
from orchestrator.config import Backend, QueueConfig
from orchestrator.scripts import load_lua
from orchestrator.status import HostStatus, publish

# Counting undelivered entries by XRANGE (Redis < 7, or lag unknown) stops
# here: enough to size any queue's workers, cheap enough for every tick.
LAG_COUNT_CAP = 10_000


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """One probe of one queue."""

    queue: str
    undelivered: int  # entries no consumer has been given yet (RQ: queue length)
    exact: bool  # False when ``undelivered`` was capped
    pending: int  # delivered, not acknowledged (RQ: started jobs)
    pending_by_consumer: Mapping[str, int]
    dead_letters: int
    oldest_age_s: float | None
    last_id: str = "0-0"
    control: Mapping[str, str] = field(default_factory=dict)  # orch:control:<queue>
    throttled: bool = False  # its rate limit is holding workers back
    global_slots: int = 0  # its slots taken across every host (by hosts still alive)

    def orphaned(self, is_live: Any) -> int:
        """Pending entries held by consumers that ``is_live(name)`` denies."""
        return sum(n for c, n in self.pending_by_consumer.items() if not is_live(c))


def _probe_spec(queue: QueueConfig, key_index: int) -> tuple[list[str], dict[str, Any]]:
    if queue.backend is Backend.RQ:
        names = [keys.rq_queue(queue.name), f"rq:wip:{queue.name}", f"rq:failed:{queue.name}"]
        spec = {"kind": "rq", "key": key_index, "wip": key_index + 1, "failed": key_index + 2}
    else:
        names = [queue.stream, queue.dead_stream]
        spec = {"kind": "stream", "key": key_index, "dead": key_index + 1, "group": queue.group}
    shared = [keys.control(queue.name), keys.rate(queue.name), keys.slots(queue.name), keys.HOSTS]
    first = key_index + len(names)
    spec |= {"control": first, "rate": first + 1, "slots": first + 2, "hosts": first + 3}
    spec["cap"] = LAG_COUNT_CAP
    return names + shared, spec


class DepthProbe:
    """Measures a fixed set of queues; rebuild it when the config changes."""

    def __init__(self, queues: Iterable[QueueConfig]) -> None:
        self.queues = list(queues)
        self.keys: list[str] = []
        specs: list[dict[str, Any]] = []
        for queue in self.queues:
            names, spec = _probe_spec(queue, len(self.keys) + 1)
            self.keys.extend(names)
            specs.append(spec)
        self.argv = json.dumps(specs)
        self.source = load_lua("probe.lua")
        self.sha: str | None = None

    def load(self, client: redis.Redis) -> None:
        """Load the script; call once per connection and after NOSCRIPT."""
        self.sha = str(client.script_load(self.source))

    def queue_on(self, pipe: redis.client.Pipeline) -> None:
        assert self.sha is not None, "call load() first"
        pipe.evalsha(self.sha, len(self.keys), *self.keys, self.argv)

    def parse(self, reply: Any) -> dict[str, QueueDepth]:
        raw = json.loads(reply)
        if not isinstance(raw, list):  # cjson encodes an empty list as {}
            raw = []
        return {q.name: _depth(q.name, r) for q, r in zip(self.queues, raw, strict=True)}

    def measure(self, client: redis.Redis) -> dict[str, QueueDepth]:
        """Probe once, outside a pipeline (CLI and tests)."""
        if not self.queues:
            return {}
        if self.sha is None:
            self.load(client)
        pipe = client.pipeline(transaction=False)
        self.queue_on(pipe)
        try:
            (reply,) = pipe.execute()
        except redis.exceptions.NoScriptError:
            self.load(client)
            return self.measure(client)
        return self.parse(reply)


def _depth(name: str, r: Mapping[str, Any]) -> QueueDepth:
    consumers = r.get("consumers") or {}
    age_ms = int(r.get("oldest_age_ms", -1))
    return QueueDepth(
        queue=name,
        undelivered=int(r["lag"]),
        exact=bool(r["exact"]),
        pending=int(r["pending"]),
        pending_by_consumer={str(k): int(v) for k, v in consumers.items()},
        dead_letters=int(r["dead"]),
        oldest_age_s=age_ms / 1000.0 if age_ms >= 0 else None,
        last_id=str(r.get("last_id", "0-0")),
        control={str(k): str(v) for k, v in (r.get("control") or {}).items()},
        throttled=bool(r.get("throttled")),
        global_slots=int(r.get("slots", 0)),
    )


@dataclass(frozen=True, slots=True)
class TickReading:
    depths: dict[str, QueueDepth]
    live_hosts: set[str]
    holder: Any  # who holds our host name (``orch:host:<host>``), as stored


class TickExtra(Protocol):
    """More commands on the tick's round trip (``telemetry.Telemetry``,
    ``retention.Retention``)."""

    def queue_on(self, pipe: redis.client.Pipeline, snapshot: HostStatus) -> int:
        """Queue commands after the tick's own; how many."""
        ...

    def took(self, replies: list[Any], round_trip_s: float) -> None:
        """Their replies, and how long the round trip took."""
        ...


class TickProbe:
    """A spawner tick's one round trip: every queue's depth (one Lua call),
    the live hosts, the record of who holds this host's name, and this
    host's heartbeat and status snapshot published (and, with an ``extra``,
    their commands)."""

    def __init__(
        self,
        client: redis.Redis,
        host: str,
        queues: Iterable[QueueConfig],
        extras: Sequence[TickExtra] = (),
    ) -> None:
        self.client = client
        self.host = host
        self.depth = DepthProbe(queues)
        self.extras = list(extras)

    def read(
        self, snapshot: HostStatus, ttl_s: float, demand: Mapping[str, int] | None = None
    ) -> TickReading:
        """``demand``: the workers this host wants of its globally capped
        queues, published with the rest (``slots``)."""
        if self.depth.sha is None:
            self.depth.load(self.client)
        try:
            reply, hosts, holder = self._execute(snapshot, ttl_s, demand or {})
        except redis.exceptions.NoScriptError:  # Redis restarted: scripts are gone
            self.depth.load(self.client)
            reply, hosts, holder = self._execute(snapshot, ttl_s, demand or {})
        depths = self.depth.parse(reply) if self.depth.queues else {}
        return TickReading(depths, {_text(h) for h in hosts}, holder)

    def _execute(
        self, snapshot: HostStatus, ttl_s: float, demand: Mapping[str, int]
    ) -> tuple[Any, list[Any], Any]:
        pipe = self.client.pipeline(transaction=False)
        self.depth.queue_on(pipe)
        pipe.zrangebyscore(keys.HOSTS, time.time(), "+inf")
        pipe.get(keys.host(self.host))
        publish(pipe, snapshot, ttl_s)
        for queue, wanted in demand.items():
            pipe.hset(keys.demand(queue), self.host, wanted)
        queued = [extra.queue_on(pipe, snapshot) for extra in self.extras]
        started = time.perf_counter()
        replies = pipe.execute()
        round_trip_s = time.perf_counter() - started
        at = len(replies) - sum(queued)
        for extra, n in zip(self.extras, queued, strict=True):
            extra.took(replies[at : at + n], round_trip_s)
            at += n
        return replies[0], replies[1], replies[2]


class StreamWatch:
    """An outstanding ``XREAD BLOCK`` whose socket the spawner selects on.

    ``arm(positions)`` makes sure one ``XREAD`` is in flight for exactly the
    given streams (from the given ids): when the set of streams changes, the
    old call is cut short with ``CLIENT UNBLOCK`` from the main connection.
    While armed, positions cannot have moved without the call returning, so
    the set is all that needs comparing. ``fileno()`` is readable when the
    call returns; ``collect()`` reads the reply. Consumes nothing.
    """

    def __init__(self, client: redis.Redis, block_ms: int = 30_000) -> None:
        self.client = client
        self.block_ms = block_ms
        self.conn: Any = None  # a redis-py Connection (its API is untyped)
        self.conn_id: int | None = None
        self.armed: frozenset[str] | None = None
        self.seen: dict[str, str] = {}  # stream -> the newest id a fired XREAD returned
        self.missed: set[str] = set()  # streams an XREAD cut short by arm() returned

    def arm(self, positions: Mapping[str, str]) -> None:
        wanted = frozenset(positions)
        if wanted == self.armed or (not wanted and self.armed is None):
            return
        if self.armed is not None:
            self.client.client_unblock(self.conn_id or 0)
            self.missed.update(self.collect())  # returned as it was cut: said at the next fired()
        if not wanted:
            return
        conn = self._connection()
        names = sorted(wanted)
        ids = [positions[n] for n in names]
        conn.send_command("XREAD", "COUNT", 1, "BLOCK", self.block_ms, "STREAMS", *names, *ids)
        self.armed = wanted

    def _connection(self) -> Any:
        if self.conn is None:
            conn: Any = self.client.connection_pool.make_connection()
            conn.connect()
            conn.send_command("CLIENT", "ID")
            self.conn_id = int(conn.read_response())
            self.conn = conn
        return self.conn

    def fileno(self) -> int | None:
        sock = getattr(self.conn, "_sock", None) if self.armed is not None else None
        return sock.fileno() if sock is not None else None

    def ready(self) -> bool:
        return self.conn is not None and self.armed is not None and self.conn.can_read(0)

    def fired(self) -> list[str]:
        """The streams the outstanding XREAD returned for (none while it has
        not); a Redis error drops the connection (the next arm reconnects)
        and rises."""
        try:
            names = self.collect() if self.ready() else []
            names += sorted(self.missed - set(names))
            self.missed.clear()
            return names
        except Exception:
            self.reset()
            raise

    def collect(self) -> list[str]:
        """Read the finished XREAD; the streams that have new entries (the
        newest id read of each is kept in ``seen``)."""
        assert self.conn is not None
        self.armed = None
        reply = self.conn.read_response()
        items = reply.items() if isinstance(reply, dict) else reply or []  # RESP3: a map
        names = []
        for name, entries in items:
            names.append(_text(name))
            if entries:
                self.seen[names[-1]] = _text(entries[-1][0])
        return names

    def reset(self) -> None:
        """Drop the connection (after a Redis error); the next arm reconnects."""
        if self.conn is not None:
            self.conn.disconnect()
        self.conn = None
        self.conn_id = None
        self.armed = None


_text = codec.text


def ensure_group(client: redis.Redis, queue: QueueConfig) -> None:
    """Create the queue's stream and group if missing (idempotent)."""
    try:
        client.xgroup_create(queue.stream, queue.group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def enqueue_jobs(
    client: redis.Redis,
    queue: QueueConfig,
    jobs: Sequence[Mapping[str, Any]],
    *,
    ensure: bool = True,
) -> list[str]:
    """Add jobs to a stream queue as ``payload`` JSON; returns entry ids.
    ``ensure``: create the stream and group first if missing."""
    if queue.backend is not Backend.STREAM:
        raise ValueError(f"queue {queue.name!r} is an RQ queue: enqueue with RQ's API")
    payloads = [codec.encode_payload(job) for job in jobs]  # a bad job fails before any write
    if ensure:
        ensure_group(client, queue)
    pipe = client.pipeline(transaction=False)
    for payload in payloads:
        pipe.xadd(queue.stream, {codec.PAYLOAD: payload})
    return [_text(i) for i in pipe.execute()]

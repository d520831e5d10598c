"""One host name, one spawner.

Everything a spawner owns in Redis is keyed by its host name: its
heartbeat, its leases, its workers' consumer names. Two spawners with the
same name (a config copied to a second VM) would adopt each other's workers
and take each other's entries. So a spawner claims its name before it does
anything else: ``orch:host:<host>`` holds the record of the spawner holding
it (machine, boot id, pid, process start, a random instance id). The claim
is refused while another spawner holds the name with a live heartbeat;
once that heartbeat expires, the name is free. A previous spawner of the
same machine and boot whose process is gone (SIGKILLed, then restarted by
supervisord) is replaced at once, so a restart never waits. Each tick
reads the record back with the heartbeat: a spawner that finds the name
taken over (its heartbeat expired during a partition) stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass

import psutil
import redis

from orchestrator import codec, keys
from orchestrator.connections import REDIS_ERRORS
from orchestrator.scripts import load_lua
from orchestrator.status import withdraw


@dataclass(frozen=True, slots=True)
class HostRecord:
    machine: str  # the machine's own host name, for people
    boot: str  # the kernel's boot id: one machine, one boot
    pid: int
    create_time: float  # psutil's start time of the process
    instance: str  # unique per spawner process

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> HostRecord | None:
        try:
            data = json.loads(text)
            return cls(**data) if isinstance(data, dict) else None
        except (ValueError, TypeError):
            return None

    def describe(self) -> str:
        return f"machine {self.machine} (pid {self.pid})"

    def gone(self) -> bool:
        """On this machine and boot, and its process no longer runs."""
        if self.boot != boot_id():
            return False
        try:
            return abs(psutil.Process(self.pid).create_time() - self.create_time) > 1.0
        except psutil.NoSuchProcess:
            return True


class HostTaken(Exception):
    """Another live spawner holds the host name."""

    def __init__(self, host: str, holder: HostRecord | None) -> None:
        self.host = host
        self.holder = holder
        who = holder.describe() if holder else "an unknown spawner"
        super().__init__(
            f"host name {host!r} is held by a live spawner on {who}; set a unique "
            "spawner.host on each machine, or stop that spawner (its heartbeat must expire)"
        )


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def this_spawner() -> HostRecord:
    return HostRecord(
        machine=socket.gethostname(),
        boot=boot_id(),
        pid=os.getpid(),
        create_time=psutil.Process().create_time(),
        instance=uuid.uuid4().hex,
    )


class HostClaim:
    """The claim of one spawner on its host name."""

    def __init__(self, client: redis.Redis, host: str, ttl_s: float) -> None:
        self.client = client
        self.host = host
        self.ttl_s = ttl_s
        self.me = this_spawner()
        self.record = self.me.to_json()
        self.claimed = False
        self._script = client.register_script(load_lua("host_claim.lua"))

    def claim(self) -> None:
        """Take the name, or raise ``HostTaken``; Redis errors propagate."""
        raw = self.client.get(keys.host(self.host))
        holder = HostRecord.from_json(raw) if raw else None
        replaceable = holder.instance if holder is not None and holder.gone() else ""
        now = time.time()
        taken = self._script(
            keys=[keys.HOSTS, keys.host(self.host)],
            args=["claim", self.host, self.record, replaceable, f"{now:.3f}", now + self.ttl_s],
        )
        if taken:
            raise HostTaken(self.host, HostRecord.from_json(taken))
        self.claimed = True

    def claim_again(self) -> None:
        """Take the name back if it was lost (Redis forgot it), or raise ``HostTaken``."""
        if not self.claimed:
            self.claim()

    def verify(self, raw: str | bytes | None) -> None:
        """``HostTaken`` if the holder's record read with a tick is another
        spawner's (the name is then not ours any more: never released)."""
        if (taken_by := self.check(raw)) is not None:
            self.claimed = False
            raise HostTaken(self.host, taken_by)

    def check(self, raw: str | bytes | None) -> HostRecord | None:
        """The holder's record as read with a tick: None while it is us (a
        record that vanished, say by FLUSHALL, is claimed again next tick)."""
        if not self.claimed:
            return None
        if raw is None:
            self.claimed = False
            return None
        text = codec.text(raw)
        if text == self.record:
            return None
        return HostRecord.from_json(text) or HostRecord("?", "", 0, 0.0, "?")

    def release(self) -> None:
        if self.claimed:
            self._script(
                keys=[keys.HOSTS, keys.host(self.host)], args=["release", self.host, self.record]
            )
            self.claimed = False

    def leave(self) -> None:
        """A clean stop: the host is gone at once (not after its TTL), its
        name free; Redis unreachable: both expire."""
        if self.claimed:
            with contextlib.suppress(*REDIS_ERRORS):
                withdraw(self.client, self.host)
                self.release()

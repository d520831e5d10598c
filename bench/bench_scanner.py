"""The market scanner end to end: ticks through Redis into alerts, on this host.

A producer process adds 300,000 ticks for 500 symbols to the stream while the
scanner runs, started by ``orchestrator run`` as in production (and warmed
up by one tick first, so its start-up is not measured). The clock runs from
the first read of the producer's ticks to the last acknowledgement (alerts
are written in the same MULTI/EXEC as their acknowledgement), both seen by
polling ``XINFO GROUPS`` every 5 ms. Each contender gets a fresh Redis.

Printed, with ratios:

- the scanner, default pool size (70% of the cores: 1 process on 2 cores) and
  2 pool processes: ticks/s, alerts (checked against one in-process engine
  over the same ticks), peak RSS of the scanner's tree, and CPU per tick of
  each process (scanner, pool, redis-server, producer; steadier than wall
  time on a shared host);
- (a) the practical limit: a bare loop that reads 2,000 entries at a time
  (raw replies, as the scanner reads) and acknowledges them, same producer,
  same measurement; and, for reference, on a pre-filled stream (no XADDs
  competing for Redis);
- (b) the seeds' way: XREADGROUP 50, one tick per ``submit`` to a
  ``ThreadPoolExecutor(5)`` (seed 000's pool), ``future.result()`` at once,
  alerts XADDed one by one, on a 20,000-tick slice, as a rate;
- memory with a stream 10 times longer (3,000,000 ticks): RSS of the scanner
  tree and the batches in flight, sampled against ticks acknowledged; RSS at
  each quarter, its slope over the second half (MiB per million ticks) and
  its peak, against the 300,000-tick run. RSS follows the batches in flight
  (bounded by ``processing_backlog``), not the ticks processed.

Each figure comes with the load average around it and with the capacity the
CPU per tick implies for idle cores: on a shared host, wall-clock rates move
with the neighbours, CPU per tick much less.

Target: >= 100,000 ticks/s end to end on 2 cores, memory flat.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import random
import resource
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import psutil
import redis

from bench.harness import ROOT, Spawner, wait_for
from orchestrator.apps.scanner.consumer import scanner_client
from orchestrator.apps.scanner.detection import PatternEngine
from orchestrator.apps.scanner.metrics_report import read_scanners
from orchestrator.apps.scanner.patterns import alert_fields
from orchestrator.apps.scanner.scanner_settings import PatternSettings
from orchestrator.embedded import EmbeddedRedis
from orchestrator.procs import tree_rss_bytes

TICKS = 300_000
LONG_TICKS = 3_000_000
SYMBOLS = 500
BASELINE_TICKS = 20_000
TARGET = 100_000
STREAM, GROUP, ALERTS = "ticks:intraday:processed", "scanner_group", "alerts:intraday"
CHUNK = 2_000
MIB = 1024 * 1024
T0 = 1_700_006_400.0

Fields = dict[bytes, bytes]


@dataclass
class Run:
    ticks: int
    elapsed_s: float
    alerts: int = 0
    peak_rss_mib: float = 0.0
    cpu_us: dict[str, float] = field(default_factory=dict)  # per tick, by process
    rss: list[tuple[int, float, int]] = field(default_factory=list)  # (acked, MiB, in flight)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after

    @property
    def rate(self) -> float:
        return self.ticks / self.elapsed_s


# -- ticks and the producer ------------------------------------------------------


def tick_fields(n: int, symbols: int, seed: int = 1) -> Iterator[Fields]:
    """A random walk per symbol with 1% volume bursts, as a feed would send it."""
    rng = random.Random(seed)
    names = [f"SYM{k:04d}".encode() for k in range(symbols)]
    price = dict.fromkeys(names, 100.0)
    for i in range(n):
        sym = names[rng.randrange(symbols)]
        price[sym] *= 1 + rng.gauss(0, 0.002)
        volume = rng.randint(1, 1000) * (20 if rng.random() < 0.01 else 1)
        yield {
            b"symbol": sym,
            b"price": b"%.2f" % price[sym],
            b"volume": b"%d" % volume,
            b"ts": b"%.3f" % (T0 + i * 0.01),
        }


def encode_xadds(stream: bytes, ticks: Iterator[Fields], n: int) -> bytes:
    """``n`` XADD commands in RESP, ready for the socket (built before the clock runs)."""
    head = b"*11\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n" % (len(stream), stream)
    parts = []
    for f in itertools.islice(ticks, n):
        sym, price, volume, ts = f[b"symbol"], f[b"price"], f[b"volume"], f[b"ts"]
        parts.append(
            head + b"$6\r\nsymbol\r\n$%d\r\n%s\r\n$5\r\nprice\r\n$%d\r\n%s\r\n"
            b"$6\r\nvolume\r\n$%d\r\n%s\r\n$2\r\nts\r\n$%d\r\n%s\r\n"
            % (len(sym), sym, len(price), price, len(volume), volume, len(ts), ts)
        )
    return b"".join(parts)


def produce(url: str, stream: str, n: int, out: Queue[float]) -> None:
    """The producer process: encode ``n`` XADDs, then send them as fast as Redis takes them.

    ``CLIENT REPLY OFF``: no replies to read, so the producer costs Redis's
    XADD and a socket write, not a client library's per-command overhead.
    Reports the CPU seconds it spent sending.
    """
    ticks = tick_fields(n, SYMBOLS)
    chunks = [encode_xadds(stream.encode(), ticks, min(CHUNK, n - k)) for k in range(0, n, CHUNK)]
    host, _, port = url.removeprefix("redis://").partition("/")[0].partition(":")
    with socket.create_connection((host, int(port))) as sock:
        before = _cpu_self()
        sock.sendall(b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n")
        for chunk in chunks:
            sock.sendall(chunk)
        sock.sendall(b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$2\r\nON\r\n")
        reply = b""
        while not reply.endswith(b"+OK\r\n"):
            reply += sock.recv(64)
        out.put(_cpu_self() - before)


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bare_loop(url: str, stream: str) -> None:
    """The practical limit: read 2,000 at a time, acknowledge, nothing else.

    Read the way the scanner reads (raw replies, commands packed in C), so the
    limit is what a consumer can do, not what redis-py's reply parsing allows.
    """
    r = scanner_client(url)
    r.set_response_callback("XREADGROUP", lambda reply, **_: reply)
    while True:
        reply: Any = r.xreadgroup(GROUP, "bare", {stream: ">"}, count=CHUNK, block=3000)
        if not reply:
            return
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        r.xack(stream, GROUP, *[entry[0] for entry in entries])


# -- measuring --------------------------------------------------------------------


def group_info(r: redis.Redis, stream: str) -> dict[str, Any]:
    groups: Any = r.xinfo_groups(stream)
    return next(g for g in groups if g["name"] in (GROUP, GROUP.encode()))


def watch(
    r: redis.Redis, base: int, n: int, tree: Callable[[], int | None], timeout_s: float = 600.0
) -> Run:
    """Poll until ``n`` more entries are read and acknowledged; RSS every 100 ms."""
    first: float | None = None
    run = Run(n, 0.0)
    next_sample = 0.0
    deadline = time.perf_counter() + timeout_s
    while True:
        g, now = group_info(r, STREAM), time.perf_counter()
        if now > deadline:
            raise TimeoutError(f"{n} ticks not acknowledged in {timeout_s:.0f}s: {g}")
        read = int(g["entries-read"] or 0) - base
        if first is None and read > 0:
            first = now
        if read >= n and g["pending"] == 0 and g["lag"] == 0:
            assert first is not None
            run.elapsed_s = now - first
            return run
        pid = tree()
        if pid is not None and now >= next_sample:
            next_sample = now + 0.1
            mib = tree_rss_bytes(pid) / MIB
            in_flight = int(next(iter(read_scanners(r)), {}).get("batches_in_flight", 0))
            run.rss.append((read - int(g["pending"]), mib, in_flight))
            run.peak_rss_mib = max(run.peak_rss_mib, mib)
        time.sleep(0.005)


def cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


@dataclass
class Meters:
    """CPU seconds of each process of a run, from a starting snapshot."""

    procs: dict[str, list[psutil.Process]]
    start: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = {name: cpu_s(ps) for name, ps in self.procs.items()}

    def per_tick_us(self, ticks: int) -> dict[str, float]:
        return {
            name: (cpu_s(ps) - self.start[name]) / ticks * 1e6 for name, ps in self.procs.items()
        }


def start_producer(url: str, n: int) -> tuple[mp.process.BaseProcess, Queue[float]]:
    ctx = mp.get_context("spawn")
    out: Queue[float] = ctx.Queue()
    proc = ctx.Process(target=produce, args=(url, STREAM, n, out), daemon=True)
    proc.start()
    return proc, out


# -- the contenders -----------------------------------------------------------------


def scanner_config(url: str, workers: int | None) -> dict[str, Any]:
    section: dict[str, Any] = {"warmup_history": 0, "log_interval": 5.0}
    if workers is not None:
        section["processing_workers"] = workers
    queue = {
        "script": str(ROOT / "workers" / "scanner_worker.py"),
        "stream": STREAM, "group": GROUP, "max_concurrent": 1, "cooldown": 0,
        "idle_timeout": 60, "max_runtime": 3600, "batch_size": 50,
    }  # fmt: skip
    return {
        "redis": {"url": url},
        "spawner": {"host": "bench", "status_interval": 3600},
        "queues": {"scanner": queue},
        "scanner": section,
    }


def run_scanner(workdir: Path, ticks: int, workers: int | None) -> Run:
    with EmbeddedRedis() as server:
        r = redis.Redis.from_url(server.url)
        r.xgroup_create(STREAM, GROUP, "0", mkstream=True)
        with Spawner(workdir, f"scanner-{ticks}-{workers}", scanner_config(server.url, workers)):
            r.xadd(STREAM, {"symbol": "WARM", "price": "1", "volume": "1", "ts": str(T0)})
            wait_for(lambda: group_info(r, STREAM)["entries-read"] == 1 and _acked(r), 60)
            pid = int(wait_for(lambda: read_scanners(r), 10)[0]["pid"])
            scanner = psutil.Process(pid)
            pool = scanner.children()
            meters = Meters(
                {"scanner": [scanner], "pool": pool, "redis": [psutil.Process(server.pid)]}
            )
            load = os.getloadavg()[0]
            producer, out = start_producer(server.url, ticks)
            run = watch(r, 1, ticks, lambda: pid)
            run.load = (load, os.getloadavg()[0])
            run.cpu_us = meters.per_tick_us(ticks)
            run.cpu_us["producer"] = out.get(timeout=60) / ticks * 1e6
            producer.join(10)
            run.alerts = int(r.xlen(ALERTS))
    return run


def _acked(r: redis.Redis) -> bool:
    return int(group_info(r, STREAM)["pending"]) == 0


def run_bare(ticks: int, prefilled: bool = False) -> Run:
    """The bare loop while the producer adds the ticks (or after, ``prefilled``)."""
    with EmbeddedRedis() as server:
        r = redis.Redis.from_url(server.url)
        r.xgroup_create(STREAM, GROUP, "0", mkstream=True)
        producer, out = start_producer(server.url, ticks) if prefilled else (None, None)
        if out is not None:
            out.get(timeout=60)  # everything is in the stream before the loop starts
        loop = mp.get_context("spawn").Process(target=bare_loop, args=(server.url, STREAM))
        loop.start()
        wait_for(lambda: prefilled or _bare_blocked(r), 30)
        load = os.getloadavg()[0]
        if not prefilled:
            producer, out = start_producer(server.url, ticks)
        run = watch(r, 0, ticks, lambda: None)
        run.load = (load, os.getloadavg()[0])
        if out is not None and not prefilled:
            out.get(timeout=60)
        for proc in (producer, loop):
            if proc is not None:
                proc.join(10)
    return run


def _bare_blocked(r: redis.Redis) -> bool:
    clients: Any = r.client_list()
    return any(c.get("cmd") == "xreadgroup" for c in clients)


def run_seeds_way(ticks: int) -> float:
    """Seed 000's scanner loop on a pre-filled slice: ticks/s."""
    with EmbeddedRedis() as server:
        r = redis.Redis.from_url(server.url)
        r.xgroup_create(STREAM, GROUP, "0", mkstream=True)
        producer, out = start_producer(server.url, ticks)
        out.get(timeout=60)
        producer.join(10)
        engine = PatternEngine(PatternSettings())
        done = 0
        with ThreadPoolExecutor(max_workers=5) as executor:
            started = time.perf_counter()
            while done < ticks:
                reply: Any = r.xreadgroup(GROUP, "seed", {STREAM: ">"}, count=50, block=1000)
                entries = reply[0][1]
                for _, f in entries:
                    row = (f[b"symbol"], f[b"price"], f[b"volume"], f[b"ts"])
                    outcome = executor.submit(engine.process, [row]).result()
                    for a in outcome.alerts:
                        r.xadd(ALERTS, alert_fields(_alert_dict(a)))  # type: ignore[arg-type]
                r.xack(STREAM, GROUP, *[e[0] for e in entries])
                done += len(entries)
            return ticks / (time.perf_counter() - started)


def _alert_dict(a: tuple[Any, ...]) -> dict[str, Any]:
    return {"symbol": a[1], "pattern": a[2], "confidence": round(a[3], 4), "price": a[4],
            "time": a[5], "direction": a[6]}  # fmt: skip


def reference_alerts(ticks: int) -> int:
    """Alerts of one in-process engine over the same ticks (the default patterns)."""
    rows = [
        (f[b"symbol"], f[b"price"], f[b"volume"], f[b"ts"]) for f in tick_fields(ticks, SYMBOLS)
    ]
    return len(PatternEngine(PatternSettings()).process(rows).alerts)


def slope_mib_per_million(samples: list[tuple[int, float, int]], total: int) -> float:
    """Least-squares slope of RSS against ticks acknowledged, over the second half."""
    pts = [(t, m) for t, m, _ in samples if t >= total // 2]
    if len(pts) < 3:
        return float("nan")
    mx = sum(t for t, _ in pts) / len(pts)
    my = sum(m for _, m in pts) / len(pts)
    num = sum((t - mx) * (m - my) for t, m in pts)
    den = sum((t - mx) ** 2 for t, _ in pts)
    return num / den * 1e6 if den else float("nan")


# -- report -------------------------------------------------------------------------


def rss_at(samples: list[tuple[int, float, int]], total: int) -> str:
    """RSS (MiB) and the most batches in flight so far, at each quarter of the ticks.

    RSS follows the in-flight backlog (at most ``processing_backlog`` batches of
    ``batch_size_max`` ticks, about 24 MiB at the defaults, whose high-water mark
    Python keeps), not the ticks processed: a leak would grow with the latter.
    """
    marks = []
    for share in (0.25, 0.5, 0.75, 1.0):
        upto = [(m, f) for t, m, f in samples if t <= share * total]
        if upto:
            marks.append(f"{upto[-1][0]:.0f} MiB ({max(f for _, f in upto)} batches)")
    return ", ".join(marks)


def describe(name: str, run: Run) -> str:
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in run.cpu_us.items())
    total = sum(run.cpu_us.values())
    cores = os.cpu_count() or 1
    return (
        f"{name}: {run.rate:,.0f} ticks/s ({run.ticks:,} ticks in {run.elapsed_s:.2f}s), "
        f"{run.alerts:,} alerts, peak RSS {run.peak_rss_mib:.0f} MiB; CPU us/tick: {cpu} "
        f"(total {total:.1f}: {cores} idle cores would do {cores * 1e6 / total:,.0f} ticks/s); "
        f"load average {run.load[0]:.1f} -> {run.load[1]:.1f}"
    )


def main() -> None:
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    print(f"{TICKS:,} ticks, {SYMBOLS} symbols, {cores} CPU cores, load average {load:.1f}")
    expected = reference_alerts(TICKS)
    with tempfile.TemporaryDirectory(prefix="bench-scanner-") as tmp:
        workdir = Path(tmp)
        default = run_scanner(workdir, TICKS, None)
        print(describe("scanner, default pool", default), flush=True)
        two = run_scanner(workdir, TICKS, 2)
        print(describe("scanner, 2 pool processes", two), flush=True)
        bare = run_bare(TICKS)
        print(
            f"(a) practical limit, bare read+ack loop: {bare.rate:,.0f} ticks/s while the "
            f"producer adds them (as the scanner), {run_bare(TICKS, prefilled=True).rate:,.0f} "
            f"on a pre-filled stream; load average {bare.load[0]:.1f} -> {bare.load[1]:.1f}",
            flush=True,
        )
        seeds = run_seeds_way(BASELINE_TICKS)
        print(f"(b) seeds' way on {BASELINE_TICKS:,} ticks: {seeds:,.0f} ticks/s", flush=True)
        best = max(default, two, key=lambda run: run.rate)
        for name, run in (("default pool", default), ("2 pool processes", two)):
            assert run.alerts == expected, f"{name}: {run.alerts} alerts, expected {expected}"
            print(
                f"  {name}: {run.rate / bare.rate:.2f}x the practical limit, "
                f"{run.rate / seeds:.1f}x the seeds' way, "
                f"{run.rate / TARGET:.2f}x the {TARGET:,} ticks/s target"
            )
        workers = 2 if best is two else None
        long = run_scanner(workdir, LONG_TICKS, workers)
        print(describe(f"scanner, {LONG_TICKS:,} ticks", long), flush=True)
        print(
            f"  memory: peak {long.peak_rss_mib:.0f} MiB at {LONG_TICKS:,} ticks vs "
            f"{best.peak_rss_mib:.0f} MiB at {TICKS:,}; RSS (most batches in flight so far) "
            f"at 1/4, 1/2, 3/4, all of the ticks: {rss_at(long.rss, LONG_TICKS)}; "
            "slope over the second half "
            f"{slope_mib_per_million(long.rss, LONG_TICKS):+.2f} MiB per million ticks "
            f"({len(long.rss)} samples)"
        )

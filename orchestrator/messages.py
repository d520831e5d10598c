"""What the spawner says: every line an operator reads in its log.

The formats of seed 004 (``🚀 Spawned worker ai_1643234567 for AI (PID:
12345, Total: 3)``...) and the project's own, each in one method of
``SpawnerLog``, so the plain and JSON forms (``logs.Events``) never drift
apart and the spawner's code says what happened, not how to word it. The
texts that also go into dead letters (``death_reason``) live here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from orchestrator import procs, scaling
from orchestrator.config import QueueConfig
from orchestrator.control import Control
from orchestrator.fleet import StopReason, Worker
from orchestrator.logs import Events
from orchestrator.procs import ExitStatus

if TYPE_CHECKING:
    from orchestrator.telemetry import Telemetry


def stop_text(worker: Worker, reason: StopReason, q: QueueConfig) -> str:
    """Why the spawner stopped a worker, for log lines and dead letters."""
    if reason is StopReason.MAX_RUNTIME:
        return f"max_runtime {q.max_runtime_s:g}s exceeded"
    if reason is StopReason.MEMORY:
        rss_mb = procs.tree_rss_bytes(worker.pid) / 2**20
        return f"memory {rss_mb:.0f} MB > max_memory_mb {q.max_memory_mb}"
    return reason.value


def death_reason(worker: Worker, status: ExitStatus, q: QueueConfig) -> str:
    """The ``error`` of entries dead-lettered because this worker died."""
    if worker.stop_reason in (StopReason.MAX_RUNTIME, StopReason.MEMORY):
        return f"worker stopped: {stop_text(worker, worker.stop_reason, q)}"
    if status.signal is not None:
        return f"worker died: signal {status.signal}"
    if status.code is None:
        return "worker lost"
    return f"worker exited: code {status.code}"


def yield_for_cap(max_total: int) -> str:
    """Why a worker gives its slot up to a queue that has none."""
    return f"max_total_workers {max_total} is reached and another queue has work and no worker"


def held_back(q: QueueConfig, control: Control) -> str:
    """Why the workers of a paused or draining queue give their slots up."""
    return f"{q.label} is {'paused' if control.paused else 'draining'}"


def exit_icon(status: ExitStatus) -> str:
    """🏁 exited 0 (or gone, for an adopted worker), ⏳ exited 75 (a dependency
    is down), 💀 any other code or a signal: the README's legend."""
    if status.code == 75:
        return "⏳"
    if status.ok or (status.code is None and status.signal is None):
        return "🏁"
    return "💀"


class SpawnerLog:
    """The spawner's lines, over ``Events`` (plain or JSON, with or without
    pictographs). A ``telemetry`` observes the spawns and exits for the
    metrics and the history: what is logged is what is counted."""

    def __init__(self, events: Events, telemetry: Telemetry | None = None) -> None:
        self.events = events
        self.telemetry = telemetry

    def start(self, host: str, pid: int, queues: Iterable[QueueConfig]) -> None:
        watched = ", ".join(f"{q.name} ({q.label}, max {q.max_concurrent})" for q in queues)
        self.events.info("start", "🟢", f"Spawner on {host} (PID: {pid}) watching {watched}")

    def stopping(self, workers: int) -> None:
        self.events.info("stopping", "🛑", f"Stopping: terminating {workers} worker(s)")

    def stopped(self, host: str) -> None:
        self.events.info("stopped", "👋", f"Spawner on {host} stopped")

    def host_taken(self, host: str, why: object) -> None:
        self.events.error("host_taken", "⛔", f"Refusing to run: {why}", host=host)

    def reload_refused(self, problems: Sequence[str]) -> None:
        self.events.error(
            "reload_refused",
            "❌",
            f"Config reload refused, keeping the old one: {'; '.join(problems)}",
        )

    def reloaded(self, source: object, queues: int, redis_url_changed: bool) -> None:
        if redis_url_changed:
            self.events.warning("reload", "⚠️", "redis.url changed: takes effect on restart")
        self.events.info("reload", "🔄", f"Config reloaded from {source}: {queues} queues")

    def command_refused(self, error: object) -> None:
        self.events.error("tick_failed", "❌", f"Redis refused a command: {error}")

    def spawn_failed(self, q: QueueConfig, error: object) -> None:
        self.events.error("spawn_failed", "❌", f"Cannot start worker for {q.label}: {error}")

    def spawned(self, worker: Worker, q: QueueConfig, total: int) -> None:
        if self.telemetry is not None:
            self.telemetry.spawned(q.name)
        self.events.info(
            "spawn",
            "🚀",
            f"Spawned worker {worker.worker_id} for {q.label} (PID: {worker.pid}, Total: {total})",
            queue=q.name,
            worker_id=worker.worker_id,
            pid=worker.pid,
            parked=worker.handed,
        )

    def terminating(self, worker: Worker, q: QueueConfig, reason: StopReason) -> None:
        self.events.warning(
            "terminate",
            "⏰" if reason is StopReason.MAX_RUNTIME else "🧠",
            f"Terminating worker {worker.worker_id} for {q.label}: "
            f"{stop_text(worker, reason, q)} (PID: {worker.pid})",
            queue=q.name,
            worker_id=worker.worker_id,
            pid=worker.pid,
            reason=reason.value,
        )

    def yielding(self, worker: Worker, q: QueueConfig, why: str) -> None:
        self.events.info(
            "yield",
            "↪️",
            f"Worker {worker.worker_id} for {q.label} gives its slot up after its job: {why}",
            queue=q.name,
            worker_id=worker.worker_id,
            pid=worker.pid,
        )

    def control(self, q: QueueConfig, was: Control, now: Control, drained: bool) -> None:
        """The operator changed the queue's control (or it is drained now)."""
        if drained:
            icon, text = (
                "✅",
                f"{q.label} drained: nothing held; new entries wait (resume starts them)",
            )
        elif now.paused and not was.paused:
            icon, text = "⏸️", f"{q.label} paused: no new workers; live ones finish their job"
        elif now.draining and not was.draining:
            icon, text = "🚰", f"{q.label} draining: what is held is finished, nothing new taken"
        elif was.holds_back and not now.holds_back:
            icon, text = "▶️", f"{q.label} resumed"
        else:
            scale = (
                "max_concurrent from the config"
                if now.scale is None
                else f"max_concurrent {now.scale}"
            )
            icon, text = "📐", f"{q.label} scaled: {scale}"
        self.events.info("control", icon, text, queue=q.name, control=now.describe())

    def exited(
        self,
        worker: Worker,
        status: ExitStatus,
        q: QueueConfig,
        runtime_s: float,
        leftovers: int,
        total: int,
    ) -> None:
        if self.telemetry is not None:
            self.telemetry.exited(q.name, worker.stop_reason, status)
        if status.signal is not None:
            how = f"killed by {status.describe()}"
        elif status.code is None:
            how = "gone"
        else:
            how = f"exited with {status.describe()}"
        why = f", stopped for {worker.stop_reason.value}" if worker.stop_reason else ""
        extra = f", killed {leftovers} leftover process(es)" if leftovers else ""
        self.events.info(
            "exit",
            exit_icon(status),
            f"Worker {worker.worker_id} for {q.label} {how} after {runtime_s:.1f}s{why}{extra} "
            f"(Total: {total})",
            queue=q.name,
            worker_id=worker.worker_id,
            pid=worker.pid,
            code=status.code,
            signal=status.signal,
            runtime_s=round(runtime_s, 3),
        )

    def crash_loop(self, q: QueueConfig, window_s: float, streak: int, delay_s: float) -> None:
        self.events.warning(
            "crash_loop",
            "🔁",
            f"{q.label} workers keep failing within {window_s:g}s of start without "
            f"completing a job ({streak} in a row): next spawn in {delay_s:.0f}s",
            queue=q.name,
            streak=streak,
        )

    def judged(
        self,
        q: QueueConfig,
        verdict: scaling.ExitVerdict,
        was: scaling.Backoff,
        backoff: scaling.Backoff,
        now: float,
        window_s: float,
    ) -> None:
        """An exit judged by the crash-loop rule (``backoff`` after it, ``was``
        before): said when a crash loop or a wait for a dependency starts."""
        if verdict is scaling.ExitVerdict.CRASH and backoff.streak >= 2:
            self.crash_loop(q, window_s, backoff.streak, backoff.delay_s(now))
        elif verdict is scaling.ExitVerdict.TEMPFAIL and was.reason != scaling.TEMPFAIL_REASON:
            self.tempfail(q, scaling.EX_TEMPFAIL, scaling.TEMPFAIL_RETRY_S)

    def tempfail(self, q: QueueConfig, code: int, retry_s: float) -> None:
        self.events.warning(
            "tempfail",
            "⏳",
            f"{q.label} workers wait for a dependency (exit {code}): "
            f"retrying every {retry_s:g}s, at once when Redis returns",
            queue=q.name,
        )

    def adopted(self, worker: Worker, q: QueueConfig) -> None:
        self.events.info(
            "adopt",
            "🤝",
            f"Adopted running worker {worker.worker_id} for {q.label} (PID: {worker.pid})",
            queue=q.name,
        )

    def left_behind(self, host: str, pids: Iterable[int]) -> None:
        listed = ", ".join(map(str, sorted(pids)))
        self.events.warning(
            "left_behind",
            "🧹",
            f"Killed {len(listed.split(', '))} process(es) left behind by previous workers "
            f"of {host} (PIDs: {listed})",
            pids=listed.replace(" ", ""),
        )

    def guard_restarted(self) -> None:
        self.events.warning("guard", "⚠️", "Guard process gone; restarting it")

    def memory(self, ok: bool, percent: float, max_percent: float) -> None:
        if ok:
            self.events.info("memory_ok", "✅", f"Host memory at {percent:.0f}%: spawning again")
        else:
            self.events.warning(
                "memory_high",
                "🧠",
                f"Host memory at {percent:.0f}% > max_memory_percent {max_percent:g}: not spawning",
            )

    def dead_letters_dropped(self, q: QueueConfig, dropped: int) -> None:
        self.events.warning(
            "dead_letters_dropped",
            "🗑️",
            f"Dropped the {dropped} oldest dead letter(s) of {q.label}: {q.dead_stream} keeps "
            f"the newest {q.max_dead_letters} (max_dead_letters)",
            queue=q.name,
            dropped=dropped,
        )

    def status(self, line: str) -> None:
        self.events.info("status", "📊", line)

"""The pure decisions: how many workers, cooldown slots, crash-loop backoff."""

from __future__ import annotations

from orchestrator.config import parse_config
from orchestrator.fleet import Lease, Worker
from orchestrator.queues import QueueDepth
from orchestrator.queuestate import QueueState
from orchestrator.scaling import Backoff, QueueFacts, cooling_slots, plan_spawns, wanted_new


def facts(name: str = "ai", **kw: int | bool) -> QueueFacts:
    base: dict[str, int | bool] = {
        "max_concurrent": 3,
        "jobs_per_worker": 1,
        "live": 0,
        "idle_live": 0,
        "backlog": 0,
    }
    base.update(kw)
    return QueueFacts(name=name, **base)  # type: ignore[arg-type]


def test_seed_scenario_five_jobs_max_three() -> None:
    assert plan_spawns([facts(backlog=5)], total_live=0, max_total_workers=100) == {"ai": 3}


def test_seed_scenario_mixed_queues() -> None:
    plan = plan_spawns(
        [
            facts("ai", max_concurrent=3, backlog=4),
            facts("upload", max_concurrent=2, backlog=3),
            facts("investor", max_concurrent=1, backlog=1),
        ],
        total_live=0,
        max_total_workers=100,
    )
    assert plan == {"ai": 3, "upload": 2, "investor": 1}


def test_busy_workers_do_not_absorb_new_work() -> None:
    # two workers each deep in a long job; one new job arrives: it gets a worker now
    assert wanted_new(facts(live=2, idle_live=0, backlog=1)) == 1


def test_idle_workers_absorb_backlog() -> None:
    assert wanted_new(facts(live=2, idle_live=2, backlog=2)) == 0
    assert wanted_new(facts(live=1, idle_live=1, backlog=3)) == 2


def test_jobs_per_worker() -> None:
    assert wanted_new(facts(max_concurrent=10, jobs_per_worker=50, backlog=120)) == 3


def test_never_above_max_nor_below_zero() -> None:
    assert wanted_new(facts(live=3, backlog=100)) == 0
    assert wanted_new(facts(live=3, idle_live=3, backlog=0)) == 0
    assert wanted_new(facts(live=5, backlog=1)) == 0  # after lowering max_concurrent


def test_cooling_slots_and_blocked_queues() -> None:
    assert wanted_new(facts(backlog=5, cooling=2)) == 1
    assert wanted_new(facts(backlog=5, blocked=True)) == 0
    assert cooling_slots([0.0, 5.0, 9.5], now=10.0, cooldown_s=1.0) == 1


def test_host_cap_is_shared_fairly() -> None:
    plan = plan_spawns(
        [facts("a", max_concurrent=5, backlog=10), facts("b", max_concurrent=5, backlog=10)],
        total_live=1,
        max_total_workers=5,
    )
    assert plan == {"a": 2, "b": 2}


def test_no_spawns_when_memory_is_high() -> None:
    assert plan_spawns([facts(backlog=5)], 0, 100, memory_ok=False) == {}


def test_crash_loop_backoff_doubles_and_resets() -> None:
    b = Backoff()
    delays = []
    now = 100.0
    for _ in range(5):
        b = b.after_exit(now, runtime_s=0.2, failed=True, window_s=5.0, max_s=10.0)
        delays.append(b.delay_s(now))
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert b.after_exit(now, runtime_s=30.0, failed=True, window_s=5.0) == Backoff()
    assert b.after_exit(now, runtime_s=0.1, failed=False, window_s=5.0) == Backoff()


def test_busy_rq_workers_do_not_absorb_new_work() -> None:
    # RQ names no holder of a started job: its started-job count keeps that many busy
    config = parse_config({"queues": {"reports": {"backend": "rq", "max_concurrent": 3}}})
    state = QueueState(config=config.queues["reports"])
    busy = Worker(Lease("rq_1", "reports", "h/rq_1", 1, 0.0, 300.0, 0.0), None, 0.0)

    def depth(queued: int, started: int) -> QueueDepth:
        return QueueDepth("reports", queued, True, started, {}, 0, None)

    state.depth = depth(queued=1, started=1)
    assert wanted_new(state.facts([busy], now=0.0)) == 1
    state.depth = depth(queued=1, started=0)  # the one worker is idle: it takes the job
    assert wanted_new(state.facts([busy], now=0.0)) == 0

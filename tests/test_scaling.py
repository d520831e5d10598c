"""The pure decisions: how many workers, cooldown slots, crash-loop backoff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.config import parse_config
from orchestrator.fleet import Worker
from orchestrator.leases import Lease
from orchestrator.queues import QueueDepth
from orchestrator.queuestate import QueueState, apply_config
from orchestrator.scaling import (
    TEMPFAIL_RETRY_S,
    Backoff,
    ExitFacts,
    ExitVerdict,
    QueueFacts,
    cooling_slots,
    exit_verdict,
    plan_spawns,
    plan_yields,
    wanted_new,
)


def facts(name: str = "ai", **kw: float | bool) -> QueueFacts:
    base: dict[str, float | bool] = {
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


def exit_facts(**kw: Any) -> ExitFacts:
    base: dict[str, Any] = {
        "requested": False,
        "code": 1,
        "completed": False,
        "working": False,
        "runtime_s": 0.2,
        "early_with_work": False,
    }
    base.update(kw)
    return ExitFacts(**base)


def test_crash_loop_backoff_doubles_and_resets() -> None:
    b = Backoff()
    delays = []
    now = 100.0
    for _ in range(5):
        b = b.after_exit(ExitVerdict.CRASH, now, max_s=10.0)
        delays.append(b.delay_s(now))
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert b.reason == "crash loop"
    assert b.after_exit(ExitVerdict.STOPPED, now) == b  # a stop says nothing
    assert b.after_exit(ExitVerdict.FINE, now) == Backoff()


def test_a_dependency_outage_is_retried_at_a_fixed_pace_and_lifted_by_redis() -> None:
    b = Backoff().after_exit(ExitVerdict.CRASH, 0.0).after_exit(ExitVerdict.CRASH, 0.0)
    for now in (10.0, 20.0, 30.0):  # never doubles
        b = b.after_exit(ExitVerdict.TEMPFAIL, now)
        assert b.delay_s(now) == TEMPFAIL_RETRY_S
        assert b.reason == "dependency unavailable"
    assert b.streak == 2  # the crash streak is neither grown nor forgotten
    assert not b.lifted_for_redis().in_force(30.0)
    crashing = Backoff().after_exit(ExitVerdict.CRASH, 0.0).after_exit(ExitVerdict.CRASH, 0.0)
    assert crashing.lifted_for_redis() == crashing


def test_only_a_worker_that_did_nothing_counts_towards_a_crash_loop() -> None:
    window = 5.0
    assert exit_verdict(exit_facts(), window) is ExitVerdict.CRASH
    assert exit_verdict(exit_facts(code=None), window) is ExitVerdict.CRASH  # a signal
    # killed from outside after doing work (OOM killer, operator): fine
    assert exit_verdict(exit_facts(code=None, completed=True), window) is ExitVerdict.FINE
    # killed by the job it was running: the job's attempts deal with it
    assert exit_verdict(exit_facts(code=None, working=True), window) is ExitVerdict.FINE
    # stopped by the spawner: says nothing about the program
    assert exit_verdict(exit_facts(code=None, requested=True), window) is ExitVerdict.STOPPED
    # stopped itself for its deadline or idle timeout after working: fine
    assert exit_verdict(exit_facts(code=0, completed=True), window) is ExitVerdict.FINE
    # exit 0 at once while work waits, having done nothing: a broken script
    early = exit_facts(code=0, early_with_work=True)
    assert exit_verdict(early, window) is ExitVerdict.CRASH
    assert exit_verdict(exit_facts(code=0), window) is ExitVerdict.FINE  # idle, nothing waits
    assert exit_verdict(exit_facts(runtime_s=30.0), window) is ExitVerdict.FINE  # lived long
    assert exit_verdict(exit_facts(code=75), window) is ExitVerdict.TEMPFAIL
    assert exit_verdict(exit_facts(code=75, requested=True), window) is ExitVerdict.STOPPED
    # the runtime failed in its own code and gave its entries back: a broken setup
    assert exit_verdict(exit_facts(code=70, working=True), window) is ExitVerdict.CRASH
    assert exit_verdict(exit_facts(code=70, completed=True), window) is ExitVerdict.FINE


def test_a_queue_over_its_fair_share_gives_a_slot_to_a_starving_one() -> None:
    queues = [
        facts("a", backlog=50, live=3, max_concurrent=3, tenure_s=0.1),
        facts("b", backlog=5, live=0),
    ]
    assert plan_yields(queues, total_live=3, max_total_workers=3, turn_s=2.0) == {"a": 1}
    # a yield already under way is not asked for twice
    queues[0] = facts("a", backlog=50, live=3, max_concurrent=3, yielding=1)
    assert plan_yields(queues, total_live=3, max_total_workers=3, turn_s=2.0) == {}
    # room on the host: spawning handles it, nobody yields
    assert plan_yields(queues, total_live=2, max_total_workers=3, turn_s=2.0) == {}


def test_more_queues_than_the_cap_take_turns() -> None:
    running = [facts(f"q{i}", backlog=9, live=1, tenure_s=float(i)) for i in range(8)]
    waiting = [facts(f"w{i}", backlog=9, live=0) for i in range(3)]
    plan = plan_yields(running + waiting, total_live=8, max_total_workers=8, turn_s=2.0)
    assert plan == {"q7": 1, "q6": 1, "q5": 1}  # the longest holders, one each
    young = [facts(f"q{i}", backlog=9, live=1, tenure_s=1.0) for i in range(8)]
    assert plan_yields(young + waiting, total_live=8, max_total_workers=8, turn_s=2.0) == {}


def test_the_longest_waiting_queue_gets_a_freed_slot_first() -> None:
    queues = [facts("a", backlog=1, starved_s=1.0), facts("z", backlog=1, starved_s=5.0)]
    assert plan_spawns(queues, total_live=7, max_total_workers=8) == {"z": 1}


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


def test_a_reload_that_changes_a_queue_lifts_its_backoff(tmp_path: Path) -> None:
    for script in ("x.py", "x2.py", "y.py"):
        (tmp_path / script).touch()
    before = parse_config(
        {"queues": {"a": {"script": "x.py"}, "b": {"script": "y.py"}}}, root=tmp_path
    )
    states = {n: QueueState(config=q) for n, q in before.queues.items()}
    for state in states.values():
        state.backoff = (
            Backoff()
            .after_exit(ExitVerdict.CRASH, 0.0)
            .after_exit(ExitVerdict.CRASH, 0.0, max_s=300.0)
        )
    fixed = parse_config(
        {"queues": {"a": {"script": "x2.py"}, "b": {"script": "y.py"}}}, root=tmp_path
    )
    apply_config(states, fixed.queues)
    assert states["a"].backoff == Backoff()  # its program changed: a fresh start
    assert states["b"].backoff.streak == 2  # unchanged: still backing off
    status = states["b"].status([], now=0.5)
    assert status.backoff_reason == "crash loop" and status.backoff_s == 0.5

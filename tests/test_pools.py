"""KillablePool with real processes: timeouts, crashes, caps, stalls, shutdown.

``misbehave`` below is the pool target: the launcher imports this module, so
every misbehaviour is chosen by the task's payload. Waits poll with
deadlines (``tests.helpers.wait_until``, ``procs.wait_gone``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from orchestrator.pools import (
    KillablePool,
    Outcome,
    OutcomeKind,
    PoolAborted,
    PoolError,
    PoolSettings,
    Task,
    dispatch_depth,
    linger_time,
    plan_grants,
    plan_workers,
)
from orchestrator.procs import pid_alive, wait_gone
from tests.helpers import wait_until

TARGET = "tests.test_pools:misbehave"
TIMEOUT_S = 0.5
MARGIN_S = 0.5  # the parent checks deadlines exactly; this covers a busy CI box


def misbehave(context: object, payload: tuple[str, object]) -> object:
    """The pool target: do what the payload says."""
    action, arg = payload
    if action == "square":
        return int(arg) ** 2  # type: ignore[call-overload]
    if action == "context":
        return context
    if action == "pid":
        return os.getpid()
    if action == "polars_threads":
        import polars

        return polars.thread_pool_size()
    if action == "raise":
        raise ValueError(arg)
    if action == "unpicklable":
        return lambda: None
    if action == "nap":
        time.sleep(float(arg))  # type: ignore[arg-type]
        return "rested"
    if action == "exit":
        os._exit(int(arg))  # type: ignore[call-overload]
    if action == "signal":
        os.kill(os.getpid(), int(arg))  # type: ignore[call-overload]
        time.sleep(10)
    Path(str(arg)).write_text(str(os.getpid()))  # the rest hang; say who we are first
    _hang(action, Path(str(arg)))
    return None


def _hang(action: str, pid_file: Path) -> None:
    if action == "sleep":
        time.sleep(3600)
    elif action == "spin":
        while True:
            pass
    elif action == "read":
        r, _w = os.pipe()
        os.read(r, 1)  # nobody writes
    elif action in ("hog", "hog_child"):
        _hog(in_child=action == "hog_child")
    elif action == "daemon":  # and return
        _start_daemon(pid_file.with_suffix(".daemon"))
    elif action == "daemon_then_hang":
        _start_daemon(pid_file.with_suffix(".daemon"))
        time.sleep(3600)
    elif action == "daemon_then_die":
        _start_daemon(pid_file.with_suffix(".daemon"))
        os._exit(3)
    elif action == "child":
        child = subprocess.Popen(["sleep", "3600"])
        pid_file.with_suffix(".child").write_text(str(child.pid))
        time.sleep(3600)


def _hog(*, in_child: bool) -> None:
    """Hold 400 MB, or have a subprocess started from a thread hold them."""
    if in_child:
        hog = "import time; block = bytearray(b'x') * (400 << 20); time.sleep(3600)"
        starter = threading.Thread(target=subprocess.Popen, args=([sys.executable, "-c", hog],))
        starter.start()
        time.sleep(3600)
    block = bytearray(b"x") * (400 << 20)  # touched, so resident
    time.sleep(3600)
    del block


def _start_daemon(pid_file: Path) -> None:
    """A ``setsid`` daemon, orphaned at once (its shell exits): ``pid_file`` says its pid."""
    script = "setsid sleep 3600 </dev/null >/dev/null 2>&1 & echo $!"
    shell = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    daemon = int(shell.stdout)
    assert wait_until(lambda: os.getsid(daemon) == daemon, timeout_s=5.0)  # its own session
    pid_file.write_text(str(daemon))


def _settings(**overrides: object) -> PoolSettings:
    values: dict[str, object] = {"target": TARGET, "size": 2, "preload": ("tests.test_pools",)}
    values.update(overrides)
    return PoolSettings(**values)  # type: ignore[arg-type]


def _by_key(outcomes: list[Outcome]) -> dict[str, Outcome]:
    return {o.key: o for o in outcomes}


def _squares(n: int, start: int = 0) -> list[Task]:
    return [Task(f"sq{i}", ("square", i)) for i in range(start, start + n)]


@pytest.fixture(scope="module")
def pool() -> Iterator[KillablePool]:
    with KillablePool(_settings()) as shared:
        yield shared


def _read_pid(path: Path) -> int:
    return int(wait_until(lambda: path.exists() and path.read_text(), timeout_s=5.0))


# ------------------------------------------------------------------ results


def test_every_task_gets_its_result_exactly_once(pool: KillablePool) -> None:
    outcomes = list(pool.run(_squares(60)))
    assert sorted(o.key for o in outcomes) == sorted(f"sq{i}" for i in range(60))
    assert all(o.ok and o.value == int(o.key[2:]) ** 2 for o in outcomes)


def test_each_batch_has_its_own_context(pool: KillablePool) -> None:
    first = list(pool.run([Task(f"c{i}", ("context", None)) for i in range(8)], {"batch": 1}))
    second = list(pool.run([Task(f"c{i}", ("context", None)) for i in range(8)], {"batch": 2}))
    assert {str(o.value) for o in first} == {"{'batch': 1}"}
    assert {str(o.value) for o in second} == {"{'batch': 2}"}


def test_an_exception_is_recorded_with_its_message_and_the_worker_stays(
    pool: KillablePool,
) -> None:
    list(pool.run(_squares(4)))
    before = set(pool.pids())
    outcomes = _by_key(list(pool.run([Task("bad", ("raise", "corrupt bar 17")), *_squares(6)])))
    assert outcomes["bad"].kind is OutcomeKind.ERROR
    assert outcomes["bad"].error == "ValueError: corrupt bar 17"
    assert all(outcomes[f"sq{i}"].ok for i in range(6))
    assert set(pool.pids()) == before


def test_a_result_that_does_not_pickle_is_an_error(pool: KillablePool) -> None:
    (outcome,) = pool.run([Task("fn", ("unpicklable", None))])
    assert outcome.kind is OutcomeKind.ERROR
    assert outcome.error is not None and "could not be sent" in outcome.error


# ------------------------------------------------------------------ timeouts


@pytest.mark.parametrize("hang", ["sleep", "spin", "read"])
def test_a_hanging_task_times_out_and_its_worker_is_replaced(
    pool: KillablePool, hang: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "hung.pid"
    tasks = [Task("hung", (hang, str(pid_file)), timeout_s=TIMEOUT_S), *_squares(20)]
    outcomes = _by_key(list(pool.run(tasks)))
    hung = outcomes["hung"]
    assert hung.kind is OutcomeKind.TIMEOUT
    assert TIMEOUT_S <= hung.elapsed_s <= TIMEOUT_S + MARGIN_S
    assert all(outcomes[f"sq{i}"].ok for i in range(20))
    assert wait_gone([_read_pid(pid_file)], timeout_s=5.0) == []
    assert len(list(pool.run(_squares(4)))) == 4  # the pool goes on


def test_a_timeout_kills_the_workers_children_too(pool: KillablePool, tmp_path: Path) -> None:
    pid_file = tmp_path / "parent.pid"
    (outcome,) = pool.run([Task("kids", ("child", str(pid_file)), timeout_s=TIMEOUT_S)])
    assert outcome.kind is OutcomeKind.TIMEOUT
    child = _read_pid(pid_file.with_suffix(".child"))
    assert wait_gone([_read_pid(pid_file), child], timeout_s=5.0) == []


def test_no_daemon_a_task_started_outlives_it(pool: KillablePool, tmp_path: Path) -> None:
    """Returned, timed out or crashed: the task's setsid daemons die with it."""
    returned = tmp_path / "returned.pid"
    (done,) = pool.run([Task("returns", ("daemon", str(returned)), timeout_s=10)])
    assert done.ok and done.value is None
    assert wait_gone([_read_pid(returned.with_suffix(".daemon"))], timeout_s=5.0) == []
    hung, died = tmp_path / "hung.pid", tmp_path / "died.pid"
    tasks = [
        Task("hangs", ("daemon_then_hang", str(hung)), timeout_s=2.0),
        Task("dies", ("daemon_then_die", str(died)), timeout_s=10),
    ]
    outcomes = _by_key(list(pool.run(tasks)))
    assert outcomes["hangs"].kind is OutcomeKind.TIMEOUT
    assert outcomes["dies"].kind is OutcomeKind.DIED
    daemons = [_read_pid(hung.with_suffix(".daemon")), _read_pid(died.with_suffix(".daemon"))]
    assert wait_gone(daemons, timeout_s=5.0) == []
    assert len(list(pool.run(_squares(4)))) == 4  # the pool goes on


def test_a_memory_hog_is_killed_at_its_cap(pool: KillablePool, tmp_path: Path) -> None:
    task = Task("hog", ("hog", str(tmp_path / "hog.pid")), timeout_s=20, memory_limit_mb=250)
    (outcome,) = pool.run([task])
    assert outcome.kind is OutcomeKind.MEMORY
    assert outcome.error is not None
    assert re.fullmatch(r"memory limit exceeded: \d+ MB > 250 MB cap", outcome.error)
    assert wait_gone([_read_pid(tmp_path / "hog.pid")], timeout_s=5.0) == []


def test_the_memory_cap_counts_the_tasks_subprocesses(pool: KillablePool, tmp_path: Path) -> None:
    hog = ("hog_child", str(tmp_path / "hog.pid"))
    (outcome,) = pool.run([Task("hog", hog, timeout_s=20, memory_limit_mb=250)])
    assert outcome.kind is OutcomeKind.MEMORY
    assert list(pool.run(_squares(4)))  # the pool goes on


# ------------------------------------------------------------------ crashes


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (("exit", 3), "worker died: code 3"),
        (("signal", signal.SIGABRT), "worker died: signal 6 (SIGABRT)"),
        (("signal", signal.SIGKILL), "worker died: signal 9 (SIGKILL)"),
    ],
)
def test_a_dead_worker_fails_only_the_task_it_was_running(
    payload: tuple[str, int], error: str
) -> None:
    # One worker holding 4 tasks: what was queued behind the culprit goes on.
    with KillablePool(_settings(size=1, prefetch=4)) as one:
        tasks = [*_squares(3), Task("crash", payload), *_squares(12, start=3)]
        outcomes = _by_key(list(one.run(tasks)))
    assert outcomes["crash"].kind is OutcomeKind.DIED
    assert outcomes["crash"].error == error
    assert all(outcomes[f"sq{i}"].ok and outcomes[f"sq{i}"].value == i * i for i in range(15))


def test_a_worker_killed_while_idle_is_replaced(pool: KillablePool) -> None:
    pool.start()
    victim = wait_until(lambda: pool.pids()[1] if len(pool.pids()) > 1 else None, timeout_s=5.0)
    os.kill(victim, signal.SIGKILL)
    assert wait_gone([victim], timeout_s=5.0) == []
    outcomes = list(pool.run(_squares(10)))
    assert all(o.ok for o in outcomes)
    assert victim not in pool.pids()


def test_the_pool_survives_the_loss_of_its_launcher() -> None:
    with KillablePool(_settings()) as lonely:
        lonely.start()
        launcher = lonely.pids()[0]
        os.kill(launcher, signal.SIGKILL)
        assert wait_gone([launcher], timeout_s=5.0) == []
        outcomes = list(lonely.run(_squares(10)))
        assert all(o.ok for o in outcomes)
        assert lonely.pids()[0] != launcher


# ------------------------------------------------------------------ capacity


@pytest.mark.parametrize("prefetch", [1, 4])
def test_stalled_tasks_lend_their_cpu_slot(tmp_path: Path, prefetch: int) -> None:
    """One slot, one sleeping task: the rest run meanwhile, including those
    queued behind it on its worker (taken back when it stalls)."""
    settings = _settings(size=1, prefetch=prefetch, stall_after_s=0.1)
    with KillablePool(settings) as one:
        sleeper = Task("sleeper", ("sleep", str(tmp_path / "s.pid")), timeout_s=0.8)
        order = [o.key for o in one.run([sleeper, *_squares(20)])]
    assert order[-1] == "sleeper"


@pytest.mark.parametrize("helpers", [{}, {"max_spare": 0, "standby": 0}])
def test_a_worker_that_resumes_after_a_stall_does_not_duplicate_outcomes(
    helpers: dict[str, int],
) -> None:
    # Without helpers, the tasks taken back from the napping worker can only
    # go back to it, while its queue still holds (and then drops) them.
    with KillablePool(_settings(size=1, prefetch=4, stall_after_s=0.1, **helpers)) as one:
        tasks = [Task("nap", ("nap", 0.4)), *_squares(30)]
        outcomes = list(one.run(tasks))
    assert sorted(o.key for o in outcomes) == sorted(t.key for t in tasks)
    assert all(o.ok for o in outcomes)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"live": 0, "stalled": 0, "idle": 0, "has_pending": False}, (3, 0, 2)),
        ({"live": 3, "stalled": 0, "idle": 1, "has_pending": True}, (0, 0, 2)),
        (
            {"live": 3, "stalled": 1, "idle": 1, "has_pending": True},
            (1, 0, 3),
        ),  # standby takes over
        ({"live": 4, "stalled": 2, "idle": 0, "has_pending": True}, (0, 0, 3)),  # spare capped at 1
        ({"live": 4, "stalled": 1, "idle": 2, "has_pending": False}, (0, 1, 2)),  # batch done
        ({"live": 4, "stalled": 0, "idle": 2, "has_pending": True}, (0, 1, 2)),  # stall over
    ],
)
def test_plan_workers(state: dict[str, Any], expected: tuple[int, int, int]) -> None:
    plan = plan_workers(size=2, max_spare=1, standby=1, **state)
    assert (plan.start, plan.retire, plan.slots) == expected


@pytest.mark.parametrize(
    ("task_s", "depth"), [(None, 16), (0.0001, 16), (0.003, 16), (0.009, 6), (0.05, 2), (30.0, 1)]
)
def test_short_tasks_are_queued_deeper(task_s: float | None, depth: int) -> None:
    assert dispatch_depth(task_s, prefetch=16) == depth


@pytest.mark.parametrize(
    ("held", "holders", "pending", "wanted"),
    [
        ([0, 0], 0, 100, [8, 8]),  # a first task each, then topped up to the depth
        ([3, 8], 2, 100, [8, 8]),  # the shallow one catches up
        ([0, 0], 0, 1, [1, 0]),  # one task: one worker
        ([0, 0, 0], 1, 10, [5, 0, 0]),  # slots=2 may hold tasks; a stalled one holds some
        ([2, 5], 2, 4, [3, 5]),  # guided: no more than a share of what is left
        ([1, 1], 2, 3, [2, 2]),
    ],
)
def test_dispatch_tops_queues_up_to_their_share(
    held: list[int], holders: int, pending: int, wanted: list[int]
) -> None:
    assert plan_grants(held, holders, slots=2, pending=pending, max_depth=8) == wanted


@pytest.mark.parametrize(
    ("task_s", "queued", "linger"),
    [(None, [3, 3], 0.0), (0.003, [3, 3], 0.0045), (0.003, [3, 0], 0.0), (0.02, [1, 2], 0.01)],
)
def test_the_parent_lingers_only_while_every_worker_has_work(
    task_s: float | None, queued: list[int], linger: float
) -> None:
    assert linger_time(task_s, queued) == pytest.approx(linger)


# ------------------------------------------------------------------ lifecycle


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_close_leaves_no_process_behind(tmp_path: Path) -> None:
    before = _children()
    with KillablePool(_settings()) as doomed:
        assert doomed.pids() == []  # lazy
        list(doomed.run(_squares(10)))
        pids = doomed.pids()
        assert len(pids) == 4  # launcher, 2 workers, 1 standby
    assert wait_gone(pids, timeout_s=5.0) == []
    assert _children() <= before


def test_leaving_a_batch_early_kills_the_workers_busy_with_it(tmp_path: Path) -> None:
    with KillablePool(_settings(prefetch=1, stall_after_s=0.1)) as early:
        sleepers = [Task(f"z{i}", ("sleep", str(tmp_path / f"z{i}.pid"))) for i in range(2)]
        batch = early.run([*sleepers, *_squares(1)])  # the square runs on a stall spare
        assert next(batch).key == "sq0"
        busy = [_read_pid(tmp_path / f"z{i}.pid") for i in range(2)]
        batch.close()  # as a `break` out of the loop does
        assert wait_gone(busy, timeout_s=5.0) == []
        assert all(o.ok for o in early.run(_squares(4)))


def test_abort_from_another_thread_ends_everything(tmp_path: Path) -> None:
    before = _children()
    pid_file = tmp_path / "z.pid"
    aborter_pool = KillablePool(_settings())

    def abort_when_running() -> None:
        _read_pid(pid_file)
        aborter_pool.abort()

    thread = threading.Thread(target=abort_when_running)
    thread.start()
    with pytest.raises(PoolAborted):
        list(aborter_pool.run([Task("z", ("sleep", str(pid_file)))]))
    thread.join()
    assert aborter_pool.closed and aborter_pool.pids() == []
    assert wait_gone([int(pid_file.read_text())], timeout_s=5.0) == []
    assert _children() <= before


def test_a_launcher_that_cannot_preload_is_an_error() -> None:
    with (
        KillablePool(_settings(preload=("no_such_module_for_the_pool",))) as broken,
        pytest.raises(PoolError, match="No module named 'no_such_module_for_the_pool'"),
    ):
        broken.start()


def test_workers_run_one_thread_per_numeric_library() -> None:
    with KillablePool(_settings(preload=("polars", "tests.test_pools"))) as pool:
        (outcome,) = pool.run([Task("threads", ("polars_threads", None))])
        assert outcome.value == 1
        launcher = pool.pids()[0]
        environ = psutil.Process(launcher).environ()
    assert environ["POLARS_MAX_THREADS"] == "1"
    assert environ["OPENBLAS_NUM_THREADS"] == "1"
    assert environ["OMP_NUM_THREADS"] == "1"
    assert not pid_alive(launcher)

"""``orchestrator dashboard``: in a real browser, over two real spawners.

The browser test runs Debian's chromium headless through Playwright (never a
downloaded browser; ``make test`` installs chromium where it can, and CI
fails without it) while jobs and a batch flow through two spawners with
distinct host names on a Redis of the test's own, which it stops at the
end to see the page say so. Screenshots go to ``var/`` for people to look
at. The HTTP tests drive the server's app in-process.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from click.testing import CliRunner

from orchestrator.apps.batch.engine.synthetic import symbol_names, write_dataset
from orchestrator.cli import cli
from orchestrator.config import parse_config
from orchestrator.embedded import EmbeddedRedis, free_port
from tests.conftest import missing_service
from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import ROOT, SpawnerProc, worker_script

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "test-token-4242"
SYMBOLS = symbol_names(40)
SLOW_SYMBOLS = [f"SLOW.{s}" if i % 2 == 0 else s for i, s in enumerate(SYMBOLS)]  # ~4 s


def jobs_queue() -> dict[str, Any]:
    return {
        "script": worker_script("job_worker.py"),
        "max_concurrent": 2,
        "cooldown": 0,
        "idle_timeout": 2,
        "max_attempts": 1,
        "batch_size": 1,
    }


def batch_setup(candles: Path, results: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    queue = {
        "script": str(ROOT / "workers" / "batch_engine_worker.py"),
        "label": "BATCH",
        "batch_size": 1,
        "cooldown": 0,
        "idle_timeout": 3,
        "env": {"PYTHONPATH": str(ROOT)},
    }
    section = {
        "data_root": str(candles),
        "results_dir": str(results),
        "repository": "tests.test_engine_batch:FaultyRepository",
        "max_workers": 2,
        "shard_size": 0,
    }
    return queue, section


class Dashboard:
    """``orchestrator dashboard`` as a process."""

    def __init__(self, config: Path, log: Path, *flags: str) -> None:
        self.port = free_port()
        self.log = log
        env = {**os.environ, "ORCH_DASHBOARD_TOKEN": TOKEN}
        env.pop("ORCH_REDIS_URL", None)
        argv = [sys.executable, "-m", "orchestrator", "dashboard", "-c", str(config)]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*argv, "--port", str(self.port), *flags], stderr=out, stdout=out, env=env, cwd=ROOT
            )
        wait_until(lambda: "Dashboard on" in log.read_text(), 20, message=lambda: log.read_text())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own: it is stopped mid-test."""
    server = EmbeddedRedis().start()
    yield server
    server.stop()


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    if not CHROMIUM.exists():
        missing_service(f"chromium at {CHROMIUM} (make test installs it with apt-get)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_service("playwright (the dev extra)")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # fresh: nothing of a previous run
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def cells(page: Any, table: str, field: str) -> dict[str, str]:
    """Row key -> the text of the ``field`` cell, of a table on the page."""
    found: dict[str, str] = page.eval_on_selector_all(
        f"#{table} tbody tr[data-key]",
        f"""rows => Object.fromEntries(rows.map(r => [r.dataset.key,
            (r.querySelector('[data-field="{field}"]') || {{}}).textContent]))""",
    )
    return found


def progress_of(page: Any) -> float | None:
    value = page.eval_on_selector_all(
        "[data-app=batches] progress", "bars => bars.length ? bars[0].value : null"
    )
    return None if value is None else float(value)


def test_dashboard_in_a_browser(
    own_redis: EmbeddedRedis, browser_page: Any, tmp_path: Path, spawner_factory: Any
) -> None:
    r: TextRedis = redis.Redis.from_url(own_redis.url, decode_responses=True)
    candles = tmp_path / "candles"
    write_dataset(candles, SYMBOLS, "1d", 300)
    batch_queue, batch_section = batch_setup(candles, tmp_path / "results")
    a = spawner_factory(own_redis.url, {"jobs": jobs_queue(), "batch_jobs": batch_queue}, name="a")
    a.write_config({**a.config, "batch": batch_section})
    b: SpawnerProc = spawner_factory(own_redis.url, {"jobs": jobs_queue()}, name="b")
    # Started first, so the spawners (history: auto) record from their first tick.
    board = Dashboard(a.config_path, tmp_path / "dashboard.log", "--allow-actions")
    try:
        a.start(), b.start()
        batch_id = _flow(r, a)
        page = browser_page
        page.goto(board.url)
        wait_until(lambda: set(cells(page, "hosts", "host")) == {"test-a", "test-b"}, 20)
        live = r.zrangebyscore("orch:hosts", time.time(), "+inf")
        assert set(cells(page, "hosts", "host")) == set(live)
        assert cells(page, "queues", "workers")["jobs"].endswith("/4")  # 2 per host
        _batch_bar_moves(page, r, batch_id)
        _numbers_are_redis(page, r, len(a.spawned()) + len(b.spawned()))
        _purge_with_token(page, r)
        # Redis goes away: the page says so, and keeps the last figures.
        own_redis.stop()
        wait_until(lambda: "Redis unreachable" in (page.text_content("#banner") or ""), 10)
        assert page.is_visible("#banner")
        assert set(cells(page, "hosts", "host")) == {"test-a", "test-b"}
        page.screenshot(path=str(ROOT / "var" / "dashboard-redis-down.png"), full_page=True)
    finally:
        board.stop()
    assert board.proc.returncode == 0, board.log.read_text()


def _flow(r: TextRedis, a: SpawnerProc) -> str:
    """Jobs for both hosts (two of them fail for good), and a batch; its id."""
    for i in range(24):
        r.xadd("jobs", {"payload": json.dumps({"id": i, "action": "sleep", "seconds": 0.3})})
    for i in range(2):
        r.xadd("jobs", {"payload": json.dumps({"id": f"bad{i}", "action": "raise"})})
    submit = ["batch", "submit", "-c", str(a.config_path), "--timeframe", "1d"]
    submit += ["--symbols", ",".join(SLOW_SYMBOLS), "--formula", "rsi(14) < 50"]
    out = CliRunner().invoke(cli, submit)
    assert out.exit_code == 0, out.output
    return out.stdout.strip()


def _batch_bar_moves(page: Any, r: TextRedis, batch_id: str) -> None:
    """Two readings of the bar, the second further on; then done, at 100%."""
    first = wait_until(lambda: (p := progress_of(page)) is not None and 0 < p < 1 and p, 30)
    wait_until(lambda: (p := progress_of(page)) is not None and p > first, 20)
    page.screenshot(path=str(ROOT / "var" / "dashboard.png"), full_page=True)  # mid-run
    wait_until(lambda: cells(page, "app-batches", "state").get(batch_id) == "done", 30)
    assert progress_of(page) == 1.0 and r.hget(f"orch:batch:{batch_id}", "state") == "done"


def _numbers_are_redis(page: Any, r: TextRedis, spawned: int) -> None:
    """Once the jobs are done: the page's figures are Redis' (within a refresh),
    and the spawns chart counts every spawn of both hosts."""
    wait_until(lambda: r.scard("test:done") == 24 and r.xlen("jobs:dead") == 2, 30)
    wait_until(lambda: cells(page, "queues", "dead_letters").get("jobs") == "2", 5)
    wait_until(lambda: cells(page, "queues", "backlog").get("jobs") == "0", 5)
    shown = set(cells(page, "dead-letters", "id"))
    assert shown == {f"jobs/{i}" for i, _ in r.xrevrange("jobs:dead")}
    errors = cells(page, "dead-letters", "error")
    assert all("job bad" in e and "always fails" in e for e in errors.values())

    def spawn_points() -> float:
        data = page.evaluate("() => (window.orchCharts.spawns || {}).data || []")
        return sum(v or 0 for series in data[1:] for v in series)

    wait_until(lambda: spawn_points() == spawned, 10, message=lambda: f"{spawn_points()}")


def _purge_with_token(page: Any, r: TextRedis) -> None:
    page.fill("#token", TOKEN)
    page.click("#dead-letters tbody tr:first-child button[data-action=purge]")
    wait_until(lambda: r.xlen("jobs:dead") == 1, 5)
    wait_until(lambda: cells(page, "queues", "dead_letters").get("jobs") == "1", 5)


# ------------------------------------------------------------------ HTTP


def _board(url: str, actions: bool = False) -> Any:
    from orchestrator.dashboard.board import Board

    config = parse_config({"redis": {"url": url}, "queues": {"jobs": {"command": ["true"]}}})
    return Board(config, actions=actions)


@contextlib.contextmanager
def _served(board: Any, token: str | None = None) -> Iterator[httpx.Client]:
    """The dashboard's app on a real uvicorn server, on a thread of this process."""
    pytest.importorskip("uvicorn")
    import uvicorn

    from orchestrator.dashboard.server import create_app

    app = create_app(board, token, loopback_only=True)
    server = uvicorn.Server(uvicorn.Config(app, port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10)
        port = server.config.port
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)


def test_read_only_unless_allowed_and_token_checked(redis_url: str, r: TextRedis) -> None:
    r.xadd("jobs:dead", {"payload": "{}", "error": "boom"})
    [(dead_id, _)] = r.xrange("jobs:dead")
    purge = "/api/dead-letters/jobs/purge"
    with _served(_board(redis_url)) as read_only:
        assert read_only.post(purge, json={"ids": [dead_id]}).status_code == 403
        rebound = read_only.get("/api/state", headers={"Host": "evil.example"})
        assert rebound.status_code == 400  # not a loopback name: DNS rebinding refused
    with _served(_board(redis_url, actions=True), token=TOKEN) as allowed:
        _act(allowed, r, dead_id)


def _act(allowed: httpx.Client, r: TextRedis, dead_id: str) -> None:
    purge = "/api/dead-letters/jobs/purge"
    assert allowed.post(purge, json={"ids": [dead_id]}).status_code == 401
    wrong = allowed.post(purge, json={"ids": [dead_id]}, headers={"X-Orch-Token": "nope"})
    assert wrong.status_code == 401 and r.xlen("jobs:dead") == 1
    assert allowed.post(purge, json={}, headers={"X-Orch-Token": TOKEN}).status_code == 400
    done = allowed.post(purge, json={"ids": [dead_id]}, headers={"X-Orch-Token": TOKEN})
    assert done.json() == {"action": "purge", "queue": "jobs", "count": 1}
    assert r.xlen("jobs:dead") == 0


def test_redis_down_is_said_and_no_secret_shown() -> None:
    url = f"redis://admin:hunter2@127.0.0.1:{free_port()}/0?password=hunter3"
    with _served(_board(url)) as client:
        _says_redis_is_down(client)


def _says_redis_is_down(client: httpx.Client) -> None:
    state = client.get("/api/state")
    assert state.status_code == 200
    body = state.json()
    assert body["redis"]["ok"] is False and "Connection" in body["redis"]["error"]
    assert body["redis"]["url"].startswith("redis://admin:***@127.0.0.1:")
    assert body["hosts"] == [] and client.get("/api/history").status_code == 200
    for path in ("/", "/api/state", "/api/history", "/static/dashboard.js"):
        text = client.get(path).text
        assert "hunter2" not in text and "hunter3" not in text
    page = client.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_missing_extra_is_named(tmp_path: Path) -> None:
    """Without starlette the command says which extra to install, exit 1."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "starlette.py").write_text("raise ImportError('no starlette here', name='starlette')")
    config = tmp_path / "workers.yaml"
    config.write_text(json.dumps({"queues": {"q": {"command": ["true"]}}}))
    env = {**os.environ, "PYTHONPATH": f"{shadow}{os.pathsep}{ROOT}"}
    with contextlib.suppress(KeyError):
        del env["ORCH_REDIS_URL"]
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "dashboard", "-c", str(config)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=30,
    )  # fmt: skip
    assert out.returncode == 1
    assert "[dashboard] extra" in out.stderr and "Traceback" not in out.stderr

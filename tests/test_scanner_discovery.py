"""Discovery scanners against local HTTP endpoints that are slow, failing and hanging."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from orchestrator.apps.scanner.discovery import (
    ScannerFn,
    ScannerJob,
    Status,
    load_jobs,
    run_discovery,
    run_scanners,
)
from orchestrator.apps.scanner.scanner_settings import DiscoverySettings, ScannerRef
from orchestrator.validate import ConfigError

RELEASE = threading.Event()  # lets hanging requests go when a test ends


class Handler(BaseHTTPRequestHandler):
    """``/items?n=&delay=`` -> JSON list; ``/fail`` -> 500; ``/hang`` -> no answer."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/hang":
            RELEASE.wait(30)
        if url.path == "/fail":
            self.send_error(500, "scanner backend down")
            return
        time.sleep(float(query.get("delay", 0)))
        body = json.dumps([f"T{i}" for i in range(int(query.get("n", 2)))]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    RELEASE.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    RELEASE.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def http_scanner(base: str, name: str, path: str) -> ScannerFn:
    """A scanner the seed's way: call an API, log it, return prefixed candidates."""

    def scan(state: dict[str, Any]) -> list[str]:
        state["tool_logs"].append(f"{name}: GET {path}")
        state["watchlist"].append(name)  # must not leak into other scanners' copies
        with urllib.request.urlopen(f"{base}{path}", timeout=60) as response:
            items = json.loads(response.read())
        assert state["watchlist"] == ["SEED", name]
        return [f"{name}:{item}" for item in items]

    return scan


def jobs_for(base: str, *specs: tuple[str, str]) -> list[ScannerJob]:
    return [ScannerJob(name, http_scanner(base, name, path)) for name, path in specs]


STATE = {"tool_logs": ["start"], "watchlist": ["SEED"]}


def test_concurrent_and_sequential_give_the_same_candidates(base_url: str) -> None:
    jobs = jobs_for(
        base_url,
        ("movers", "/items?n=3&delay=0.5"),
        ("broken", "/fail"),
        ("insider", "/items?n=2&delay=0.5"),
        ("volume", "/items?n=1&delay=0.5"),
    )
    together = run_scanners(jobs, STATE, concurrent=True, max_workers=8, timeout_s=10)
    one_by_one = run_scanners(jobs, STATE, concurrent=False, timeout_s=10)
    assert together.candidates == one_by_one.candidates == (
        "movers:T0", "movers:T1", "movers:T2", "insider:T0", "insider:T1", "volume:T0",
    )  # fmt: skip
    statuses = [(o.name, o.status) for o in together.outcomes]
    assert statuses == [(o.name, o.status) for o in one_by_one.outcomes]
    assert together.outcome("broken").status is Status.FAILED
    assert "500" in (together.outcome("broken").error or "")
    assert one_by_one.elapsed_s >= 1.5  # three 0.5 s scanners, one after the other
    assert together.elapsed_s < 1.3  # ... at the same time
    assert together.state["tool_logs"] == one_by_one.state["tool_logs"] == [
        "start", "movers: GET /items?n=3&delay=0.5", "broken: GET /fail",
        "insider: GET /items?n=2&delay=0.5", "volume: GET /items?n=1&delay=0.5",
    ]  # fmt: skip
    assert STATE == {"tool_logs": ["start"], "watchlist": ["SEED"]}  # the input is untouched


@pytest.mark.parametrize("concurrent", [True, False])
def test_hanging_scanner_times_out_and_the_others_finish(base_url: str, concurrent: bool) -> None:
    jobs = jobs_for(
        base_url,
        ("fast", "/items?n=2"),
        ("hang", "/hang"),
        ("slow", "/items?n=1&delay=0.2"),
        ("broken", "/fail"),
    )
    started = time.monotonic()
    result = run_scanners(jobs, STATE, concurrent=concurrent, timeout_s=0.5)
    waited = time.monotonic() - started
    assert 0.5 <= waited < 3.0  # bounded by the timeout, not by the 30 s hanging request
    assert [o.status for o in result.outcomes] == [
        Status.OK, Status.TIMEOUT, Status.OK, Status.FAILED,
    ]  # fmt: skip
    assert result.candidates == ("fast:T0", "fast:T1", "slow:T0")
    assert "hang: GET /hang" not in result.state["tool_logs"]  # an abandoned thread's logs


def test_per_scanner_timeout_overrides_the_run_timeout(base_url: str) -> None:
    jobs = [
        ScannerJob("patient", http_scanner(base_url, "patient", "/items?delay=0.6"), 5.0),
        ScannerJob("hasty", http_scanner(base_url, "hasty", "/items?delay=0.6"), 0.2),
    ]
    result = run_scanners(jobs, STATE, timeout_s=0.3)
    assert [o.status for o in result.outcomes] == [Status.OK, Status.TIMEOUT]


def test_max_workers_bounds_concurrency() -> None:
    lock, live, peak = threading.Lock(), [0], [0]

    def scan(state: dict[str, Any]) -> list[int]:
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.1)
        with lock:
            live[0] -= 1
        return [1]

    jobs = [ScannerJob(f"s{i}", scan) for i in range(6)]
    result = run_scanners(jobs, {}, max_workers=2, timeout_s=5)
    assert peak[0] == 2 and len(result.candidates) == 6


def sample_scanner(state: dict[str, Any]) -> list[str]:
    return ["S1"]


def test_jobs_load_from_settings() -> None:
    here = "tests.test_scanner_discovery"
    settings = DiscoverySettings(
        scanners=(
            ScannerRef("sample", f"{here}:sample_scanner"),
            ScannerRef("off", "no.such.module:scan", enabled=False),
        )
    )
    assert run_discovery(settings, {}).candidates == ("S1",)
    broken = DiscoverySettings(scanners=(ScannerRef("x", "no_such_module_xyz:scan"),))
    with pytest.raises(ConfigError) as info:
        load_jobs(broken)
    assert info.value.problems[0].startswith("scanner.discovery.scanners[0]: cannot load")


def test_an_abandoned_scanner_does_not_hold_up_interpreter_exit() -> None:
    code = (
        "import time\n"
        "from orchestrator.apps.scanner.discovery import ScannerJob, run_scanners\n"
        "r = run_scanners([ScannerJob('stuck', lambda s: time.sleep(60))], {}, timeout_s=0.2)\n"
        "print(r.outcomes[0].status)\n"
    )
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=True
    )
    assert out.stdout.strip() == "timeout"
    assert time.monotonic() - started < 10

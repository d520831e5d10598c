"""The HTTP analyser against a fake OpenAI-compatible endpoint on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from orchestrator.apps.announcements.analysers import make_analyser
from orchestrator.apps.announcements.announcement import Announcement, Category, FigureKind
from orchestrator.apps.announcements.errors import AnalysisError
from orchestrator.apps.announcements.http_analyser import HttpAnalyser
from orchestrator.apps.announcements.pipeline_settings import (
    AnalyserKind,
    AnalysisSettings,
    HttpAnalyserSettings,
)
from tests.helpers import wait_until

JOB = Announcement("A1", "INFY", "NSE", "Intimation of Record Date", text="Dividend of Rs 21.")
GOOD_REPLY = {
    "category": "dividend",
    "sentiment": 0.4,
    "summary": "Interim dividend of Rs 21 per share; record date October 29, 2024.",
    "key_figures": [
        {"kind": "amount", "value": 21, "currency": "inr", "text": "Rs 21"},
        {"kind": "date", "value": "2024-10-29", "label": "record_date"},
    ],
}


@dataclass
class Reply:
    status: int = 200
    content: str | None = None  # the chat message content; None: ``body`` verbatim
    body: str = ""
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def completion(content: str) -> str:
    return json.dumps(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    )


class FakeEndpoint:
    """Serves scripted replies in order (the last one repeats) and records requests."""

    def __init__(self) -> None:
        self.script: list[Reply] = [Reply(content=json.dumps(GOOD_REPLY))]
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.release = threading.Event()  # ends any delayed reply at teardown
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                endpoint.requests.append((self.path, dict(self.headers), body))
                reply = endpoint.next_reply()
                endpoint.release.wait(reply.delay_s)
                payload = completion(reply.content) if reply.content is not None else reply.body
                data = payload.encode()
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def next_reply(self) -> Reply:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def __enter__(self) -> FakeEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


_OPEN: list[HttpAnalyser] = []


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    with FakeEndpoint() as fake:
        yield fake
    while _OPEN:
        _OPEN.pop().close()


def analyser(base_url: str, sleeps: list[float] | None = None, **overrides: Any) -> HttpAnalyser:
    """An analyser for ``base_url`` whose backoff sleeps are recorded, not slept."""
    defaults: dict[str, Any] = {"timeout_s": 2.0, "retries": 2, "backoff_s": 0.01}
    settings = HttpAnalyserSettings(
        base_url=base_url, model="test-model", **{**defaults, **overrides}
    )
    record = sleeps if sleeps is not None else []
    client = HttpAnalyser(settings, "sk-test", summary_max_chars=120, sleep=record.append)
    _OPEN.append(client)
    return client


def test_success(endpoint: FakeEndpoint) -> None:
    analysis = analyser(endpoint.base_url).analyse(JOB, "Dividend of Rs 21 per share.")
    assert analysis.category is Category.DIVIDEND
    assert analysis.sentiment == 0.4
    assert analysis.key_figures[0].currency == "INR" and analysis.key_figures[0].value == 21.0
    assert analysis.key_figures[1].kind is FigureKind.DATE
    path, headers, body = endpoint.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "test-model" and body["response_format"] == {"type": "json_object"}
    assert "INFY" in body["messages"][1]["content"]
    assert "financial_results" in body["messages"][0]["content"]


def test_fenced_json_and_long_summary_are_accepted(endpoint: FakeEndpoint) -> None:
    reply = dict(GOOD_REPLY, summary="word " * 100)
    endpoint.script = [Reply(content=f"```json\n{json.dumps(reply)}\n```")]
    analysis = analyser(endpoint.base_url).analyse(JOB, "text")
    assert analysis.category is Category.DIVIDEND
    assert len(analysis.summary) <= 120


def test_timeout_is_retried_then_fails(endpoint: FakeEndpoint) -> None:
    endpoint.script = [Reply(content=json.dumps(GOOD_REPLY), delay_s=30)]
    sleeps: list[float] = []
    client = analyser(endpoint.base_url, sleeps, timeout_s=0.2, retries=1)
    started = time.monotonic()
    with pytest.raises(AnalysisError, match="gave up after 2 attempts: timed out") as info:
        client.analyse(JOB, "text")
    assert time.monotonic() - started < 3.0
    assert info.value.retryable
    assert sleeps == [0.01]
    wait_until(lambda: len(endpoint.requests) == 2, timeout_s=5, message="two requests")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("I think this is about a dividend.", "reply is not the expected JSON"),
        (json.dumps(["dividend"]), "must be a mapping, got list"),
        (json.dumps(dict(GOOD_REPLY, category="bonus")), "category: must be one of"),
        (json.dumps(dict(GOOD_REPLY, sentiment="positive")), "sentiment: must be a number"),
        (json.dumps(dict(GOOD_REPLY, sentiment=3)), "sentiment: must be <= 1"),
        (json.dumps(dict(GOOD_REPLY, sentiment=float("nan"))), "sentiment: must be a finite"),
        (json.dumps({k: v for k, v in GOOD_REPLY.items() if k != "summary"}), "summary: is"),
        (
            json.dumps(dict(GOOD_REPLY, key_figures=[{"kind": "date", "value": "29/10/2024"}])),
            r"key_figures\[0\].value: must be an ISO date",
        ),
    ],
    ids=[
        "prose",
        "list",
        "category",
        "sentiment-type",
        "sentiment-range",
        "sentiment-nan",
        "no-summary",
        "date",
    ],
)
def test_garbage_reply_is_a_failed_attempt_not_retried(
    endpoint: FakeEndpoint, content: str, reason: str
) -> None:
    endpoint.script = [Reply(content=content)]
    with pytest.raises(AnalysisError, match=reason) as info:
        analyser(endpoint.base_url).analyse(JOB, "text")
    assert not info.value.retryable
    assert len(endpoint.requests) == 1


def test_category_spelled_out_is_understood(endpoint: FakeEndpoint) -> None:
    endpoint.script = [Reply(content=json.dumps(dict(GOOD_REPLY, category="Credit Rating")))]
    assert analyser(endpoint.base_url).analyse(JOB, "text").category is Category.CREDIT_RATING


def test_reply_that_is_not_a_chat_completion(endpoint: FakeEndpoint) -> None:
    endpoint.script = [Reply(body="<html>gateway</html>")]
    with pytest.raises(AnalysisError, match=r"no choices\[0\].message.content"):
        analyser(endpoint.base_url).analyse(JOB, "text")


def test_server_error_then_success_is_retried_with_backoff(endpoint: FakeEndpoint) -> None:
    endpoint.script = [
        Reply(status=500, body="boom"),
        Reply(status=503, body="busy"),
        Reply(content=json.dumps(GOOD_REPLY)),
    ]
    sleeps: list[float] = []
    analysis = analyser(endpoint.base_url, sleeps, retries=3).analyse(JOB, "text")
    assert analysis.category is Category.DIVIDEND
    assert len(endpoint.requests) == 3
    assert sleeps == [0.01, 0.02]  # doubling


def test_rate_limit_honours_retry_after(endpoint: FakeEndpoint) -> None:
    endpoint.script = [
        Reply(status=429, body="slow down", headers={"Retry-After": "0.05"}),
        Reply(content=json.dumps(GOOD_REPLY)),
    ]
    sleeps: list[float] = []
    analyser(endpoint.base_url, sleeps).analyse(JOB, "text")
    assert sleeps == [0.05]


def test_client_error_is_not_retried(endpoint: FakeEndpoint) -> None:
    endpoint.script = [Reply(status=401, body='{"error": "invalid api key"}')]
    with pytest.raises(AnalysisError, match=r"HTTP 401 .*invalid api key") as info:
        analyser(endpoint.base_url, retries=5).analyse(JOB, "text")
    assert not info.value.retryable
    assert len(endpoint.requests) == 1


def test_server_errors_exhaust_retries(endpoint: FakeEndpoint) -> None:
    endpoint.script = [Reply(status=502, body="bad gateway")]
    sleeps: list[float] = []
    with pytest.raises(AnalysisError, match="gave up after 3 attempts: HTTP 502"):
        analyser(endpoint.base_url, sleeps, backoff_s=1.0, backoff_max_s=1.5).analyse(JOB, "t")
    assert sleeps == [1.0, 1.5]  # capped
    assert len(endpoint.requests) == 3


def test_unreachable_endpoint_is_retried(endpoint: FakeEndpoint) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens
    with pytest.raises(AnalysisError, match="gave up after 2 attempts: cannot reach"):
        analyser(f"http://127.0.0.1:{port}/v1", retries=1).analyse(JOB, "text")


def test_factory_reads_the_key_from_the_named_variable(endpoint: FakeEndpoint) -> None:
    http = HttpAnalyserSettings(base_url=endpoint.base_url, api_key_env="MY_LLM_KEY")
    settings = AnalysisSettings(analyser=AnalyserKind.HTTP, http=http)
    with pytest.raises(AnalysisError, match=r"MY_LLM_KEY .*is not set"):
        make_analyser(settings, {})
    built = make_analyser(settings, {"MY_LLM_KEY": "sk-from-env"})
    assert built.name == "http:gpt-4o-mini"
    built.analyse(JOB, "text")
    built.close()
    assert endpoint.requests[0][1]["Authorization"] == "Bearer sk-from-env"
    keyless = AnalysisSettings(
        analyser=AnalyserKind.HTTP, http=HttpAnalyserSettings(api_key_env="")
    )
    assert make_analyser(keyless, {}).name.startswith("http:")
    assert make_analyser(AnalysisSettings(), {}).name == "offline"

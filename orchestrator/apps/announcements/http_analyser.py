"""The HTTP analyser: an OpenAI-compatible chat completions endpoint, via httpx.

One request per announcement to ``{base_url}/chat/completions``, asking for
one JSON object with the offline analyser's fields. Timeouts, connection
errors, 429 and 5xx are retried up to ``retries`` times with exponential
backoff (``backoff_s`` doubling, at most ``backoff_max_s``; a numeric
``Retry-After`` is honoured within that cap). Any other 4xx is not retried.
A reply that is not the expected JSON (not JSON, wrong types, an unknown
category) is a failed attempt: ``AnalysisError`` says what was wrong, and
the worker runtime's own attempt count decides whether to try again.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from orchestrator.apps.announcements.announcement import CATEGORY_NAMES, Analysis, Announcement
from orchestrator.apps.announcements.errors import AnalysisError
from orchestrator.apps.announcements.payloads import parse_analysis_reply
from orchestrator.apps.announcements.pipeline_settings import HttpAnalyserSettings

__all__ = ["SYSTEM_PROMPT", "HttpAnalyser"]

SYSTEM_PROMPT = f"""You analyse corporate announcements filed with Indian stock exchanges \
(BSE/NSE). Reply with exactly one JSON object and nothing else, with these keys:
"category": one of {", ".join(CATEGORY_NAMES)};
"key_figures": a list of the amounts and dates the announcement states, each either \
{{"kind": "amount", "value": <number in units, crore and lakh expanded>, \
"currency": "<ISO 4217 code>", "text": "<as written>"}} or \
{{"kind": "date", "value": "YYYY-MM-DD", "text": "<as written>"}} or \
{{"kind": "percent", "value": <number>, "text": "<as written>"}};
"sentiment": a number from -1 (very bad news for shareholders) to 1 (very good news);
"summary": at most {{max_chars}} characters, plain text, what was announced."""

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_RETRY_STATUS = frozenset({408, 425, 429})
_SNIPPET = 200


class HttpAnalyser:
    def __init__(
        self,
        settings: HttpAnalyserSettings,
        api_key: str | None,
        summary_max_chars: int = 400,
        *,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.summary_max_chars = summary_max_chars
        self.url = f"{settings.base_url}/chat/completions"
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.timeout_s), headers=headers, transport=transport
        )

    @classmethod
    def from_env(
        cls, settings: HttpAnalyserSettings, env: Mapping[str, str], summary_max_chars: int = 400
    ) -> HttpAnalyser:
        """Read the API key from the variable ``settings.api_key_env`` names."""
        key = env.get(settings.api_key_env, "") if settings.api_key_env else ""
        if settings.api_key_env and not key:
            raise AnalysisError(
                f"environment variable {settings.api_key_env} (analysis.http.api_key_env) "
                "is not set: the HTTP analyser needs an API key"
            )
        return cls(settings, key or None, summary_max_chars)

    @property
    def name(self) -> str:
        return f"http:{self.settings.model}"

    def analyse(self, job: Announcement, text: str) -> Analysis:
        response = self._post(self._request(job, text))
        return parse_analysis_reply(self._content(response), self.summary_max_chars)

    def close(self) -> None:
        self._client.close()

    def _request(self, job: Announcement, text: str) -> dict[str, Any]:
        prompt = SYSTEM_PROMPT.replace("{max_chars}", str(self.summary_max_chars))
        user = (
            f"Symbol: {job.symbol}\nExchange: {job.exchange}\nTitle: {job.title}\n\n"
            f"Text:\n{text[: self.settings.max_input_chars]}"
        )
        body: dict[str, Any] = {
            "model": self.settings.model,
            "temperature": self.settings.temperature,
            "messages": [
                {"role": "system", "content": prompt},
                {"role": "user", "content": user},
            ],
        }
        if self.settings.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        attempts = self.settings.retries + 1
        last = ""
        wait_s = 0.0
        for attempt in range(attempts):
            if attempt:
                self._sleep(wait_s)
            wait_s = self._backoff_s(attempt)
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TimeoutException:
                last = f"timed out after {self.settings.timeout_s:g}s"
                continue
            except httpx.TransportError as exc:
                last = f"cannot reach {self.url}: {type(exc).__name__}: {exc}"
                continue
            status = response.status_code
            if status < 400:
                return response
            last = f"HTTP {status} from {self.url}: {_snippet(response.text)}"
            if status < 500 and status not in _RETRY_STATUS:
                raise AnalysisError(last)
            wait_s = _retry_after_s(response, wait_s, self.settings.backoff_max_s)
        raise AnalysisError(f"gave up after {attempts} attempts: {last}", retryable=True)

    def _backoff_s(self, attempt: int) -> float:
        return float(min(self.settings.backoff_max_s, self.settings.backoff_s * 2**attempt))

    def _content(self, response: httpx.Response) -> object:
        """The JSON object inside the first choice's message."""
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise AnalysisError(
                "reply is not a chat completion (no choices[0].message.content): "
                f"{type(exc).__name__}: {_snippet(response.text)}"
            ) from exc
        if not isinstance(content, str):
            raise AnalysisError(f"reply content is {type(content).__name__}, not text")
        fenced = _FENCE.match(content)
        try:
            return json.loads(fenced[1] if fenced else content)
        except ValueError as exc:
            raise AnalysisError(
                f"reply is not the expected JSON: {exc}: {_snippet(content)}"
            ) from exc


def _retry_after_s(response: httpx.Response, default_s: float, cap_s: float) -> float:
    header = response.headers.get("retry-after", "")
    try:
        return min(cap_s, max(0.0, float(header)))
    except ValueError:
        return default_s


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "…"

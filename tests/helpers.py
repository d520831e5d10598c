"""Waiting without fixed sleeps: poll a condition until a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")

# A client that decodes replies (the ``r`` fixture): its replies are str,
# which redis-py's types cannot say (they are unions of every reply shape).
TextRedis = Any


class WaitTimeout(AssertionError):
    pass


def wait_until(
    predicate: Callable[[], T | Literal[False] | None],
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Call ``predicate`` until it returns something truthy; return that.

    Raises ``WaitTimeout`` (an AssertionError, so pytest shows it as a failed
    check) with ``message`` when ``timeout_s`` passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:  # truthy: neither None nor False
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise WaitTimeout(f"after {timeout_s:.1f}s: {text}")
        time.sleep(interval_s)


def process_title(pid: int) -> str:
    """What ps shows for ``pid`` (its command line, or the title it set); "" once gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()

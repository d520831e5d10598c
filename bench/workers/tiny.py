"""The tiny job every throughput contender runs: a little arithmetic."""

from typing import Any


def work(n: int) -> int:
    return sum(range(n % 50 + 10))


def handle(job: dict[str, Any]) -> None:
    work(int(job["n"]))

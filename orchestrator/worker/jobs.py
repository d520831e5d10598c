"""What a handler deals in: jobs, the exceptions that say what became of
one, and the worker's exit codes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

EX_OK = 0
EX_FAILURE = 1
EX_SOFTWARE = 70  # sysexits.h: the runtime itself failed (no job is charged)
EX_TEMPFAIL = 75  # sysexits.h: Redis or a dependency is down; try again later


@dataclass(slots=True)
class Job:
    """One stream entry as a handler sees it."""

    id: str
    fields: dict[str, str]
    attempts: int
    data: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[dict[str, Any]], "dict[str, Any] | None"]
# A batch handler returns one item per job, in order: a result to forward
# (with ``then``), None, or an Exception that fails that job alone.
BatchHandler = Callable[[Sequence[Job]], "Sequence[dict[str, Any] | Exception | None]"]


class Unavailable(Exception):
    """A dependency is down; the job is fine. Not counted as an attempt."""


class Interrupted(Exception):
    """The handler gave up its job because the worker was asked to stop
    (SIGTERM, or its deadline): the job goes back uncounted, and the worker
    exits 0. For long jobs that cannot wait for ``stop_grace``."""


class PoisonJob(Exception):
    """The job can never succeed: dead-letter it now, whatever its attempts.

    Any exception with a true ``permanent`` attribute is treated the same.
    """

    permanent = True


def per_job(handle: Handler) -> BatchHandler:
    """A batch handler for units of one job."""

    def handle_one(jobs: Sequence[Job]) -> list[dict[str, Any] | None]:
        return [handle(job.data) for job in jobs]

    return handle_one

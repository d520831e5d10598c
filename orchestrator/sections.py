"""Config sections owned by the shipped worker programs.

Each top-level key of ``config/workers.yaml`` other than ``redis``,
``spawner``, ``log`` and ``queues`` belongs to one worker program and is
validated by that program's parser, registered here, so that
``orchestrator check`` refuses a typo anywhere in the file. A parser takes a
``Section`` and returns a frozen dataclass; it must import nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.announcements.settings import SECTION_PARSERS as ANNOUNCEMENT_SECTIONS
from orchestrator.batch.settings import parse_batch_settings
from orchestrator.scanner.settings import parse_scanner_settings
from orchestrator.validate import Section

Parser = Callable[[Section], Any]

PARSERS: dict[str, Parser] = {
    **ANNOUNCEMENT_SECTIONS,  # database, analysis, watchlists
    "scanner": parse_scanner_settings,
    "batch": parse_batch_settings,
}

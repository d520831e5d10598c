"""The Lua scripts the project runs in Redis, kept as ``.lua`` files.

Multi-key changes go through one script each (STYLE.md): the depth probe,
parking and handing out entries, the host-name claim, a worker's first
read in the core (``orchestrator/lua/``); an app keeps its own beside it
(``orchestrator/apps/batch/lua/``).
"""

from __future__ import annotations

from importlib import resources


def load_lua(name: str, package: str = "orchestrator") -> str:
    """The text of ``<package>/lua/<name>`` (the core's scripts by default)."""
    return resources.files(package).joinpath("lua", name).read_text()

"""What the distribution ships besides its code: the example config
(``config/workers.yaml``), the worker programs it names (``workers/``) and
the demo's samples (``samples/announcements/``).

In a checkout they are the repo's own files; a wheel carries copies under
``orchestrator/shipped_files/`` (setup.py's build step), laid out as in the
repo, so the config's relative paths hold in both.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = Path("config", "workers.yaml")


def root() -> Path:
    """The folder holding ``config/``, ``workers/`` and ``samples/``."""
    package = Path(__file__).resolve().parent
    wheel = package / "shipped_files"
    return wheel if wheel.is_dir() else package.parent


def config_path() -> Path:
    return root() / CONFIG

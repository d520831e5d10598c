"""The seam between the orchestrator core and the apps that run on it.

The core (config, spawner, reaper, queues, worker runtime, process trees,
pools, CLI) knows no app by name. An app, the shipped ones under
``orchestrator/apps/`` or anyone's, is an ``App`` named under the entry
point group ``orchestrator.apps`` of its distribution::

    [project.entry-points."orchestrator.apps"]
    scanner = "orchestrator.apps.scanner.scanner_app:APP"

and brings what it adds to the orchestrator:

- ``sections``: top-level keys of ``config/workers.yaml`` it owns, each with
  the parser that validates it (``validate.Section`` in, a frozen dataclass
  out), so ``orchestrator check`` refuses a typo anywhere in the file;
- ``commands``: a function returning its click commands, added to the
  ``orchestrator`` command line (called only by the CLI, so loading a config
  imports no command code);
- ``status``: figures it publishes in Redis, which ``orchestrator status``
  prints (and shows under their key with ``--json``), the dashboard shows
  as a table (``columns``, with a progress bar when ``progress`` says one),
  and the spawners' metrics servers export (``metrics``, labelled by
  ``labels``).

An app module must import nothing heavy at import time: a worker loading
its config loads every app's sections. An app whose libraries are an extra
of this distribution names it (``extra``): a core-only install lists its
commands, and using one says which extra to install (``missing``,
``install_hint``), as does a worker that fails to import one of them
(``extra_providing``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from orchestrator.validate import Section

GROUP = "orchestrator.apps"
DISTRIBUTION = "redis-orchestrator"  # the installed distribution: its version, its extras

SectionParser = Callable[[Section], Any]


@dataclass(frozen=True, slots=True)
class Metric:
    """One number of an app's records, as a Prometheus metric."""

    name: str  # in full: ``orch_`` prefix and unit or ``_total`` suffix
    field: str  # the record's key holding it
    help: str
    kind: str = "gauge"  # or "counter"


@dataclass(frozen=True, slots=True)
class StatusFigures:
    """Figures an app's workers publish, as ``orchestrator status``, the
    dashboard and the metrics show them."""

    key: str  # their key in ``orchestrator status --json`` ("scanners")
    read: Callable[[Any], list[dict[str, Any]]]  # redis.Redis -> one record per worker
    line: Callable[[Mapping[str, Any]], str]  # one record as a line of ``status``
    title: str = ""  # the dashboard's heading (else ``key``)
    columns: Sequence[tuple[str, str]] = ()  # (record key, heading): the dashboard's table
    progress: Callable[[Mapping[str, Any]], float | None] | None = None  # a bar, 0 to 1
    metrics: Sequence[Metric] = ()  # exported by every spawner with ``metrics_port``
    labels: Sequence[str] = ()  # the record keys that label its metrics
    host_key: str | None = None  # records name their host here: a spawner exports its own


def _no_commands() -> Sequence[Any]:
    return ()


@dataclass(frozen=True, slots=True)
class App:
    name: str
    sections: Mapping[str, SectionParser] = field(default_factory=dict)
    commands: Callable[[], Sequence[Any]] = _no_commands  # -> click commands
    status: Sequence[StatusFigures] = ()
    extra: str | None = None  # the extra of DISTRIBUTION holding the libraries it needs


@functools.cache
def apps() -> tuple[App, ...]:
    """Every installed app, by entry point name."""
    found: list[App] = []
    for point in sorted(metadata.entry_points(group=GROUP), key=lambda p: p.name):
        app = point.load()
        if not isinstance(app, App):
            raise TypeError(f"entry point {point.name} = {point.value} is not a plugins.App")
        found.append(app)
    return tuple(found)


def section_parsers() -> dict[str, SectionParser]:
    """Top-level config keys the apps own, with their parsers."""
    parsers: dict[str, SectionParser] = {}
    for app in apps():
        for key, parse in app.sections.items():
            if key in parsers:
                raise ValueError(f"config section {key!r} is claimed by two apps")
            parsers[key] = parse
    return parsers


def status_figures() -> list[StatusFigures]:
    """The figures of every app that is installed whole (one missing its
    extra runs no workers, so it has none, and cannot import their readers)."""
    return [figures for app in apps() if not missing(app) for figures in app.status]


def install_hint(extra: str) -> str:
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def missing(app: App) -> list[str]:
    """The libraries of the app's extra that are not installed."""
    if app.extra is None:
        return []
    wanted = [name for name, extra in _extras() if extra == app.extra]
    return [name for name in wanted if not _installed(name)]


def extra_providing(module: str) -> str | None:
    """The extra that installs the top-level module ``module`` (``talib``:
    ``batch``, through the distribution ta-lib), or None."""
    top = _canonical(module.partition(".")[0])
    return next((extra for name, extra in _extras() if _canonical(name) == top), None)


@functools.cache
def _extras() -> tuple[tuple[str, str], ...]:
    """(distribution, extra) of each requirement that an extra adds."""
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return ()
    found = []
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        if name and extra and _canonical(name.group()) != _canonical(DISTRIBUTION):
            found.append((name.group(), extra.group(1)))
    return tuple(found)


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "", name).lower()

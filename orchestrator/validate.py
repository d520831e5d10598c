"""Reading untrusted mappings (YAML, JSON) into typed values, with key paths.

Every config section of the project is parsed through a ``Section``: it takes
typed values out of a mapping, records one problem per bad key (naming its
full path, e.g. ``queues.ai_processing.max_concurrent: must be >= 1, got 0``)
instead of stopping at the first, and reports keys nobody asked for as
unknown. ``Problems.raise_if_any`` turns the list into one ``ConfigError``.

``read_yaml`` parses a file the same way for everyone: UTF-8 only, duplicate
keys refused at any level (both lines named), and the line of every key kept,
so a problem says where it is (``queues.ai.cooldown: must be >= 0, got -1 (line 14)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

_MISSING: Any = object()

YEAR_S = 365 * 86400.0  # the longest duration a config key allows (Redis expiries, timers)


class ConfigError(ValueError):
    """A config that cannot be used; ``problems`` holds one line per fault."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class Problems:
    """Collects problems across sections so the operator sees all at once."""

    lines: list[str] = field(default_factory=list)
    key_lines: Mapping[str, int] = field(default_factory=dict)  # key path -> YAML line

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{path}: {message}{self.line_of(path)}" if path else message)

    def line_of(self, path: str) -> str:
        """`` (line N)``: where ``path``, or the nearest key above it, is in the file."""
        key = path
        while key and key not in self.key_lines:
            key = key.rpartition(".")[0]
        return f" (line {self.key_lines[key]})" if key else ""

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError(self.lines)


def _as_float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer of hundreds of digits
            return math.copysign(math.inf, value)
    return None


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


class Section:
    """Typed access to one mapping of the config, at ``path``.

    Each getter returns the value, or the default when the key is absent, or
    the default *and* a recorded problem when the value is wrong. Call
    ``done()`` after the last getter to report unknown keys.
    """

    def __init__(self, data: object, path: str, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            problems.add(path, f"must be a mapping, got {_type_name(data)}")
            data = {}
        self.data: Mapping[str, Any] = data

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> None:
        self.problems.add(self.key_path(key), message)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return self.data.get(key, default)

    def child(self, key: str) -> Section:
        return Section(self.raw(key), self.key_path(key), self.problems)

    def items(self) -> Iterator[tuple[str, Any]]:
        for key, value in self.data.items():
            self.seen.add(str(key))
            yield str(key), value

    def _get(self, key: str, default: T, check: Callable[[Any], T | None], want: str) -> T:
        value = self.raw(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                self.error(key, "is required")
            return default
        converted = check(value)
        if converted is None:
            self.error(key, f"must be {want}, got {_type_name(value)} {value!r}")
            return default
        return converted

    def string(self, key: str, default: Any = _MISSING, choices: Sequence[str] = ()) -> Any:
        value = self._get(key, default, lambda v: v if isinstance(v, str) else None, "a string")
        if choices and isinstance(value, str) and value not in choices and value != default:
            self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, default, lambda v: v if isinstance(v, bool) else None, "true/false")

    def integer(
        self, key: str, default: Any = _MISSING, min: int | None = None, max: int | None = None
    ) -> Any:
        value = self._get(
            key,
            default,
            lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None,
            "an integer",
        )
        return self._in_range(key, value, default, min, max)

    def number(
        self, key: str, default: Any = _MISSING, min: float | None = None, max: float | None = None
    ) -> Any:
        value = self._get(
            key,
            default,
            _as_float,
            "a number",
        )
        if isinstance(value, float) and not math.isfinite(value):
            self.error(key, f"must be a finite number, got {value!r}")
            return default
        return self._in_range(key, value, default, min, max)

    def _in_range(
        self, key: str, value: Any, default: Any, low: float | None, high: float | None
    ) -> Any:
        if value is None or value is default:
            return value
        if low is not None and value < low:
            self.error(key, f"must be >= {low:g}, got {value:g}")
            return default
        if high is not None and value > high:
            self.error(key, f"must be <= {high:g}, got {value:g}")
            return default
        return value

    def string_list(self, key: str, default: Any = _MISSING) -> Any:
        def check(v: Any) -> tuple[str, ...] | None:
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return tuple(v)
            return None

        return self._get(key, default, check, "a list of strings")

    def done(self) -> None:
        for key in self.data:
            if str(key) not in self.seen:
                self.problems.add(self.key_path(str(key)), "unknown key")


def read_yaml(file: Path) -> tuple[Any, dict[str, int]]:
    """The YAML document of ``file`` and the line of each key path.

    Raises ``ConfigError`` for a file that cannot be read, is not UTF-8, is
    not YAML, or repeats a key within one mapping.
    """
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{file}: not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}"]
        ) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        key_lines: dict[str, int] = {}
        duplicates: list[str] = []
        if node is not None:
            _key_lines(node, "", key_lines, duplicates, set())
        if duplicates:
            raise ConfigError([f"{file}: {d}" for d in duplicates])
        return (loader.construct_document(node) if node is not None else None), key_lines
    except yaml.YAMLError as exc:
        raise ConfigError([f"{file}: invalid YAML: {exc}"]) from None
    finally:
        loader.dispose()


def _key_lines(
    node: yaml.Node, path: str, lines: dict[str, int], duplicates: list[str], walked: set[int]
) -> None:
    """Record the line of each key under ``node``; a key given twice in one
    mapping goes to ``duplicates`` (YAML would keep the last silently). An
    alias (``*name``) is walked once, where its anchor is."""
    if not isinstance(node, yaml.MappingNode) or id(node) in walked:
        return
    walked.add(id(node))
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
            continue
        key_path = f"{path}.{key_node.value}" if path else str(key_node.value)
        line = key_node.start_mark.line + 1
        if key_node.value in seen:
            duplicates.append(
                f"{key_path}: duplicate key, on line {seen[key_node.value]} and line {line}"
            )
        else:
            seen[key_node.value] = line
            lines[key_path] = line
        _key_lines(value_node, key_path, lines, duplicates, walked)

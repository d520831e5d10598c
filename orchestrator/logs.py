"""Logging: loguru, as plain lines or one JSON object per line.

Operators read the plain lines (seed 004's formats, with their pictographs
unless ``log.emoji: false``); log shippers read ``log.format: json``, where
each line carries the message plus the event's fields (``event``, ``queue``,
``worker_id``, ``pid``...). ``Events`` is the one place lines are emitted
from, so the two formats never drift apart.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

if TYPE_CHECKING:
    from loguru import Message

PLAIN_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}"


class LogFormat(StrEnum):
    PLAIN = "plain"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: LogFormat = LogFormat.PLAIN
    emoji: bool = True
    level: str = "INFO"


def setup_logging(config: LogConfig, stream: TextIO | None = None) -> None:
    """Route every log line to ``stream`` (stderr) in the configured format."""
    out = stream or sys.stderr
    logger.remove()
    if config.format is LogFormat.JSON:
        logger.add(_json_sink(out), level=config.level, format="{message}")
    else:
        logger.add(out, level=config.level, format=PLAIN_FORMAT, colorize=False)


def _json_sink(out: TextIO) -> Any:
    def sink(message: Message) -> None:
        record = message.record
        line: dict[str, Any] = {
            "time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
            "level": record["level"].name,
            "message": record["message"],
        }
        line.update({k: _plain(v) for k, v in record["extra"].items()})
        if record["exception"] is not None:
            line["exception"] = str(record["exception"].value)
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        out.flush()

    return sink


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class Events:
    """Emits the operator-facing lines, with or without pictographs."""

    def __init__(self, emoji: bool = True) -> None:
        self.emoji = emoji

    def text(self, icon: str, text: str) -> str:
        return f"{icon} {text}" if self.emoji and icon else text

    def info(self, event: str, icon: str, text: str, **fields: Any) -> None:
        logger.bind(event=event, **fields).info(self.text(icon, text))

    def warning(self, event: str, icon: str, text: str, **fields: Any) -> None:
        logger.bind(event=event, **fields).warning(self.text(icon, text))

    def error(self, event: str, icon: str, text: str, **fields: Any) -> None:
        logger.bind(event=event, **fields).error(self.text(icon, text))

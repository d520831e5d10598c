"""Logging: loguru, as plain lines or one JSON object per line.

Operators read the plain lines (seed 004's formats, with their pictographs
unless ``log.emoji: false``); log shippers read ``log.format: json``, where
each line carries the message plus the event's fields (``event``, ``queue``,
``worker_id``, ``pid``...), and an exception's type, message and traceback
inside the same object. ``Events`` is the one place the spawner's lines are
emitted from, so the two formats never drift apart. The spawner's workers
log the same way: ``setup_logging`` is theirs too (the config reaches them
as ``ORCH_LOG_*``, see ``orchestrator.worker.workerenv``).
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
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
    """Route every log line of this process to ``stream`` (stderr) in the
    configured format: loguru's, the standard library's (RQ's, the
    libraries'), warnings, and uncaught exceptions with their tracebacks."""
    out = stream or sys.stderr
    if isinstance(out, _LinesToLog):  # set up again in a process whose output is captured
        out = out.original
    logger.remove()
    if config.format is LogFormat.JSON:
        logger.add(_json_sink(out), level=config.level, format="{message}")
    else:
        logger.add(
            out,
            level=config.level,
            format=PLAIN_FORMAT,
            colorize=False,
            backtrace=False,
            diagnose=False,  # a traceback shows no variables' values (secrets)
        )
    logging.basicConfig(handlers=[_ToLoguru()], level=config.level, force=True)
    logging.captureWarnings(True)
    sys.excepthook = log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def capture_output() -> None:
    """``print`` and other writes to stdout and stderr become log lines (a
    JSON-logging worker's handler printing): INFO and WARNING, each line
    one, with ``stream`` saying which."""
    if not isinstance(sys.stdout, _LinesToLog):
        sys.stdout = _LinesToLog(sys.stdout, "stdout", "INFO")
    if not isinstance(sys.stderr, _LinesToLog):
        sys.stderr = _LinesToLog(sys.stderr, "stderr", "WARNING")


class _LinesToLog(io.TextIOBase):
    def __init__(self, original: TextIO, name: str, level: str) -> None:
        self.original, self.stream, self.level = original, name, level
        self.pending = ""

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:  # a child process given this stream inherits the real one
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self._log(line)
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self._log(self.pending)
            self.pending = ""

    def _log(self, line: str) -> None:
        if line.strip():
            logger.bind(stream=self.stream).log(self.level, line.rstrip())


def log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """An exception nothing caught, as one log line with its traceback (``sys.excepthook``)."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    text = f"Uncaught {kind.__name__}: {value}"
    if isinstance(value, ModuleNotFoundError) and value.name:
        from orchestrator import plugins  # only now: the rare case needs the metadata

        extra = plugins.extra_providing(value.name)
        if extra is not None:
            text += f" (it comes with the [{extra}] extra: {plugins.install_hint(extra)})"
    logger.bind(event="uncaught").opt(exception=(kind, value, tb)).critical(text)


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


class _ToLoguru(logging.Handler):
    """The standard library's records, as loguru lines (``logger``: their logger's name)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        exception = record.exc_info if record.exc_info and record.exc_info[0] else None
        logger.bind(logger=record.name).opt(exception=exception).log(level, record.getMessage())


def _json_sink(out: TextIO) -> Any:
    def sink(message: Message) -> None:
        record = message.record
        line: dict[str, Any] = {
            "time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
            "level": record["level"].name,
            "message": record["message"],
        }
        line.update({k: _plain(v) for k, v in record["extra"].items()})
        error = record["exception"]
        if error is not None and error.type is not None:
            line["exception"] = str(error.value)
            line["exception_type"] = error.type.__name__
            line["traceback"] = "".join(
                traceback.format_exception(error.type, error.value, error.traceback)
            ).rstrip()
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

"""Bytes and text at the Redis boundary: one codec for the whole project.

Stream fields are bytes; producers may put anything in them. Everything
here decodes UTF-8 with ``surrogateescape``, so a field that is not valid
UTF-8 becomes a ``str`` whose invalid bytes are lone surrogates
(``"\\udcff"`` for ``b"\\xff"``), and ``to_bytes`` gives back the very same
bytes. hiredis packs commands with strict UTF-8, so a value that may carry
such surrogates must go back to Redis through ``to_bytes``. ``printable``
is for people: invalid bytes shown as ``\\xff``.

A job is the field ``payload`` holding a JSON object (SPEC.md):
``encode_payload`` writes it (compact), ``decode_payload`` reads it back or
says why it cannot be a job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

ENCODING = "utf-8"
ERRORS = "surrogateescape"


def text(value: Any) -> str:
    """A reply value as ``str`` (bytes decoded losslessly)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode(ENCODING, ERRORS)
    return str(value)


def decoded(value: Any) -> Any:
    """Bytes decoded as ``text`` does; any other value as it is."""
    return text(value) if isinstance(value, bytes | bytearray | memoryview) else value


def to_bytes(value: str | bytes) -> bytes:
    """The exact bytes of a value ``text`` decoded."""
    return value if isinstance(value, bytes) else value.encode(ENCODING, ERRORS)


def fields_to_bytes(fields: Mapping[str, Any]) -> dict[bytes, bytes]:
    """Stream fields ready for XADD, byte for byte what was read."""
    return {
        to_bytes(k): to_bytes(v if isinstance(v, str | bytes) else str(v))
        for k, v in fields.items()
    }


def printable(value: str | bytes) -> str:
    """For terminals and logs: valid UTF-8 as is, invalid bytes as ``\\xNN``
    and control characters escaped likewise (``\\x00``)."""
    decoded = to_bytes(value).decode(ENCODING, "backslashreplace")
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in decoded)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


PAYLOAD = "payload"


def encode_payload(job: Mapping[str, Any]) -> str:
    """A job as the ``payload`` field: compact JSON."""
    return json.dumps(job, separators=(",", ":"))


class BadPayload(ValueError):
    """A ``payload`` that is not a JSON object: the job can never run."""


def decode_payload(raw: str | bytes) -> dict[str, Any]:
    """The job a ``payload`` field holds; ``BadPayload`` says why not."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadPayload(f"invalid JSON payload: {exc}") from None
    if not isinstance(data, dict):
        raise BadPayload(f"payload must be a JSON object, got {type(data).__name__}")
    return data

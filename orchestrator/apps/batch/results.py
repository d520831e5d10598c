"""What a batch leaves behind: one JSON line per symbol, and a summary.

Under ``<results_dir>/<batch id>/``:

* ``results.jsonl``: one line per symbol, in the order the batch named
  them: ``{"symbol", "matches" (ISO bar times), "indicators" (last values,
  null while warming up), "error" (null, or why the symbol has no result),
  "time_ms"}``;
* ``summary.json``: the batch (formula, parameters, timeframe, range),
  counts (``symbols``, ``ok``, ``errors``, ``matched`` symbols, ``matches``),
  the symbols that matched, and the error of every failed symbol.

Both are written to a temporary file, synced and renamed: a reader sees a
whole file or none, and a batch that runs again replaces them whole.
``summary.json`` is written last, so its presence means the batch is complete.

A shard's results travel between hosts as a *part*: its JSON lines,
zlib-compressed, in the batch's Redis hash until the merge.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.apps.batch.engine import ProcessingResult
from orchestrator.apps.batch.request import BatchRequest

__all__ = [
    "RESULTS_FILE",
    "SUMMARY_FILE",
    "Merged",
    "decode_part",
    "encode_part",
    "merge_parts",
    "result_line",
    "write_atomically",
    "write_results",
]

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"


def result_line(result: ProcessingResult) -> str:
    record = {
        "symbol": result.symbol,
        "matches": [m.isoformat() for m in result.matches],
        "indicators": {
            name: value if value is None or math.isfinite(value) else None
            for name, value in result.computed_indicators.items()
        },
        "error": result.error,
        "time_ms": round(result.processing_time_ms, 3),
    }
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


def encode_part(lines: Iterable[str]) -> bytes:
    return zlib.compress("\n".join(lines).encode(), 6)


def decode_part(blob: bytes) -> list[str]:
    text = zlib.decompress(blob).decode()
    return text.split("\n") if text else []


@dataclass(frozen=True, slots=True)
class Merged:
    """The merged batch: its file contents and the counts for Redis."""

    lines: Sequence[str]
    summary: dict[str, Any]

    @property
    def counts(self) -> dict[str, int]:
        keys = ("symbols", "ok", "errors", "matched", "matches")
        return {k: int(self.summary[k]) for k in keys}


def merge_parts(parts: Sequence[bytes], request: BatchRequest) -> Merged:
    """Parts in shard order make the batch's lines; the summary counts them.

    ``request`` is any shard of the batch (only its batch-wide fields are used).
    """
    lines = [line for part in parts for line in decode_part(part)]
    records = [json.loads(line) for line in lines]
    matched = [r["symbol"] for r in records if r["matches"]]
    errors = {r["symbol"]: r["error"] for r in records if r["error"] is not None}
    summary: dict[str, Any] = {
        "batch_id": request.batch_id,
        "formula": request.formula,
        "parameters": dict(request.parameters),
        "timeframe": request.timeframe,
        "start": request.start.isoformat() if request.start else None,
        "end": request.end.isoformat() if request.end else None,
        "last_bar_only": request.last_bar_only,
        "shards": request.shards,
        "symbols": len(records),
        "ok": len(records) - len(errors),
        "errors": len(errors),
        "matched": len(matched),
        "matches": sum(len(r["matches"]) for r in records),
        "matched_symbols": matched,
        "error_symbols": errors,
        "results": RESULTS_FILE,
    }
    return Merged(lines, summary)


def write_results(directory: Path, merged: Merged) -> Path:
    """``results.jsonl`` then ``summary.json``, each atomically; the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{line}\n" for line in merged.lines).encode()
    write_atomically(directory / RESULTS_FILE, body)
    summary = json.dumps(merged.summary, indent=2, ensure_ascii=False) + "\n"
    write_atomically(directory / SUMMARY_FILE, summary.encode())
    return directory


def write_atomically(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename, fsync the directory."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with temp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

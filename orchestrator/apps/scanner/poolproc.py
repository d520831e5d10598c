"""The program of one pool process: ``python -m orchestrator.apps.scanner.poolproc``.

It reads frames from stdin (see ``frames``), runs every BATCH through its
``PatternEngine`` in order and writes one RESULT frame per batch to the
stdout it was started with (``print`` goes to stderr instead, so a stray
print cannot corrupt the stream). It exits 0 on STOP or when stdin closes,
which is also what happens when the parent dies. SIGINT is ignored: a
Ctrl-C in a terminal is the parent's to handle. A crash is logged in the
spawner's log format, its traceback in one line when that is JSON.
"""

from __future__ import annotations

import marshal
import os
import pickle
import signal
import sys

from orchestrator.apps.scanner.detection import PatternEngine
from orchestrator.apps.scanner.frames import Flag, Frame, FrameReader, Kind, encode

READ_CHUNK = 1 << 20


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out_fd = os.dup(1)
    os.dup2(2, 1)
    reader = FrameReader()
    engine: PatternEngine | None = None
    while True:
        data = os.read(0, READ_CHUNK)
        if not data:
            return 0
        for frame in reader.feed(data):
            if frame.kind is Kind.STOP:
                return 0
            if frame.kind is Kind.INIT:
                settings, checkpoint = pickle.loads(frame.payload)
                engine = PatternEngine(settings)
                engine.restore(checkpoint)
            elif frame.kind is Kind.BATCH and engine is not None:
                reply = handle_batch(engine, frame)
                if reply is not None:
                    _write_all(out_fd, reply)


def handle_batch(engine: PatternEngine, frame: Frame) -> bytes | None:
    """Process one batch; the RESULT frame to send, or None for a silent replay."""
    outcome = engine.process(marshal.loads(frame.payload), mute=Flag.MUTE in frame.flags)
    if Flag.NO_REPLY in frame.flags:
        return None
    checkpoint = None
    if Flag.CHECKPOINT in frame.flags:
        engine.evict_idle()
        checkpoint = engine.snapshot()
    payload = marshal.dumps((outcome.alerts, outcome.invalid, outcome.suppressed, checkpoint))
    return encode(Kind.RESULT, Flag.NONE, frame.batch_id, payload)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _crashed(exc: BaseException) -> int:
    from orchestrator.worker import log_crash  # only now: a pool process starts light

    log_crash(exc)
    return 1  # as Python exits on an uncaught exception


if __name__ == "__main__":
    try:
        code = main()
    except Exception as exc:  # logged as the spawner's config says, with its traceback
        code = _crashed(exc)
    sys.exit(code)

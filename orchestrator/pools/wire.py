"""The wire between the pool's parent and a worker: length-prefixed pickles.

A frame is a 4-byte big-endian length and a pickle. The parent reads what
has arrived without blocking (``receive_ready``); a worker blocks for its
next message (``receive``).
"""

from __future__ import annotations

import pickle
import socket
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["HEADER", "PACKET_BYTES", "Channel"]

HEADER = struct.Struct("!I")
PACKET_BYTES = 1 << 16


def _load(frame: memoryview) -> Any:
    """A frame's message; ``("garbled", why)`` if it cannot be unpickled."""
    try:
        return pickle.loads(frame)
    except Exception as exc:  # a result class the parent cannot import
        return ("garbled", f"{type(exc).__name__}: {exc}")


class Channel:
    """Length-prefixed pickles over a stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.eof = False
        self._buffer = bytearray()

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: object) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.sock.sendall(HEADER.pack(len(data)) + data)

    def receive(self) -> Any:
        """Block for one message; ``EOFError`` when the peer is gone."""
        while not (messages := self._frames(pickle.loads, limit=1)):
            try:
                chunk = self.sock.recv(PACKET_BYTES)
            except ConnectionResetError:  # closed with our replies unread
                chunk = b""
            if not chunk:
                raise EOFError
            self._buffer += chunk
        return messages[0]

    def receive_ready(self, *, drain: bool = False) -> list[Any]:
        """Whole messages that have arrived, without blocking.

        A short read usually means the socket is empty; the selector
        reports it again if not. ``drain`` reads on until EOF or nothing.
        """
        while not self.eof:
            try:
                chunk = self.sock.recv(PACKET_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
            self._buffer += chunk
            if len(chunk) < PACKET_BYTES and not drain:
                break
        return self._frames(_load)

    def _frames(self, load: Callable[[memoryview], Any], limit: int = -1) -> list[Any]:
        """``load`` up to ``limit`` (-1: all) whole frames from the buffer,
        in place: no copy per frame, one cut at the end."""
        messages: list[Any] = []
        start, total = 0, len(self._buffer)
        with memoryview(self._buffer) as view:
            while len(messages) != limit and total - start >= HEADER.size:
                end = start + HEADER.size + HEADER.unpack_from(view, start)[0]
                if end > total:
                    break
                with view[start + HEADER.size : end] as frame:
                    messages.append(load(frame))
                start = end
        del self._buffer[:start]
        return messages

    def close(self) -> None:
        self.sock.close()

"""The wire between the pool's parent and a worker: length-prefixed pickles.

A frame is a 4-byte big-endian length and a pickle. The parent reads what
has arrived without blocking (``receive_ready``); a worker blocks for its
next message (``receive``).
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

__all__ = ["HEADER", "PACKET_BYTES", "Channel"]

HEADER = struct.Struct("!I")
PACKET_BYTES = 1 << 16


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
        while (frame := self._next_frame()) is None:
            try:
                chunk = self.sock.recv(PACKET_BYTES)
            except ConnectionResetError:  # closed with our replies unread
                chunk = b""
            if not chunk:
                raise EOFError
            self._buffer += chunk
        return pickle.loads(frame)

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
        messages = []
        while (frame := self._next_frame()) is not None:
            try:
                messages.append(pickle.loads(frame))
            except Exception as exc:  # a result class the parent cannot import
                messages.append(("garbled", f"{type(exc).__name__}: {exc}"))
        return messages

    def _next_frame(self) -> bytes | None:
        if len(self._buffer) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self._buffer)
        end = HEADER.size + size
        if len(self._buffer) < end:
            return None
        frame = bytes(self._buffer[HEADER.size : end])
        del self._buffer[:end]
        return frame

    def close(self) -> None:
        self.sock.close()

"""A worker tree's resident memory, read cheaply enough to sample every 50 ms.

``TreeRss`` keeps the worker's ``/proc/PID/statm`` and each of its threads'
``children`` files open and re-reads them with ``pread``: a few
microseconds each, where opening them anew (as psutil and
``procs.descendants`` do) costs the parent some 100 us per sample of a
worker with a handful of threads. The threads are listed again at every
sample; the processes below the worker, if a task started any, are walked
as before. The files refer to the process itself, not its pid: once it is
gone they read as gone, even if the pid is reused.
"""

from __future__ import annotations

import contextlib
import os

import psutil

from orchestrator.procs import descendants, existing, snapshot_tree

__all__ = ["TreeRss"]

_PAGE = os.sysconf("SC_PAGE_SIZE")


class TreeRss:
    """Bytes resident in a worker and its descendants; ``close()`` when done."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fds: dict[str, int] = {}  # "statm", or a thread id -> its children file

    @staticmethod
    def supported(pid: int) -> bool:
        """Whether the kernel has the ``children`` files (since Linux 3.5)."""
        return os.path.exists(f"/proc/{pid}/task/{pid}/children")

    def total(self) -> int:
        """The tree's RSS; ``psutil.NoSuchProcess`` once the worker is gone."""
        try:
            total = int(self._read("statm", "statm").split()[1]) * _PAGE
            kids = self._children()
        except OSError as exc:
            raise psutil.NoSuchProcess(self.pid) from exc
        for kid in kids:
            total += _subtree_rss(kid)
        return total

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _children(self) -> list[int]:
        tids = os.listdir(f"/proc/{self.pid}/task")
        for gone in self._fds.keys() - {"statm", *tids}:
            os.close(self._fds.pop(gone))
        kids: list[int] = []
        for tid in tids:
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):  # a thread ended
                kids.extend(int(k) for k in self._read(tid, f"task/{tid}/children").split())
        return kids

    def _read(self, key: str, name: str) -> bytes:
        fd = self._fds.get(key)
        if fd is None:
            fd = self._fds[key] = os.open(f"/proc/{self.pid}/{name}", os.O_RDONLY)
        data = os.pread(fd, 4096, 0)
        if not data and key == "statm":  # an exited process reads empty
            raise ProcessLookupError(self.pid)
        return data


def _subtree_rss(pid: int) -> int:
    """RSS of a process below the worker and of its own descendants."""
    kids = descendants(pid)
    total = 0
    for proc in snapshot_tree(pid) if kids is None else existing([pid, *kids]):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total

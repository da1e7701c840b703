"""One stack per data directory: an exclusive ``flock`` on ``<data_dir>/radiogate.lock``.

The lock is held for the life of ``radiogate run`` and released by the kernel when the process
ends, however it ends (kill -9 included), so a stale file never blocks a start. While held, the
file holds a JSON document: pid, ports and the restart counts of the services, so a second start
(and an operator) can say who runs there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["AlreadyRunning", "StackLock", "held_by", "lock_path", "read_lock"]

LOCK_NAME = "radiogate.lock"


def lock_path(data_dir: Path) -> Path:
    return data_dir / LOCK_NAME


class AlreadyRunning(RuntimeError):
    """Another process holds the data directory's lock."""

    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        self.info = info
        pid = info.get("pid", "?")
        ports = info.get("ports") or {}
        listed = ", ".join(f"{k} {v}" for k, v in ports.items()) or "ports unknown"
        super().__init__(
            f"already running (pid {pid}, ports {listed}) with data directory {path.parent}"
        )


class StackLock:
    """The data directory's lock; :meth:`acquire` raises :class:`AlreadyRunning` if taken."""

    def __init__(self, data_dir: Path) -> None:
        self.path = lock_path(data_dir)
        self._fd: int | None = None

    def acquire(self, info: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self.path, read_lock(self.path)) from None
        self._fd = fd
        self.update(info)

    def update(self, info: dict[str, Any]) -> None:
        """Replace the file's JSON document (we hold the lock)."""
        if self._fd is None:
            raise RuntimeError("lock not held")
        data = json.dumps(info, sort_keys=True).encode() + b"\n"
        # Never empty, never a torn tail: the new document is written over the old one padded
        # with spaces to the old length (JSON followed by blanks is still the new document),
        # then the blanks are cut off. A reader racing the write itself retries (read_lock).
        old = os.fstat(self._fd).st_size
        os.pwrite(self._fd, data.ljust(old, b" "), 0)
        if old > len(data):
            os.ftruncate(self._fd, len(data))

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def read_lock(path: Path, attempts: int = 50) -> dict[str, Any]:
    """The holder's JSON document ({} if unreadable). An update is not atomic for a reader
    (the file keeps its inode: the lock is on it), so a document counts only when two reads in
    a row agree; caught in the middle of an update, it reads again."""
    previous: str | None = None
    for _attempt in range(attempts):
        try:
            text = path.read_text()
        except OSError:
            return {}
        if text == previous:
            try:
                doc = json.loads(text or "{}")
            except ValueError:
                doc = None
            if doc is not None:
                return doc if isinstance(doc, dict) else {}
            time.sleep(0.001)
        previous = text
    return {}


def held_by(data_dir: Path) -> dict[str, Any] | None:
    """The holder's document if a process holds the lock of *data_dir*, else None."""
    path = lock_path(data_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_lock(path)
    finally:
        os.close(fd)
    return None

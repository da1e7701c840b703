"""Wake-ups for the event-driven reactors."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from typing import Any, Final

__all__ = ["MAX_WAIT", "Waker", "WakingQueue"]

MAX_WAIT: Final = 0.05
"""Longest a reactor blocks without a signal, seconds (timers are checked at least this often)."""


class Waker:
    """A file descriptor that ``select()`` can wait on, made readable by :meth:`wake`.

    Closing is guarded by a lock so that a late :meth:`wake` from another thread never writes to
    a descriptor number that the process has since reused.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        if hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.fd = self._write_fd = fd
        else:  # pragma: no cover - non-Linux
            self.fd, self._write_fd = os.pipe()
            os.set_blocking(self.fd, False)
            os.set_blocking(self._write_fd, False)

    def wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            # BlockingIOError: counter or pipe full, so it is readable already.
            with contextlib.suppress(BlockingIOError):
                os.write(self._write_fd, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            os.read(self.fd, 4096)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self.fd)
            if self._write_fd != self.fd:  # pragma: no cover - non-Linux
                os.close(self._write_fd)

    @property
    def closed(self) -> bool:
        return self._closed


class WakingQueue(queue.Queue[Any]):
    """A :class:`queue.Queue` that calls *notify* after every ``put``."""

    def __init__(self, notify: Any) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._notify()

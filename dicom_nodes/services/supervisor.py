"""Keeping ``radiogate run``'s children alive: restart with back-off, logged, audited, counted.

Each child is a :class:`Service`. A process child runs in its own session (process group), so
Ctrl-C in the terminal reaches only ``radiogate run``, which then stops the children in order,
and when a child dies whatever it left in its group (the SCP's receiver processes) is ended
before it is started again: no orphan keeps a port. Children also get ``PR_SET_PDEATHSIG``
(SIGTERM), so a ``radiogate run`` killed with -9 takes them down instead of leaving them.

Back-off: the first restart after 1 s, doubling up to 60 s; a child that has run for 60 s
counts as healthy again and the next restart waits 1 s. Nothing stops restarting but a signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = [
    "ProcessService",
    "Service",
    "Supervised",
    "die_with_parent",
    "stop_group",
]

LOGGER = logging.getLogger(__name__)

BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
HEALTHY_AFTER = 60.0

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def die_with_parent() -> None:
    """In a child before exec: receive SIGTERM when the parent dies (Linux ``prctl``)."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Service(Protocol):
    """Something ``radiogate run`` starts and keeps running."""

    @property
    def name(self) -> str: ...
    @property
    def pid(self) -> int | None: ...
    def start(self) -> None: ...
    def running(self) -> bool: ...
    def exit_status(self) -> int | None: ...
    def stop(self) -> None: ...


def stop_group(pgid: int, timeout: float = 20.0) -> None:
    """SIGTERM a process group, wait until it is empty, SIGKILL what is left after *timeout*."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass
class ProcessService:
    """A ``radiogate`` subcommand (or any command) as a child in its own process group."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    log: Path | None = None
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        out = self.log.open("ab") if self.log is not None else None
        try:
            self._proc = subprocess.Popen(
                list(self.argv),
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - single-threaded supervisor
            )
        finally:
            if out is not None:
                out.close()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_status(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the child and wait for it (it stops what it started, in its own order), then
        end whatever is left of its process group (also after the child died by itself)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                LOGGER.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
        stop_group(self._proc.pid, timeout=5.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        self._proc = None


@dataclass
class Supervised:
    """A service with its restart bookkeeping; :meth:`check` restarts it when it has died."""

    service: Service
    on_event: Callable[[str, str, int], None] = field(default=lambda _n, _what, _count: None)
    """Called as ``(name, "started" | "stopped" | "died", restarts)``: audit and logs."""
    restarts: int = 0
    _delay: float = BACKOFF_INITIAL
    _started_at: float = 0.0
    _retry_at: float | None = None

    @property
    def name(self) -> str:
        return self.service.name

    def start(self) -> None:
        self.service.start()
        self._started_at = time.monotonic()
        self.on_event(self.name, "started", self.restarts)

    def check(self) -> None:
        """Restart the service if it died and its back-off has passed (never raises for it)."""
        now = time.monotonic()
        if self._retry_at is None:
            if self.service.running():
                if now - self._started_at >= HEALTHY_AFTER:
                    self._delay = BACKOFF_INITIAL
                return
            status = self.service.exit_status()
            self.service.stop()  # whatever it left in its process group
            if now - self._started_at >= HEALTHY_AFTER:
                self._delay = BACKOFF_INITIAL
            LOGGER.error(
                "%s exited (status %s); restarting in %.0f s (restart %d)",
                self.name,
                status,
                self._delay,
                self.restarts + 1,
            )
            self.on_event(self.name, "died", self.restarts)
            self._retry_at = now + self._delay
            self._delay = min(self._delay * 2, BACKOFF_MAX)
            return
        if now < self._retry_at:
            return
        self._retry_at = None
        self.restarts += 1
        try:
            self.start()
        except Exception as exc:
            LOGGER.error("%s could not be restarted: %s", self.name, exc)
            self._started_at = time.monotonic()
            self._retry_at = time.monotonic() + self._delay
            self._delay = min(self._delay * 2, BACKOFF_MAX)
        else:
            LOGGER.warning(
                "%s restarted (pid %s, restart %d)", self.name, self.service.pid, self.restarts
            )

    def stop(self) -> None:
        self.service.stop()
        self.on_event(self.name, "stopped", self.restarts)

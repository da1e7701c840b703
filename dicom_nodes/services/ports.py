"""Ports a stack needs, checked before anything starts, each named with the setting moving it."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["PortInUse", "PortUse", "check_ports", "env_name"]


def env_name(setting: str) -> str:
    """The environment variable overriding *setting*, e.g. ``RADIOGATE_ORTHANC__HTTP_PORT``."""
    return "RADIOGATE_" + setting.upper().replace(".", "__")


@dataclass(frozen=True)
class PortUse:
    """A TCP port a service will listen on: where, and the setting that chooses it."""

    setting: str
    port: int
    host: str = "127.0.0.1"


class PortInUse(RuntimeError):
    """A port is taken by another process (or configured twice); not retryable as is."""

    def __init__(self, use: PortUse, other: PortUse | None = None) -> None:
        self.use = use
        if other is not None:
            message = (
                f"port {use.port} is configured twice ({other.setting} and {use.setting}): "
                f"set {use.setting} or {env_name(use.setting)}"
            )
        else:
            message = f"port {use.port} is in use: set {use.setting} or {env_name(use.setting)}"
        super().__init__(message)


def check_ports(uses: Iterable[PortUse]) -> None:
    """Raise :class:`PortInUse` for the first port that is configured twice or cannot be bound.

    Each port is bound (``SO_REUSEADDR``, so sockets in TIME_WAIT do not count) and closed at
    once: a process listening on it, on this address or on all addresses, makes the bind fail.
    """
    seen: dict[int, PortUse] = {}
    for use in uses:
        if use.port == 0:
            continue
        if use.port in seen:
            raise PortInUse(use, seen[use.port])
        seen[use.port] = use
        family = socket.AF_INET6 if ":" in use.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((use.host, use.port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise PortInUse(use) from None
                raise

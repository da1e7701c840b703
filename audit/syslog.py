"""RFC 5424 syslog messages over UDP (RFC 5426) or TCP (RFC 6587 octet counting).

Used to publish signed checkpoints and to send DICOM PS3.15 A.5 audit messages to an ATNA audit
record repository (IHE ITI-20 "Record Audit Event": facility 10, MSGID ``IHE+RFC-3881``).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Literal

__all__ = ["SyslogSender", "format_rfc5424"]

AUTHPRIV = 10
"""Facility 10, security/authorization messages (RFC 5424 6.2.1; IHE ITI TF-2a 3.20)."""
NOTICE = 5


def _field(value: str, limit: int) -> str:
    clean = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


def format_rfc5424(
    message: bytes,
    *,
    app_name: str,
    msgid: str,
    hostname: str | None = None,
    procid: str | None = None,
    facility: int = AUTHPRIV,
    severity: int = NOTICE,
    timestamp: dt.datetime | None = None,
) -> bytes:
    """One RFC 5424 message: header, no structured data, UTF-8 MSG with BOM."""
    ts = (timestamp or dt.datetime.now(dt.UTC)).isoformat(timespec="microseconds")
    header = (
        f"<{facility * 8 + severity}>1 {ts} {_field(hostname or socket.gethostname(), 255)} "
        f"{_field(app_name, 48)} {_field(procid or str(os.getpid()), 128)} "
        f"{_field(msgid, 32)} - "
    )
    return header.encode("ascii") + b"\xef\xbb\xbf" + message


class SyslogSender:
    """Sends RFC 5424 messages to *host*:*port* over UDP or TCP (reconnecting on failure)."""

    def __init__(
        self, host: str, port: int, protocol: Literal["UDP", "TCP"] = "UDP", timeout: float = 5.0
    ) -> None:
        self.host = host
        self.port = port
        self.protocol = protocol
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            if self.protocol == "TCP":
                self._sock = socket.create_connection((self.host, self.port), self.timeout)
            else:
                info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
                sock = socket.socket(info[0], socket.SOCK_DGRAM)
                sock.settimeout(self.timeout)
                sock.connect(info[4])
                self._sock = sock
        return self._sock

    def send(self, frame: bytes) -> None:
        """Send one formatted message (see :func:`format_rfc5424`)."""
        data = f"{len(frame)} ".encode() + frame if self.protocol == "TCP" else frame
        for attempt in (1, 2):
            try:
                self._connect().sendall(data)
                return
            except OSError:
                self.close()
                if attempt == 2:
                    raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SyslogSender:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

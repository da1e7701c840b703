"""A TCP proxy in front of PostgreSQL that can cut a connection around COMMIT (fault tests).

It reads the frontend protocol (PS: PostgreSQL "Message Flow", v3) just enough to see
messages: the start-up packet, then ``type byte + int32 length`` frames. A connection that
has sent the receiver's ingest statement (a Parse naming ``ingest_instance``) can be cut at
its commit: a simple-query ``COMMIT`` inside a transaction (``BEGIN``), or the Sync that ends
the statement when it runs in autocommit (the server commits it at the Sync)

* ``after``: the COMMIT (Sync) reaches the server (which commits), its answer never reaches
  the client;
* ``before``: the COMMIT (Sync) is dropped (the server rolls the transaction back).

While :attr:`PgProxy.down` is set, new connections are accepted and closed at once (a
database that cannot be reached). The DSN it gives disables TLS and GSS encryption so that
the stream is readable.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from dataclasses import dataclass, field

__all__ = ["PgProxy"]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


@dataclass
class PgProxy:
    """Listens on a free loopback port and forwards to *upstream_port*."""

    upstream_port: int
    cut: str | None = None
    """``"after"`` or ``"before"``: cut the next ingest COMMIT that way (then disarmed)."""
    down: bool = False
    down_after_cut: float = 0.0
    """After a cut, drop every connection and refuse new ones for this many seconds."""
    cuts: int = 0
    port: int = 0
    _server: socket.socket | None = None
    _threads: list[threading.Thread] = field(default_factory=list)
    _conns: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False

    def start(self) -> PgProxy:
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def dsn(self, dsn: str) -> str:
        """*dsn* rewritten to go through the proxy, unencrypted."""
        out = re.sub(r"port=\d+", f"port={self.port}", dsn)
        return f"{out} sslmode=disable gssencmode=disable"

    def stop(self) -> None:
        self._stopped = True
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.close()
        self.drop_all()

    def drop_all(self, keep: tuple[socket.socket, ...] = ()) -> None:
        """Cut every open connection but *keep* (a database restart as the client sees it)."""
        with self._lock:
            conns = [c for c in self._conns if c not in keep]
            self._conns = list(keep)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stopped:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            muted = threading.Event()
            self._spawn(self._pump_frontend, client, upstream, muted)
            self._spawn(self._pump_backend, upstream, client, muted)

    def _pump_backend(self, src: socket.socket, dst: socket.socket, muted: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                if not data or muted.is_set():
                    break
                dst.sendall(data)
        self._close(src, dst)

    def _pump_frontend(
        self, client: socket.socket, upstream: socket.socket, muted: threading.Event
    ) -> None:
        in_ingest = in_transaction = False
        try:
            size = int.from_bytes(_recv_exact(client, 4), "big")
            upstream.sendall(size.to_bytes(4, "big") + _recv_exact(client, size - 4))
            while True:
                head = _recv_exact(client, 5)
                body = _recv_exact(client, int.from_bytes(head[1:], "big") - 4)
                kind = head[:1]
                if kind == b"P" and b"INSERT INTO ingest_instance" in body:
                    in_ingest = True
                command = body.strip(b"\0; ").upper() if kind == b"Q" else b""
                if command == b"BEGIN":
                    in_transaction = True
                elif command in (b"COMMIT", b"ROLLBACK"):
                    in_transaction = False
                committing = in_ingest and (
                    command == b"COMMIT" or (kind == b"S" and not in_transaction)
                )
                if committing:
                    in_ingest = False
                    mode, self.cut = self.cut, None
                    if mode is not None:
                        muted.set()
                        self.cuts += 1
                        if self.down_after_cut:
                            self.down = True
                            self.drop_all(keep=(client, upstream))
                        if mode == "after":
                            upstream.sendall(head + body)
                            time.sleep(0.5)  # the server commits; its answer is lost
                        if self.down_after_cut:
                            self.drop_all()
                            threading.Timer(self.down_after_cut, self._up).start()
                        break
                upstream.sendall(head + body)
        except (OSError, ConnectionError):
            pass
        self._close(client, upstream)

    def _up(self) -> None:
        self.down = False

    def _close(self, *socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

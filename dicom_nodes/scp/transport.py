"""The SCP's TCP side: port sharing, socket options, IP allow-list, TLS, fast reads.

- ``SO_REUSEPORT`` lets several receiver processes accept on one port; the kernel spreads new
  connections between them (pynetdicom is CPU-bound in Python, one process per core scales).
- ``TCP_NODELAY`` on accepted sockets: our C-STORE-RSPs leave at once.
- ``TCP_QUICKACK`` re-armed after every read: a sender that leaves Nagle's algorithm on (DCMTK
  and Orthanc without ``TCP_NODELAY=1``, many modalities) otherwise waits for our delayed ACK
  (~40 ms) before sending the tail of each PDU.
- The IP allow-list closes connections from other networks before any PDU is read.
- TLS (PS3.15 B.12) handshakes run in the connection's own thread, never in the accept loop,
  so a slow or hostile peer cannot stall other connections.
- PDUs are read with one ``recv_into(MSG_WAITALL)`` per PDU instead of pynetdicom's 4 KiB loop.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

__all__ = ["ReceiverServer", "make_tls_context"]

LOGGER = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


_PREALLOCATE_MAX = 1 << 20
"""Largest read buffer allocated before the data arrives; a larger PDU length (the peer's word)
grows the buffer as bytes come in, so a bogus length cannot make us allocate gigabytes."""


class _FastAssociationSocket(AssociationSocket):
    """AssociationSocket that reads each PDU in one system call and keeps ACKs quick."""

    quickack: bool = False

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        assert sock is not None
        buf = bytearray(min(nr_bytes, _PREALLOCATE_MAX))
        nr_read = 0
        tls = isinstance(sock, ssl.SSLSocket)
        while nr_read < nr_bytes:
            if nr_read == len(buf):
                buf.extend(bytes(min(nr_bytes - nr_read, _PREALLOCATE_MAX)))
            view = memoryview(buf)
            try:
                if tls:
                    got = sock.recv_into(view[nr_read:], len(buf) - nr_read)
                else:
                    got = sock.recv_into(view[nr_read:], len(buf) - nr_read, socket.MSG_WAITALL)
            finally:
                view.release()
            if self.quickack and not tls:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            if not got:
                del buf[nr_read:]
                return buf
            nr_read += got
        return buf


class _RequestHandler(RequestHandler):
    def _create_association(self) -> Any:
        assoc = super()._create_association()
        fast = _FastAssociationSocket.__new__(_FastAssociationSocket)
        fast.__dict__.update(assoc.dul.socket.__dict__)
        fast.quickack = getattr(self.server, "quickack", False)
        assoc.dul.socket = fast
        return assoc


class ReceiverServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server with Radiogate's transport policy."""

    daemon_threads = True
    quickack = True
    allowed_networks: Sequence[Network] = ()
    tls_context: ssl.SSLContext | None = None
    tls_handshake_timeout: float = 30.0
    on_refused: Callable[[str, str], None] | None = None
    """Called with (peer address, reason) when a connection is refused before association."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["request_handler"] = _RequestHandler
        super().__init__(*args, **kwargs)
        # TLS is applied per connection in process_request_thread, not by pynetdicom's accept.
        self.tls_context = self.ssl_context
        self.ssl_context = None

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        client, address = self.socket.accept()
        # A peer that stops in the middle of a PDU is dropped after network_timeout (reads
        # only start when data is ready, so idle associations are governed by the ARTIM and
        # idle timers, not by this).
        client.settimeout(self.ae.network_timeout)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.quickack:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if not self.allowed_networks:
            return True
        try:
            peer = ipaddress.ip_address(client_address[0])
        except ValueError:
            return False
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
            peer = peer.ipv4_mapped
        if any(peer in net for net in self.allowed_networks):
            return True
        LOGGER.warning("connection from %s refused: address not in scp.allowed_networks", peer)
        if self.on_refused is not None:
            self.on_refused(str(peer), "network-not-allowed")
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if self.tls_context is not None:
            try:
                request.settimeout(self.tls_handshake_timeout)
                request = self.tls_context.wrap_socket(
                    request, server_side=True, do_handshake_on_connect=False
                )
                request.do_handshake()
                request.settimeout(None)
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                LOGGER.warning("TLS handshake with %s failed: %s", client_address[0], reason)
                if self.on_refused is not None:
                    self.on_refused(str(client_address[0]), f"tls-handshake-failed:{reason}")
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


def make_tls_context(
    certificate: str, private_key: str, ca_certificates: str, require_client_certificate: bool
) -> ssl.SSLContext:
    """Server TLS context for DICOM TLS (PS3.15 B.12 "BCP 195 TLS Secure Transport Connection
    Profile"): TLS 1.2 or later, client certificates verified against *ca_certificates*."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certificate, private_key)
    if ca_certificates:
        ctx.load_verify_locations(ca_certificates)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    return ctx

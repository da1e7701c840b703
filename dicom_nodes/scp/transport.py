"""The SCP's TCP side: port sharing, socket options, IP allow-list, TLS, fast reads.

- Several receiver processes accept from one listening socket that the supervisor made and
  they inherited (``listener``; :mod:`dicom_nodes.scp.accept`): a connection waits in one
  queue for the receiver with the fewest connections (pynetdicom is CPU-bound in Python, one
  process per core scales). A server made without one binds its own socket.
- ``TCP_NODELAY`` on accepted sockets: our C-STORE-RSPs leave at once.
- ``TCP_QUICKACK`` re-armed after every read: a sender that leaves Nagle's algorithm on (DCMTK
  and Orthanc without ``TCP_NODELAY=1``, many modalities) otherwise waits for our delayed ACK
  (~40 ms) before sending the tail of each PDU.
- The IP allow-list closes connections from other networks before any PDU is read.
- TLS (PS3.15 B.12) handshakes run in the connection's own thread, never in the accept loop,
  so a slow or hostile peer cannot stall other connections.
- PDUs are read with one ``recv_into(MSG_WAITALL)`` per PDU instead of pynetdicom's 4 KiB loop.

Slots cannot be held hostage (PS3.8 9.1.5, the ARTIM timer):

- before a connection reaches pynetdicom (and counts against ``scp.max_associations``) its
  first PDU is inspected with ``MSG_PEEK``: it must be a complete A-ASSOCIATE-RQ (PS3.8 9.3.2)
  of at most :data:`MAX_ASSOCIATE_RQ` bytes within ``scp.artim_timeout``. Over TLS the
  handshake and that PDU must both arrive within it; the PDU is read (decrypted bytes cannot
  be peeked) and handed back to pynetdicom by :class:`_ReplaySSLSocket`. Anything else — other
  PDU types, garbage, a claimed length of gigabytes, silence, a trickle — gets an A-ABORT
  (PS3.8 9.3.8) where a PDU header was readable and the connection is closed at once;
- at most ``scp.max_connections_per_peer`` connections per peer address (per receiver
  process), negotiating or associated; more are closed on accept;
- a PDU longer than the largest we accept (``scp.max_pdu_size``, or an A-ASSOCIATE-RQ's
  limit) closes the connection when its header is read, without waiting for its body.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from dicom_nodes.scp.accept import AcceptTurn

__all__ = [
    "DATA_WITHOUT_COMMAND",
    "MAX_ASSOCIATE_RQ",
    "ReceiverServer",
    "make_tls_context",
    "screen_first_pdu",
]

LOGGER = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


_PREALLOCATE_MAX = 1 << 20
"""Largest read buffer allocated before the data arrives; a larger PDU length (the peer's word)
grows the buffer as bytes come in, so a bogus length cannot make us allocate gigabytes."""


MAX_ASSOCIATE_RQ = 1 << 18
"""Largest A-ASSOCIATE-RQ accepted (256 KiB: 128 presentation contexts with every transfer
syntax we know fit in well under a tenth of it)."""

_A_ASSOCIATE_RQ = 0x01
_ASSOCIATE_RQ_FIXED = 68
"""Fixed fields of an A-ASSOCIATE-RQ after its header: version, AE titles, reserved."""
_A_ABORT = b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00"
"""A-ABORT PDU, source 2 (service provider), reason 0 (not specified) (PS3.8 9.3.8)."""


def _check_header(header: bytes) -> tuple[str | None, int]:
    """(the problem, or None; the PDU length) of the first PDU's 6-byte header (PS3.8 9.3.2)."""
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type != _A_ASSOCIATE_RQ:
        return f"first PDU type 0x{pdu_type:02X} is not an A-ASSOCIATE-RQ", length
    if length > MAX_ASSOCIATE_RQ:
        return f"A-ASSOCIATE-RQ length {length} exceeds {MAX_ASSOCIATE_RQ}", length
    if length < _ASSOCIATE_RQ_FIXED:
        return f"A-ASSOCIATE-RQ length {length} is too short", length
    return None, length


_ARTIM_EXPIRED = "no complete A-ASSOCIATE-RQ within scp.artim_timeout"


def screen_first_pdu(sock: socket.socket, timeout: float) -> str | None:
    """Wait up to *timeout* seconds for a whole A-ASSOCIATE-RQ at the head of *sock*'s input,
    without consuming it (``MSG_PEEK``). Returns None when it is there, else why not."""
    deadline = time.monotonic() + timeout
    want = 6
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return _ARTIM_EXPIRED
        if not select.select([sock], [], [], left)[0]:
            continue
        try:
            seen = sock.recv(want, socket.MSG_PEEK)
        except OSError as exc:
            return f"connection failed ({type(exc).__name__})"
        if not seen:
            return "closed by the peer"
        if want == 6 and len(seen) == 6:
            problem, length = _check_header(seen)
            if problem is not None:
                return problem
            want = 6 + length
            continue
        if len(seen) >= want:
            return None
        # Part of it is there; peeked bytes stay readable, so wait before looking again (a
        # peer that stalls runs into the deadline).
        time.sleep(min(0.05, left))


def read_first_pdu(sock: ssl.SSLSocket, deadline: float) -> tuple[str | None, bytes]:
    """:func:`screen_first_pdu` for a TLS connection, whose decrypted bytes cannot be peeked:
    read the whole A-ASSOCIATE-RQ by *deadline* (``time.monotonic()``) and return (None, its
    bytes) for :class:`_ReplaySSLSocket` to hand back, or (why not, b"")."""
    buf = bytearray()
    want = 6
    while len(buf) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            return _ARTIM_EXPIRED, b""
        sock.settimeout(left)
        try:
            chunk = sock.recv(want - len(buf))
        except TimeoutError:
            return _ARTIM_EXPIRED, b""
        except (OSError, ssl.SSLError) as exc:
            return f"connection failed ({type(exc).__name__})", b""
        if not chunk:
            return "closed by the peer", b""
        buf += chunk
        if want == 6 and len(buf) == 6:
            problem, length = _check_header(bytes(buf))
            if problem is not None:
                return problem, b""
            want = 6 + length
    return None, bytes(buf)


class _ReplaySSLSocket(ssl.SSLSocket):
    """A server-side TLS socket whose first reads return the A-ASSOCIATE-RQ the screening
    already read; ``pending()`` counts those bytes, so readiness checks (pynetdicom's and the
    accelerator's) see them."""

    _replay: bytes = b""

    def pending(self) -> int:
        return len(self._replay) + super().pending()

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if self._replay:
            data, self._replay = self._replay[:buflen], self._replay[buflen:]
            return data
        return super().recv(buflen, flags)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        if self._replay:
            room = min(nbytes or len(buffer), len(buffer))
            n = min(room, len(self._replay))
            buffer[:n] = self._replay[:n]
            self._replay = self._replay[n:]
            return n
        return super().recv_into(buffer, nbytes, flags)


class _FastAssociationSocket(AssociationSocket):
    """AssociationSocket that reads each PDU in one system call and keeps ACKs quick."""

    quickack: bool = False
    max_read: int = 0
    """Longest PDU body accepted (0: any); a longer one ends the connection at its header."""

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        assert sock is not None
        if self.max_read and nr_bytes > self.max_read:
            LOGGER.warning(
                "PDU of %d bytes exceeds the largest accepted (%d): connection closed",
                nr_bytes, self.max_read,
            )  # fmt: skip
            with contextlib.suppress(OSError):
                sock.sendall(_A_ABORT)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            return bytearray()
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


DATA_WITHOUT_COMMAND = "data-without-command"
"""The reason an association is aborted when a data set fragment arrives with no command
before it (``assoc.radiogate_violation``; audited by the EVT_ABORTED handler)."""


def _guard_data_fragments(assoc: Any) -> None:
    """Abort the association on a data set fragment that no command announced.

    A message is its command set, then — when its CommandDataSetType (0000,0800) is not 0x0101
    (PS3.7 9.3.1.1) — its data set (PS3.8 E.2: the Message Control Header's bit 0 tells the
    two apart). A P-DATA-TF whose first PDV is a data set fragment while no command waits for
    one (none received, one still incomplete, or one that announced no data set) is a protocol
    violation: the association is aborted (Evt19, A-ABORT PDU, PS3.8 9.3.8) with one PHI-free
    log line. Stock pynetdicom would decode it as a message without a command and fail with a
    traceback; the accelerator makes the same check in its decoder."""
    dimse = assoc.dimse

    def receive_primitive(primitive: Any) -> None:
        message = dimse.message
        expecting_data = message is not None and message.context_id is not None
        pdvs = primitive.presentation_data_value_list
        if pdvs and pdvs[0][1] and not pdvs[0][1][0] & 1 and not expecting_data:
            if getattr(assoc, "radiogate_violation", None) is None:
                assoc.radiogate_violation = DATA_WITHOUT_COMMAND
                LOGGER.warning(
                    "assoc=%s data set fragment without its command: association aborted",
                    getattr(assoc, "radiogate_id", "-"),
                )
            dimse.message = None
            dimse.dul.event_queue.put("Evt19")
            return
        type(dimse).receive_primitive(dimse, primitive)

    dimse.receive_primitive = receive_primitive


class _RequestHandler(RequestHandler):
    def _create_association(self) -> Any:
        assoc = super()._create_association()
        _guard_data_fragments(assoc)
        fast = _FastAssociationSocket.__new__(_FastAssociationSocket)
        fast.__dict__.update(assoc.dul.socket.__dict__)
        fast.quickack = getattr(self.server, "quickack", False)
        fast.max_read = getattr(self.server, "max_read", 0)
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
    artim_timeout: float = 10.0
    max_connections_per_peer: int = 32
    max_read: int = 0
    listener: socket.socket | None = None
    """The listening socket inherited from the supervisor (None: bind one)."""
    turn: AcceptTurn | None = None
    """This receiver's place on the shared accept board (None: take every connection)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["request_handler"] = _RequestHandler
        self._peers: dict[str, int] = {}
        self._peers_lock = threading.Lock()
        super().__init__(*args, **kwargs)
        # TLS is applied per connection in process_request_thread, not by pynetdicom's accept.
        self.tls_context = self.ssl_context
        self.ssl_context = None

    def server_bind(self) -> None:
        assert self.socket is not None
        if self.listener is not None:
            self.socket.close()
            self.socket = self.listener
            self.server_address = self.listener.getsockname()
            return
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def server_activate(self) -> None:
        if self.listener is None:
            super().server_activate()

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        if self.turn is not None and not self.turn.take_now():
            time.sleep(self.turn.pause())  # a less busy receiver may take it meanwhile
            raise BlockingIOError("left to a less busy receiver")
        client, address = self.socket.accept()  # BlockingIOError: another receiver took it
        if self.turn is not None:
            client.setblocking(True)
        # A peer that stops in the middle of a PDU is dropped after network_timeout (reads
        # only start when data is ready, so idle associations are governed by the ARTIM and
        # idle timers, not by this).
        client.settimeout(self.ae.network_timeout)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.quickack:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if not self._network_allowed(client_address):
            return False
        peer = str(client_address[0])
        with self._peers_lock:
            count = self._peers.get(peer, 0)
            if self.max_connections_per_peer and count >= self.max_connections_per_peer:
                refused = True
            else:
                refused = False
                self._peers[peer] = count + 1
                self._publish()
        if refused:
            LOGGER.warning(
                "connection from %s refused: %d connections open (scp.max_connections_per_peer)",
                peer, count,
            )  # fmt: skip
        return not refused

    def _network_allowed(self, client_address: Any) -> bool:
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
        try:
            self._process(request, client_address)
        finally:
            peer = str(client_address[0])
            with self._peers_lock:
                left = self._peers.get(peer, 1) - 1
                if left > 0:
                    self._peers[peer] = left
                else:
                    self._peers.pop(peer, None)
                self._publish()

    def _publish(self) -> None:
        """Tell the other receivers how many connections this one has (under _peers_lock)."""
        if self.turn is not None:
            self.turn.publish(sum(self._peers.values()))

    def _process(self, request: Any, client_address: Any) -> None:
        if self.tls_context is None:
            problem = screen_first_pdu(request, self.artim_timeout)
            if problem is not None:
                self._refuse(request, client_address, problem)
                return
        if self.tls_context is not None:
            # ARTIM (PS3.8 9.1.5) runs from the connection: the handshake and the whole
            # A-ASSOCIATE-RQ must arrive within it, before the connection takes a slot.
            deadline = time.monotonic() + self.artim_timeout
            try:
                request.settimeout(min(self.tls_handshake_timeout, self.artim_timeout))
                request = self.tls_context.wrap_socket(
                    request, server_side=True, do_handshake_on_connect=False
                )
                request.do_handshake()
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                LOGGER.warning("TLS handshake with %s failed: %s", client_address[0], reason)
                if self.on_refused is not None:
                    self.on_refused(str(client_address[0]), f"tls-handshake-failed:{reason}")
                self.shutdown_request(request)
                return
            problem, first = read_first_pdu(request, deadline)
            if problem is not None:
                self._refuse(request, client_address, problem)
                return
            request.settimeout(None)
            request.__class__ = _ReplaySSLSocket
            request._replay = first
        super().process_request_thread(request, client_address)

    def _refuse(self, request: Any, client_address: Any, problem: str) -> None:
        """Close a connection whose first PDU did not pass screening (logged, audited)."""
        # A port check (connect, close) is routine; anything else is worth a warning.
        level = logging.DEBUG if problem == "closed by the peer" else logging.WARNING
        LOGGER.log(level, "connection from %s closed: %s", client_address[0], problem)
        if "type" in problem or "length" in problem:
            with contextlib.suppress(OSError):
                request.sendall(_A_ABORT)
        if self.on_refused is not None and "closed by the peer" not in problem:
            self.on_refused(str(client_address[0]), "association-not-requested")
        self.shutdown_request(request)


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

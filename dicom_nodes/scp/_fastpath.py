"""Fast receive path for pynetdicom association acceptors (pinned to pynetdicom 3.0.4).

pynetdicom runs each association as two threads that poll each other: the DUL reactor
(``dul.DULServiceProvider.run_reactor``) checks its socket and its outgoing queue and sleeps
1 ms whenever both are empty, and the association reactor (``Association._run_reactor``) sleeps
1 ms before every look at its incoming DIMSE message queue. A C-STORE round trip crosses those
sleeps three times (request PDU noticed, message picked up, response sent), and at a few
milliseconds per instance that is a large part of the time. On top of that, the C-STORE
messages are encoded and decoded through pydicom datasets, which costs more CPU than the
transfer itself for small instances. This module changes how the threads wait and takes
shortcuts that produce byte-identical results:

1. **Event-driven DUL reactor** (:class:`FastDUL`): instead of ``time.sleep(0.001)`` it blocks in
   ``select()`` on the socket and on an eventfd that every primitive queued for the peer (e.g.
   our C-STORE-RSP) signals. Every step of the loop body is pynetdicom's own.
2. **Event-driven association reactor** (:class:`FastAssociation`): it blocks on a
   :class:`threading.Event` set whenever the DUL hands it something (the DIMSE message queue,
   the DUL-to-user queue for release/abort indications, the DUL thread ending, ``kill()``).
   The checks after waking are pynetdicom's, in the same order.
   Both reactors still wake at least every :data:`MAX_WAIT` seconds, so timers (ARTIM, network
   idle timeout) and flags set without a signal are seen as before, just not polled 1,000 times
   a second.
3. **P-DATA-TF straight to DIMSE** (:meth:`FastDUL._read_pdu_data`): in state Sta6 (association
   established) a P-DATA-TF PDU always leads to action DT-2 ("send P-DATA indication") and back
   to Sta6 (PS3.8 9.2.3). pynetdicom gets there by copying the PDU into ``bytes``, building PDU
   and item objects, copying every PDV value twice more and queueing an event for the state
   machine. We split the PDV items with memoryviews (no copy) and hand the P-DATA primitive to
   the DIMSE provider directly, which writes the dataset fragments to the temporary file. Any
   other PDU, any other state, or a bound ``EVT_PDU_RECV``/``EVT_DATA_RECV`` handler takes
   pynetdicom's path unchanged.
4. **Shared presentation contexts** (:func:`share_contexts`): for every association pynetdicom
   deep-copies the server's supported presentation contexts (170 SOP classes x 45 transfer
   syntaxes here: ~80 ms of CPU per association). Negotiation (``negotiate_as_acceptor``) only
   reads them, so the copies share one immutable list.
5. **C-STORE-RSP encoded directly** (:func:`encode_store_rsp`, :meth:`FastDIMSE.send_msg`):
   pynetdicom builds a pydicom Dataset for the response, encodes it twice (once to compute the
   group length) and splits it into P-DATA fragments: ~0.5 ms of CPU for 7 elements. We pack
   the same bytes with ``struct``; responses with an Error Comment or Offending Element, or a
   bound ``EVT_DIMSE_SENT`` handler, go through pynetdicom.
6. **C-STORE-RQ command and File Meta Information handled directly** (:func:`decode_store_rq`,
   :func:`store_rq_primitive`, :func:`encode_file_meta`, :meth:`FastDIMSE._decode`): a plainly
   encoded C-STORE-RQ command set is parsed with ``struct`` and its primitive filled through the
   primitive's own validating setters, instead of a pydicom decode plus
   ``message_to_primitive()`` (~0.15 ms); the temporary file starts with the Part 10 header
   that pynetdicom writes through ``create_file_meta()`` + ``write_file_meta_info()``
   (~0.4 ms), packed directly, byte for byte the same; the file is flushed once per message
   instead of once per PDV. Unusual command encodings and a bound ``EVT_DIMSE_RECV`` handler
   take pynetdicom's decoding.
7. **Next temporary file created ahead** (:meth:`FastDIMSE.prepare_spare`): creating a file in
   the spool's ``.incoming`` directory waits for the ext4 journal while another fsync commits
   (measured: 1.1 ms median under concurrent fsyncs, 0.06 ms on a quiet disk); the next
   C-STORE's file is created while the current one's handler runs, off the request path.
8. **Early write-back** (:func:`start_writeback`): every 128 KiB of a received dataset the
   kernel is asked to start writing the temporary file to disk, so that the handler's fsync
   waits for the tail only (0.5 MB file: fsync 1.2 ms -> 0.5 ms in a micro-benchmark on the
   benchmark VM).
9. **Quick thread exit** (:meth:`FastAssociation.kill`): the association thread waits for its
   DUL thread in 1 ms steps instead of 10 ms, so a released association stops counting against
   ``scp.max_associations`` sooner.

What is *not* changed: the state machine and its actions (every PDU other than P-DATA-TF in
Sta6 goes through it), ACSE negotiation, the service classes and the handlers, timers, the
durability contract (the handler still fsyncs, renames and commits before the response is
encoded), statuses.

Measured on the 2-core benchmark VM (shared with other work, so img/s varies by +-20 %;
``bench/bench_receive.py`` cases, 300 instances, 4 interleaved rounds, medians), adding the
parts one by one:

==============================  ==========  =========  ==========  =========
img/s (DCMTK storescu sender)   0.5 MB x1   10 KB x1   0.5 MB x4   10 KB x4
==============================  ==========  =========  ==========  =========
pynetdicom 3.0.4 as is             109         135        175         161
+ reactors (1, 2, 9)               138         162        193         230
+ P-DATA-TF shortcut (3)           150         142        167         238
+ RSP and File Meta (5, 6)         177         188        206         248
+ spare temporary file (7)         215         261        200         252
+ C-STORE-RQ decoding (6)          200         296        218         309
+ early write-back (8)             182         245        248         316
receiver CPU ms/instance         5.5 -> 3.8  4.5 -> 2.6  6.2 -> 4.1  5.9 -> 3.2
==============================  ==========  =========  ==========  =========

Shared contexts (4): a DCMTK ``echoscu`` run (new association, C-ECHO, release) takes 38 ms
instead of 103 ms. Early write-back (8): fsync of a 0.5 MB file 1.2 ms -> 0.5 ms.

Everything here is written against pynetdicom 3.0.4 (the version pinned in pyproject.toml);
:func:`check_version` refuses to install it on any other version, because the overridden
methods mirror that version's code.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import select
import ssl
import struct
import threading
import time
from io import BytesIO
from pathlib import Path
from tempfile import NamedTemporaryFile
from typing import TYPE_CHECKING, Any, Final, cast

import pynetdicom
from pydicom.filewriter import write_file_meta_info
from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import _MESSAGE_TYPES, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_CANCEL, C_STORE, N_EVENT_REPORT
from pynetdicom.dsutils import create_file_meta, decode
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext
from pynetdicom.utils import make_target

if TYPE_CHECKING:  # pragma: no cover
    from pynetdicom.transport import AssociationServer

__all__ = [
    "MAX_WAIT",
    "PINNED_PYNETDICOM",
    "WRITEBACK_CHUNK",
    "FastAssociation",
    "FastDIMSE",
    "FastDUL",
    "check_version",
    "decode_store_rq",
    "encode_file_meta",
    "encode_store_rsp",
    "install",
    "parse_pdv_items",
    "share_contexts",
    "start_writeback",
    "store_rq_primitive",
    "upgrade_association",
]

LOGGER = logging.getLogger(__name__)

PINNED_PYNETDICOM: Final = "3.0.4"
"""The pynetdicom version whose internals this module mirrors."""

MAX_WAIT: Final = 0.05
"""Longest a reactor blocks without a signal, seconds (timers are checked at least this often)."""

_P_DATA_TF: Final = 0x04
_PDU_TYPES: Final = frozenset(range(0x01, 0x08))
_UNPACK_PDU_HEADER: Final = struct.Struct(">BBL").unpack
_UNPACK_UINT4: Final = struct.Struct(">L").unpack_from
_SPURIOUS_WAKES: Final = 3
_PACK_IMPLICIT_HEADER: Final = struct.Struct("<HHI").pack
_PACK_US: Final = struct.Struct("<HHIH").pack
_PACK_UL: Final = struct.Struct("<HHII").pack
_PACK_EXPLICIT_SHORT: Final = struct.Struct("<HH2sH").pack
_C_STORE_RSP: Final = 0x8001
_NO_DATASET: Final = 0x0101
_PREAMBLE: Final = b"\x00" * 128 + b"DICM"
_SYNC_FILE_RANGE_WRITE: Final = 2
WRITEBACK_CHUNK = 128 * 1024
"""Bytes of a received dataset after which :func:`start_writeback` is called again."""


class IncompatiblePynetdicom(RuntimeError):
    """The installed pynetdicom is not the version the fast path was written for."""


def check_version(version: str | None = None) -> None:
    """Raise :class:`IncompatiblePynetdicom` unless *version* (default: installed) is pinned."""
    found = version if version is not None else pynetdicom.__version__
    if found != PINNED_PYNETDICOM:
        raise IncompatiblePynetdicom(
            f"dicom_nodes.scp._fastpath mirrors pynetdicom {PINNED_PYNETDICOM} internals but "
            f"pynetdicom {found} is installed; review the fast path against the new version "
            "(or pin pynetdicom back) before starting the SCP"
        )


check_version()


# --------------------------------------------------------------------------- wake-ups


class _Waker:
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


class _WakingQueue(queue.Queue[Any]):
    """A :class:`queue.Queue` that calls *notify* after every ``put``."""

    def __init__(self, notify: Any) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._notify()


def _sync_file_range() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE: Final = _sync_file_range()


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing *fd*'s dirty pages to disk now, without waiting
    (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``); a no-op elsewhere.

    Only a head start: durability still comes from the handler's ``fsync``, which then has
    less left to write. Errors are ignored for the same reason.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


# --------------------------------------------------------------------------- P-DATA-TF


def parse_pdv_items(body: memoryview) -> list[tuple[int, memoryview]]:
    """Split the variable field of a P-DATA-TF PDU into (context ID, PDV value) pairs.

    *body* is the PDU after its 6-byte header. Each Presentation Data Value Item is a 4-byte
    big-endian item length, a 1-byte presentation context ID and the value: message control
    header followed by a command or dataset fragment (PS3.8 9.3.5.1, E.2). The values are
    views into *body*, not copies. Raises :class:`ValueError` on an item that is shorter than
    two bytes or runs past the PDU.
    """
    items: list[tuple[int, memoryview]] = []
    offset = 0
    end = len(body)
    while offset < end:
        if offset + 4 > end:
            raise ValueError(f"truncated PDV item header at offset {offset}")
        (length,) = _UNPACK_UINT4(body, offset)
        if length < 2:
            raise ValueError(f"PDV item at offset {offset} has length {length} (< 2)")
        stop = offset + 4 + length
        if stop > end:
            raise ValueError(f"PDV item at offset {offset} runs past the end of the PDU")
        items.append((body[offset + 4], body[offset + 5 : stop]))
        offset = stop
    return items


# --------------------------------------------------------------------------- DUL


class FastDUL(DULServiceProvider):
    """DUL service provider whose reactor waits on its socket and an eventfd (see module doc).

    Instances are made by :func:`upgrade_association` from pynetdicom's own (class swap before
    the thread starts), so ``__init__`` is pynetdicom's.
    """

    _waker: _Waker
    _spurious: int

    def _fast_init(self) -> None:
        self._waker = _Waker()
        self._spurious = 0
        self.to_provider_queue = _WakingQueue(self._waker.wake)
        # Thread.__init__ bound pynetdicom's run_reactor as the target; bind ours.
        self._target = make_target(self.run_reactor)

    # -- signalling -------------------------------------------------------------------------

    def kill_dul(self) -> None:
        super().kill_dul()
        self._waker.wake()

    def stop_dul(self) -> bool:
        """As pynetdicom's, but wake the reactor so that it notices at once."""
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self._waker.wake()
            while self.is_alive():
                time.sleep(0.001)
            return True
        return False

    # -- reading ----------------------------------------------------------------------------

    def _fast_pdata_allowed(self) -> bool:
        handlers = self.assoc._handlers
        return (
            self.state_machine.current_state == "Sta6"
            and self.event_queue.empty()
            and not handlers.get(evt.EVT_PDU_RECV)
            and not handlers.get(evt.EVT_DATA_RECV)
        )

    def _read_pdu_data(self) -> None:
        """pynetdicom 3.0.4's ``_read_pdu_data`` plus the P-DATA-TF shortcut (DT-2 in Sta6).

        Same events for every outcome: Evt17 when the connection closes mid-PDU, Evt19 for an
        unknown PDU type or an undecodable PDU, otherwise the PDU's own event.
        """
        sock = self.socket
        assert sock is not None
        try:
            header = sock.recv(6)
        except (OSError, TimeoutError) as exc:
            LOGGER.error("Connection closed before the entire PDU was received")
            LOGGER.exception(exc)
            self.event_queue.put("Evt17")
            return
        if len(header) != 6:
            self.event_queue.put("Evt17")
            return
        pdu_type, _, pdu_length = _UNPACK_PDU_HEADER(header)
        if pdu_type not in _PDU_TYPES:
            LOGGER.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
            self.event_queue.put("Evt19")
            return
        try:
            body = sock.recv(pdu_length)
        except (OSError, TimeoutError) as exc:
            LOGGER.error("Connection closed before the entire PDU was received")
            LOGGER.exception(exc)
            self.event_queue.put("Evt17")
            return
        if len(body) != pdu_length:
            LOGGER.error(
                f"The received PDU is shorter than expected ({6 + len(body)} of "
                f"{6 + pdu_length} bytes received)"
            )
            self.event_queue.put("Evt17")
            return

        if pdu_type == _P_DATA_TF and self._fast_pdata_allowed():
            try:
                items = parse_pdv_items(memoryview(body))
            except ValueError as exc:
                LOGGER.error("Unable to decode the received PDU data")
                LOGGER.error(str(exc))
                self.event_queue.put("Evt19")
                return
            primitive = P_DATA()
            primitive._presentation_data_value_list = items  # type: ignore[assignment]
            # DT-2: P-DATA indication to the DIMSE provider; the state stays Sta6.
            self.assoc.dimse.receive_primitive(primitive)
            return

        bytestream = bytearray(header)
        bytestream += body
        try:
            pdu, event = self._decode_pdu(bytestream)
            self.event_queue.put(event)
        except Exception as exc:
            LOGGER.error("Unable to decode the received PDU data")
            LOGGER.exception(exc)
            self.event_queue.put("Evt19")
            return
        self._recv_pdu.put(pdu)

    # -- the reactor ------------------------------------------------------------------------

    def _wait(self) -> bool:
        """Block until the socket is readable, :meth:`_Waker.wake` is called or a timer is due;
        return whether the socket was reported readable."""
        timeout = MAX_WAIT
        if self.artim_timer._start_time is not None and self.artim_timer._end_time is None:
            timeout = max(0.0, min(timeout, self.artim_timer.remaining))
        if self._spurious >= _SPURIOUS_WAKES:
            # The socket keeps reporting readable but reading changes nothing (a failed
            # connection): pace the loop as pynetdicom does until that stops.
            time.sleep(0.001)
            timeout = 0.0
        fds: list[Any] = [self._waker.fd]
        sock = self.socket.socket if self.socket is not None else None
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True  # decrypted bytes waiting inside the SSL object: select() cannot see them
        if sock is not None and sock.fileno() >= 0:
            fds.append(sock)
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except (OSError, ValueError):  # the socket was closed under us
            time.sleep(0.001)
            return True
        self._waker.drain()
        return any(fd is not self._waker.fd for fd in readable)

    def run_reactor(self) -> None:
        """pynetdicom 3.0.4's DUL loop, waiting in :meth:`_wait` instead of sleeping 1 ms."""
        self._idle_timer.start()
        try:
            self._loop()
        finally:
            self._waker.close()
            dimse = self.assoc.dimse
            if isinstance(dimse, FastDIMSE):
                dimse.discard_spare()
            wake = getattr(self.assoc, "_fast_wake", None)
            if wake is not None:
                wake.set()

    def _loop(self) -> None:
        socket_ready = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            progressed = False
            try:
                if self._process_recv_primitive():
                    progressed = True
                elif self._is_transport_event():
                    self._idle_timer.restart()
                    progressed = True
            except Exception as exc:
                LOGGER.error("Exception in DUL.run(), aborting association")
                LOGGER.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                assert self.socket is not None
                self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                if progressed:
                    self._spurious = 0
                elif socket_ready:
                    self._spurious += 1  # readable, yet nothing to read
                else:
                    self._spurious = 0  # woken by a timeout or a signal
                socket_ready = self._wait()
                continue
            self._spurious = 0
            socket_ready = False
            self.state_machine.do_action(event)


# --------------------------------------------------------------------------- DIMSE


def _padded_uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def encode_store_rsp(rsp: C_STORE) -> bytes | None:
    """The Command Set of a C-STORE-RSP (PS3.7 9.3.1.2, E.1), implicit VR little endian.

    Byte for byte what pynetdicom 3.0.4 encodes for the same primitive. Returns ``None`` when
    the response carries optional fields (Offending Element, Error Comment) or values outside
    the fast path (non-ASCII UIDs); the caller then uses pynetdicom's encoder.
    """
    if rsp.OffendingElement is not None or rsp.ErrorComment is not None:
        return None
    msg_id = rsp.MessageIDBeingRespondedTo
    status = rsp.Status
    if msg_id is None or status is None:
        return None
    try:
        body = b""
        if rsp.AffectedSOPClassUID is not None:
            value = _padded_uid(str(rsp.AffectedSOPClassUID))
            body += _PACK_IMPLICIT_HEADER(0x0000, 0x0002, len(value)) + value
        body += _PACK_US(0x0000, 0x0100, 2, _C_STORE_RSP)
        body += _PACK_US(0x0000, 0x0120, 2, int(msg_id))
        body += _PACK_US(0x0000, 0x0800, 2, _NO_DATASET)
        body += _PACK_US(0x0000, 0x0900, 2, int(status))
        if rsp.AffectedSOPInstanceUID is not None:
            value = _padded_uid(str(rsp.AffectedSOPInstanceUID))
            body += _PACK_IMPLICIT_HEADER(0x0000, 0x1000, len(value)) + value
    except (UnicodeEncodeError, struct.error):
        return None
    return _PACK_UL(0x0000, 0x0000, 4, len(body)) + body


def encode_file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and File Meta Information (PS3.10 7.1) as pynetdicom 3.0.4 writes it.

    Byte for byte ``create_file_meta()`` + ``write_file_meta_info()`` (explicit VR little
    endian, pynetdicom's implementation class UID and version name) without building pydicom
    datasets. Raises :class:`UnicodeEncodeError` for non-ASCII values.
    """
    elements = b""
    for elem, value in (
        (0x0002, sop_class_uid),
        (0x0003, sop_instance_uid),
        (0x0010, transfer_syntax),
        (0x0012, str(pynetdicom.PYNETDICOM_IMPLEMENTATION_UID)),
    ):
        raw = _padded_uid(value)
        elements += _PACK_EXPLICIT_SHORT(0x0002, elem, b"UI", len(raw)) + raw
    name = pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
    if len(name) % 2:
        name += b" "
    elements += _PACK_EXPLICIT_SHORT(0x0002, 0x0013, b"SH", len(name)) + name
    version = b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"
    group = version + elements
    return _PREAMBLE + b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", len(group)) + group


_C_STORE_RQ: Final = 0x0001
_RQ_ELEMENTS: Final = {
    0x0000: "UL",  # Command Group Length
    0x0002: "UI",  # Affected SOP Class UID
    0x0100: "US",  # Command Field
    0x0110: "US",  # Message ID
    0x0700: "US",  # Priority
    0x0800: "US",  # Command Data Set Type
    0x1000: "UI",  # Affected SOP Instance UID
    0x1030: "AE",  # Move Originator Application Entity Title
    0x1031: "US",  # Move Originator Message ID
}
_RQ_KEYWORDS: Final = {
    0x0002: "AffectedSOPClassUID",
    0x0110: "MessageID",
    0x0700: "Priority",
    0x1000: "AffectedSOPInstanceUID",
    0x1030: "MoveOriginatorApplicationEntityTitle",
    0x1031: "MoveOriginatorMessageID",
}
_RQ_REQUIRED: Final = frozenset({0x0002, 0x0800, 0x1000})
_UNPACK_IMPLICIT_HEADER: Final = struct.Struct("<HHI").unpack_from
_UID_CHARS: Final = frozenset(b"0123456789.")
_AE_CHARS: Final = frozenset(range(0x20, 0x7F)) - {0x5C}


def decode_store_rq(command: bytes | bytearray) -> dict[int, int | str] | None:
    """The elements of a C-STORE-RQ Command Set (PS3.7 9.3.1.1, E.1) by element number.

    Returns ``None`` unless *command* is a plainly encoded C-STORE-RQ: only the elements of that
    message, each once, single-valued, UIDs of digits and dots (optionally padded with one NUL),
    AE titles of printable ASCII; anything else is left to pynetdicom's pydicom-based decoding,
    so that odd encodings get exactly pynetdicom's treatment (warnings, first of several values).
    """
    values: dict[int, int | str] = {}
    pos = 0
    end = len(command)
    while pos < end:
        if pos + 8 > end:
            return None
        group, elem, length = _UNPACK_IMPLICIT_HEADER(command, pos)
        pos += 8
        vr = _RQ_ELEMENTS.get(elem)
        if group != 0x0000 or vr is None or elem in values or pos + length > end:
            return None
        raw = bytes(command[pos : pos + length])
        pos += length
        if vr == "US":
            if length != 2:
                return None
            values[elem] = int.from_bytes(raw, "little")
        elif vr == "UL":
            if length != 4:
                return None
            values[elem] = int.from_bytes(raw, "little")
        elif vr == "UI":
            if raw.endswith(b"\x00"):
                raw = raw[:-1]
            if not raw or not _UID_CHARS.issuperset(raw):
                return None
            values[elem] = raw.decode("ascii")
        else:  # AE
            stripped = raw.strip(b" ")
            if not stripped or not _AE_CHARS.issuperset(raw):
                return None
            values[elem] = stripped.decode("ascii")
    if values.get(0x0100) != _C_STORE_RQ or not _RQ_REQUIRED.issubset(values):
        return None
    return values


def store_rq_primitive(values: dict[int, int | str]) -> C_STORE:
    """The C-STORE request primitive for :func:`decode_store_rq`'s *values*, set through the
    primitive's validating setters as ``DIMSEMessage.message_to_primitive`` does."""
    primitive = C_STORE()
    for elem, keyword in _RQ_KEYWORDS.items():
        if elem in values:
            setattr(primitive, keyword, values[elem])
    return primitive


class FastDIMSE(DIMSEServiceProvider):
    """DIMSE provider with direct C-STORE encodings (see module doc, items 5 to 7)."""

    _spare: Any = None
    _unsynced = 0
    _fast_values: dict[int, int | str] | None = None

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """pynetdicom's ``send_msg``, with C-STORE-RSPs encoded by :func:`encode_store_rsp`."""
        if (
            type(primitive) is C_STORE
            and primitive.MessageIDBeingRespondedTo is not None
            and not self.assoc._handlers.get(evt.EVT_DIMSE_SENT)
        ):
            command = encode_store_rsp(primitive)
            max_pdu = self.maximum_pdu_size
            if command is not None and (max_pdu == 0 or len(command) <= max_pdu - 6):
                pdata = P_DATA()
                pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
                self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)

    def _decode(self, message: DIMSEMessage, primitive: P_DATA) -> bool:
        """pynetdicom 3.0.4's ``DIMSEMessage.decode_msg`` for *message*, with the C-STORE file
        meta from :func:`encode_file_meta` and one flush per message instead of per fragment."""
        for context_id, data in primitive.presentation_data_value_list:
            control = data[0]
            if control & 1:
                message.encoded_command_set.write(data[1:])
                if not control & 2:
                    continue
                message.context_id = context_id
                fast = None
                if not self.assoc._handlers.get(evt.EVT_DIMSE_RECV):
                    fast = decode_store_rq(message.encoded_command_set.getvalue())
                if fast is not None:
                    message.__class__ = C_STORE_RQ
                    self._fast_values = fast
                    sop_class, sop_instance = fast[0x0002], fast[0x1000]
                    data_set_type = fast[0x0800]
                else:
                    command_set = decode(message.encoded_command_set, True, True)
                    message.command_set = command_set
                    message.__class__ = _MESSAGE_TYPES[command_set.CommandField][1]
                    data_set_type = command_set.CommandDataSetType
                if data_set_type == _NO_DATASET:
                    return True
                if _config.STORE_RECV_CHUNKED_DATASET and isinstance(message, C_STORE_RQ):
                    if fast is None:  # as pynetdicom: AttributeError when they are missing
                        sop_class = command_set.AffectedSOPClassUID
                        sop_instance = command_set.AffectedSOPInstanceUID
                    self._open_dataset_file(message, sop_class, sop_instance, context_id)
            else:
                sink: Any = message._data_set_file
                if sink is not None:
                    sink.write(data[1:])
                    self._unsynced += len(data) - 1
                    if self._unsynced >= WRITEBACK_CHUNK and not control & 2:
                        sink.flush()
                        start_writeback(sink.fileno())
                        self._unsynced = 0
                else:
                    assert message.data_set is not None
                    message.data_set.write(data[1:])
                if control & 2:
                    if sink is not None:
                        sink.flush()
                    return True
        return False

    def _open_dataset_file(
        self, message: DIMSEMessage, sop_class: Any, sop_instance: Any, context_id: int
    ) -> None:
        sink, self._spare = self._spare, None
        if sink is None:
            sink = NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")  # noqa: SIM115
        message._data_set_file = sink
        message._data_set_path = Path(sink.name)
        self._unsynced = 0
        transfer_syntax = self.assoc._accepted_cx[context_id].transfer_syntax[0]
        try:
            sink.write(encode_file_meta(str(sop_class), str(sop_instance), str(transfer_syntax)))
        except (UnicodeEncodeError, TypeError):
            sink.seek(0)
            sink.truncate()
            sink.write(_PREAMBLE)
            write_file_meta_info(
                sink,
                create_file_meta(
                    sop_class_uid=sop_class,
                    sop_instance_uid=sop_instance,
                    transfer_syntax=transfer_syntax,
                ),
            )

    def prepare_spare(self) -> None:
        """Create the next C-STORE's temporary file now, while the handler runs.

        Creating a file in the spool's directory right after the previous instance's fsync and
        rename waits for the file system journal (~1 ms on ext4); done here it is off the
        request/response path. A spare left over when the association ends is removed by
        :meth:`discard_spare`; one left by a crash is removed by ``Spool.prepare()``.
        """
        if self._spare is not None:
            return
        try:
            self._spare = NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")  # noqa: SIM115
        except OSError as exc:  # the C-STORE itself will report the problem
            LOGGER.debug("could not create a spare temporary file: %s", exc)

    def discard_spare(self) -> None:
        sink, self._spare = self._spare, None
        if sink is not None:
            with contextlib.suppress(OSError):
                sink.close()
                os.unlink(sink.name)

    def receive_primitive(self, primitive: P_DATA) -> None:
        """pynetdicom 3.0.4's ``receive_primitive`` using :meth:`_decode`."""
        if self.message is None:
            self.message = DIMSEMessage()
            self._fast_values = None
        if not self._decode(self.message, primitive):
            return
        evt.trigger(self.assoc, evt.EVT_DIMSE_RECV, {"message": self.message})
        context_id = self.message.context_id
        assert context_id is not None
        d_primitive: Any
        try:
            if self._fast_values is not None:
                d_primitive = store_rq_primitive(self._fast_values)
                d_primitive.DataSet = self.message.data_set
                d_primitive._context_id = context_id
                d_primitive._dataset_path = self.message._data_set_path
                d_primitive._dataset_file = self.message._data_set_file
            else:
                d_primitive = self.message.message_to_primitive()
        except Exception as exc:
            LOGGER.error("Received an invalid DIMSE message")
            LOGGER.exception(exc)
            self.dul.event_queue.put("Evt19")
            return
        if isinstance(d_primitive, C_CANCEL) and len(self.cancel_req) < 10:
            msg_id = d_primitive.MessageIDBeingRespondedTo
            assert msg_id is not None
            self.cancel_req[msg_id] = d_primitive
        elif isinstance(d_primitive, N_EVENT_REPORT) and d_primitive.is_valid_request:
            thread = threading.Thread(
                target=make_target(self.assoc._serve_request),
                args=(d_primitive, context_id),
            )
            thread.start()
        else:
            self.msg_queue.put((context_id, cast(Any, d_primitive)))
        is_store = self.message._data_set_file is not None
        self.message.encoded_command_set = BytesIO()
        self.message.data_set = BytesIO()
        self.message._data_set_file = None
        self.message._data_set_path = None
        self.message = None
        if is_store:
            self.prepare_spare()


# --------------------------------------------------------------------------- association


class FastAssociation(Association):
    """Association whose acceptor reactor waits on an event instead of sleeping 1 ms."""

    _fast_wake: threading.Event

    def kill(self) -> None:
        """pynetdicom 3.0.4's ``kill`` polling the DUL every 1 ms instead of 10 ms, so that the
        thread (which counts against ``scp.max_associations``) ends soon after a release."""
        self._fast_wake.set()
        self._reactor_checkpoint.set()
        self._kill = True
        self.is_established = False
        self._is_paused = True
        while self.dul.is_alive() and not self.dul.stop_dul():
            time.sleep(0.001)

    def _react_once(self) -> tuple[bool, bool]:
        """One pass of pynetdicom 3.0.4's reactor body after waking (shared by acceptor and
        requestor): serve a queued DIMSE request, then handle release, abort, a dead DUL and
        the network timeout. Returns (served a request, the reactor must stop)."""
        served = False
        context_id, msg = self.dimse.get_msg(block=False)
        if msg:
            assert context_id is not None
            self._serve_request(msg, context_id)
            served = True

        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            LOGGER.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return served, True

        if self.acse.is_aborted():
            log_msg = "Association Aborted"
            if self.acse.is_aborted("a-p-abort"):
                log_msg += " (A-P-ABORT)"
            LOGGER.info(log_msg)
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return served, True

        if not self.dul.is_alive():
            self.kill()
            return served, True

        if self.dul.idle_timer_expired():
            LOGGER.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return served, True
        return served, False

    def _run_reactor(self) -> None:
        """pynetdicom 3.0.4's ``Association._run_reactor``, event-driven."""
        self._is_paused = False
        wake = self._fast_wake
        idle = False
        while not self._kill:
            if idle:
                wake.wait(MAX_WAIT)
            wake.clear()
            idle = True

            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            served, stop = self._react_once()
            if stop:
                return
            if served:
                idle = False


def upgrade_association(assoc: Association) -> FastAssociation:
    """Switch a new, not yet started acceptor association to the fast reactors (in place)."""
    if assoc.is_alive() or assoc.dul.is_alive():
        raise RuntimeError("only an association that has not started can be upgraded")
    wake = threading.Event()
    assoc.__class__ = FastAssociation
    fast = assoc
    assert isinstance(fast, FastAssociation)
    fast._fast_wake = wake
    dimse = assoc.dimse
    dimse.__class__ = FastDIMSE
    dimse.msg_queue = _WakingQueue(wake.set)
    dul = assoc.dul
    dul.__class__ = FastDUL
    assert isinstance(dul, FastDUL)
    dul._fast_init()
    dul.to_user_queue = _WakingQueue(wake.set)
    return fast


# --------------------------------------------------------------------------- contexts


class _SharedPresentationContext(PresentationContext):
    """A supported presentation context that association set-up shares instead of copying."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedPresentationContext:
        return self

    def __copy__(self) -> _SharedPresentationContext:
        return self


def share_contexts(contexts: list[PresentationContext]) -> None:
    """Make the deep copy that pynetdicom takes per association of *contexts* free.

    Safe because the acceptor only reads its supported contexts: ``negotiate_as_acceptor``
    builds new :class:`PresentationContext` objects for its result, and nothing of ours
    changes them after the server starts.
    """
    for cx in contexts:
        cx.__class__ = _SharedPresentationContext


# --------------------------------------------------------------------------- install


def install(server: AssociationServer) -> None:
    """Use the fast path for every association *server* accepts from now on."""
    check_version()
    share_contexts(server.contexts)
    base: Any = server.RequestHandlerClass

    def _create_association(self: Any) -> Association:
        return upgrade_association(base._create_association(self))

    server.RequestHandlerClass = type(
        f"Fast{base.__name__}", (base,), {"_create_association": _create_association}
    )

"""The DUL service provider of accelerated associations (parts ``reactors`` and ``p-data``).

Methods that replace pynetdicom's mirror pynetdicom 3.0.4's code line for line apart from the
change described; a part that is not selected leaves pynetdicom's method in charge.
"""

from __future__ import annotations

import logging
import queue
import select
import ssl
import struct
import time
from typing import Any, Final, cast

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.utils import make_target

from dicom_nodes.accelerator._parts import Part
from dicom_nodes.accelerator._wake import MAX_WAIT, Waker, WakingQueue
from dicom_nodes.dimse.codec import encode_p_data_tf, parse_pdv_items

__all__ = ["WRITE_CHUNK", "FastDUL", "RequestorDUL"]

LOGGER = logging.getLogger(__name__)

_P_DATA_TF: Final = 0x04
_PDU_TYPES: Final = frozenset(range(0x01, 0x08))
_UNPACK_PDU_HEADER: Final = struct.Struct(">BBL").unpack
_SPURIOUS_WAKES: Final = 3
WRITE_CHUNK: Final = 256 * 1024
"""P-DATA-TF PDUs a requestor writes with one ``send`` at most (bytes, roughly)."""
_SENT_EVENTS: Final = (evt.EVT_PDU_SENT, evt.EVT_DATA_SENT, evt.EVT_FSM_TRANSITION)


class FastDUL(DULServiceProvider):
    """DUL service provider whose reactor waits on its socket and an eventfd (``reactors``) and
    that hands P-DATA-TF in Sta6 straight to the DIMSE provider (``p-data``).

    Instances are made from pynetdicom's own by a class swap before the thread starts
    (:func:`dicom_nodes.accelerator._association.upgrade_association`), so ``__init__`` is
    pynetdicom's.
    """

    _waker: Waker
    _spurious: int
    _parts: frozenset[Part]

    def _fast_init(self, parts: frozenset[Part]) -> None:
        self._parts = parts
        self._waker = Waker()
        self._spurious = 0
        self.to_provider_queue = WakingQueue(self._waker.wake)
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
        if Part.P_DATA not in self._parts:
            super()._read_pdu_data()
            return
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
        """Block until the socket is readable, :meth:`Waker.wake` is called or a timer is due;
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
        """pynetdicom 3.0.4's DUL loop, waiting in :meth:`_wait` instead of sleeping 1 ms
        (``reactors``; otherwise pynetdicom's own loop)."""
        try:
            if Part.REACTORS in self._parts:
                self._idle_timer.start()
                self._loop()
            else:
                super().run_reactor()
        finally:
            self._waker.close()
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


class RequestorDUL(FastDUL):
    """:class:`FastDUL` that also writes queued P-DATA requests directly (``p-data``).

    A 0.5 MB dataset leaves as ~32 P-DATA requests (the peer's maximum PDU length). pynetdicom
    turns each into an event for the state machine, action DT-1 (Sta6 + Evt9 -> send a
    P-DATA-TF PDU -> Sta6, PS3.8 9.2.3), PDU and item objects, copies and events for the
    logging handlers. In Sta6 with no event waiting and no handler bound to
    ``EVT_PDU_SENT``/``EVT_DATA_SENT``/``EVT_FSM_TRANSITION``, every P-DATA request queued is
    encoded by :func:`~dicom_nodes.dimse.codec.encode_p_data_tf` and the PDUs are written
    together; anything else goes through the state machine unchanged.
    """

    def _fast_send_allowed(self) -> bool:
        handlers = self.assoc._handlers
        return (
            Part.P_DATA in self._parts
            and self.state_machine.current_state == "Sta6"
            and self.event_queue.empty()
            and self.socket is not None
            and not any(handlers.get(event) for event in _SENT_EVENTS)
        )

    def _process_recv_primitive(self) -> bool:
        pending = self.to_provider_queue.queue
        if not pending or type(pending[0]) is not P_DATA or not self._fast_send_allowed():
            return super()._process_recv_primitive()
        pdus: list[bytes] = []
        size = 0
        while size < WRITE_CHUNK:
            try:
                head = pending[0]
            except IndexError:
                break
            if type(head) is not P_DATA:
                break
            # DT-1: P-DATA request from the local user -> P-DATA-TF to the peer; stays Sta6.
            primitive = self.to_provider_queue.get(False)
            pdus.append(encode_p_data_tf(cast(P_DATA, primitive)))
            size += len(pdus[-1])
        assert self.socket is not None
        self.socket.send(b"".join(pdus))  # a failure queues Evt17, as pynetdicom's _send
        if pending:
            # Left for the next pass: their wake-ups were consumed, and no event is queued
            # that would keep the loop from waiting.
            self._waker.wake()
        return True

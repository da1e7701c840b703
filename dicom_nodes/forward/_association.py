"""Opening SCU associations with pynetdicom 3.0.4: socket options and the response-race guard.

Both are installed by one ``EVT_CONN_OPEN`` handler (:func:`_on_conn_open`). pynetdicom fires
that event in the DUL thread right after ``connect()`` succeeds (and after the TLS wrap), before
the A-ASSOCIATE-RQ is written — the only point where the socket exists and no PDU has been
exchanged yet, and it needs no subclass of pynetdicom's socket or association classes.

TCP_NODELAY
    pynetdicom never sets it. Without it a small PDU written after another one that is not yet
    acknowledged (the C-STORE-RQ command after the previous dataset's tail, an N-ACTION) waits
    for the peer's delayed ACK: ~40 ms per message on Linux.

The response race (why :class:`_ResponseSafeQueue` exists)
    An association has two threads that read the DIMSE message queue
    (``assoc.dimse.msg_queue``): the association *reactor*, which polls it with
    ``get_msg(block=False)`` to serve requests from the peer, and the caller of
    ``send_c_store()`` (or any ``send_*``), which blocks in ``get_msg(block=True)`` for its
    response. ``send_c_store()`` keeps them apart with a pause handshake: it clears
    ``_reactor_checkpoint`` and spins until the reactor says ``_is_paused``; when the response
    has arrived it sets the checkpoint again. The reactor's loop is::

        _is_paused = True; _reactor_checkpoint.wait(); _is_paused = False; get_msg(False)

    so ``_is_paused`` is still True *after* ``wait()`` was released and before the reactor has
    run its next line. Back-to-back, the next ``send_c_store()`` clears the checkpoint, sees the
    stale ``_is_paused == True``, sends its C-STORE-RQ and waits; the reactor, already past
    ``wait()`` (``Event.wait`` returns True once notified even if the flag is cleared again),
    then polls the queue. Against a fast peer the C-STORE-RSP is already there: the reactor
    takes it, logs "Received unexpected C-STORE service message" and drops it; the sender waits
    the whole DIMSE timeout and aborts. The window is a few microseconds of thread scheduling,
    so it shows up after hundreds to thousands of instances.

    The guard removes the cause instead of narrowing the window: the association's message
    queue is replaced by one whose *non-blocking* ``get`` (the reactor's only way in) never
    hands out anything but a service *request*; a response stays at the head of the queue for
    the blocking getter, the ``send_*`` call that is waiting for it. Both paths take the queue's
    own mutex, so there is no interleaving left in which the reactor can see a response. The
    reactor only serves requests from the peer, which is all it is for on an SCU association
    (N-EVENT-REPORTs bypass the queue anyway, see ``DIMSEServiceProvider.receive_primitive``).
    The cost is nothing per message — unlike waiting for the reactor to cycle before each
    C-STORE, which costs up to its 1 ms poll sleep.

    A response that arrives after its DIMSE timeout cannot be matched to a later request: a
    timeout aborts the association (pynetdicom's ``_handle_no_response``), so the queue dies
    with it, and the instance is reported retryable.

Event-driven reactors (:class:`_FastAE`, :class:`FastRequestorAssociation`)
    pynetdicom's two threads per association poll: the DUL reactor sleeps 1 ms whenever its
    socket and outgoing queue are empty, the association reactor sleeps 1 ms before each look
    at its message queue, and every ``send_*`` spins in 0.1 ms sleeps until the reactor is
    paused. A C-STORE round trip crossed those sleeps, and the wake-ups cost a large share of
    the worker's CPU. The receiving side's fast path (:mod:`dicom_nodes.scp._fastpath`) is
    reused: :class:`~dicom_nodes.scp._fastpath.FastDUL` blocks in ``select()`` on the socket
    and an eventfd that every queued primitive signals, and the association reactor blocks on
    an event set whenever the DUL hands it something. The requestor's reactor differs from
    the acceptor's in one point: it reports itself *paused* (``_is_paused``) while it waits
    for that event, because it does not touch the message queue or ACSE while waiting, so a
    ``send_*`` call finds it paused at once instead of spinning until its next wake-up. The
    response-race guard is unchanged: the message queue is a :class:`_ResponseSafeQueue` that
    also wakes the reactor. Associations with TLS keep pynetdicom's polling reactors (bytes
    already decrypted inside the SSL object do not make the socket readable for ``select()``).

P-DATA-TF written directly (:class:`_FastRequestorDUL`)
    A 0.5 MB dataset leaves as ~32 P-DATA requests (the peer's maximum PDU length). pynetdicom
    turns each into an event for the state machine, action DT-1 (Sta6 + Evt9 -> send a
    P-DATA-TF PDU -> Sta6, PS3.8 9.2.3), PDU and item objects, copies and events for the
    logging handlers. In Sta6 with no event waiting and no handler bound to
    ``EVT_PDU_SENT``/``EVT_DATA_SENT``/``EVT_FSM_TRANSITION``, every P-DATA request queued is
    encoded with ``struct`` (byte for byte :class:`pynetdicom.pdu.P_DATA_TF`) and the PDUs
    are written together; anything else goes through the state machine unchanged.
    pynetdicom's standard logging handlers for PDUs and DIMSE messages (they only write DEBUG
    records) are unbound when the ``pynetdicom`` logger does not log DEBUG, as the SCP does
    process-wide with ``LOG_HANDLER_LEVEL = "none"``; that also lets the received responses
    take the fast path's P-DATA shortcut.
"""

from __future__ import annotations

import logging
import queue
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext, build_context

from dicom_nodes.forward.settings import DimseSettings
from dicom_nodes.scp._fastpath import MAX_WAIT, FastAssociation, FastDUL, upgrade_association

__all__ = [
    "EXPLICIT_VR_LE",
    "IMPLICIT_VR_LE",
    "MAX_CONTEXTS",
    "AssociationFailed",
    "FastRequestorAssociation",
    "StoreContexts",
    "open_association",
    "store_contexts",
]

LOGGER = logging.getLogger(__name__)

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
FALLBACK_SYNTAXES = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)
"""What a peer must accept for every storage SOP class it supports (PS3.5 10.1: Implicit VR
Little Endian is the default; Explicit VR Little Endian is what practically everyone takes)."""

VERIFICATION = "1.2.840.10008.1.1"
"""Verification SOP Class (PS3.4 A.4)."""

MAX_CONTEXTS = 128
"""Presentation Context IDs are odd integers 1-255 (PS3.8 9.3.2.2)."""


class AssociationFailed(Exception):
    """No association: connection refused or lost, rejected, or aborted during negotiation."""


class _ResponseSafeQueue(queue.Queue[tuple[Any, Any]]):
    """DIMSE message queue whose non-blocking ``get`` only ever returns service requests.

    See the module docstring ("The response race"). *notify*, if given, is called after every
    ``put`` (it wakes the event-driven association reactor)."""

    def __init__(self, notify: Any = None) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item: tuple[Any, Any], block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        if self._notify is not None:
            self._notify()

    def get(self, block: bool = True, timeout: float | None = None) -> tuple[Any, Any]:
        if block:
            return super().get(block, timeout)
        with self.not_empty:
            if not self._qsize():
                raise queue.Empty
            _context_id, message = self.queue[0]
            if not getattr(message, "is_valid_request", False):
                raise queue.Empty  # a response (or junk): left for the waiting send_*()
            item = self._get()
            self.not_full.notify()
            return item


def _on_conn_open(event: Any) -> None:
    """EVT_CONN_OPEN: TCP_NODELAY on the new socket, race-safe message queue (module doc)."""
    event.assoc.radiogate_connected = True
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # not a TCP socket (tests with socketpairs)
            LOGGER.debug("TCP_NODELAY not set: %s", exc)
    dimse = event.assoc.dimse
    if not isinstance(dimse.msg_queue, _ResponseSafeQueue):
        safe = _ResponseSafeQueue(getattr(dimse.msg_queue, "_notify", None))
        old = dimse.msg_queue
        with old.mutex:
            safe.queue.extend(old.queue)
            dimse.msg_queue = safe


class FastRequestorAssociation(FastAssociation):
    """Requestor association with event-driven reactors (module doc, "Event-driven reactors").

    Made by :class:`_FastAE` from pynetdicom's own before any thread starts."""

    def _run_reactor(self) -> None:
        """pynetdicom 3.0.4's ``Association._run_reactor``, event-driven, paused while idle."""
        wake = self._fast_wake
        idle = False
        while not self._kill:
            # Paused while waiting: nothing below runs before the checkpoint is passed again.
            self._is_paused = True
            if idle:
                wake.wait(MAX_WAIT)
            wake.clear()
            idle = True

            self._reactor_checkpoint.wait()
            self._is_paused = False

            served, stop = self._react_once()
            if stop:
                return
            if served:
                idle = False


_PACK_PDU_HEADER = struct.Struct(">BBL").pack
_PACK_PDV_HEADER = struct.Struct(">LB").pack
_P_DATA_TF = 0x04
_WRITE_CHUNK = 256 * 1024
"""P-DATA-TF PDUs written by one ``send`` at most (bytes, roughly)."""
_SENT_EVENTS = (evt.EVT_PDU_SENT, evt.EVT_DATA_SENT, evt.EVT_FSM_TRANSITION)
_LOG_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)


def encode_p_data_tf(primitive: P_DATA) -> bytes:
    """The P-DATA-TF PDU (PS3.8 9.3.5) for *primitive*, as pynetdicom 3.0.4 encodes it."""
    parts: list[bytes] = []
    length = 0
    for context_id, value in primitive.presentation_data_value_list:
        parts.append(_PACK_PDV_HEADER(len(value) + 1, context_id))
        parts.append(value)
        length += 5 + len(value)
    return _PACK_PDU_HEADER(_P_DATA_TF, 0, length) + b"".join(parts)


class _FastRequestorDUL(FastDUL):
    """:class:`~dicom_nodes.scp._fastpath.FastDUL` writing queued P-DATA requests directly
    (module doc, "P-DATA-TF written directly")."""

    def _fast_send_allowed(self) -> bool:
        handlers = self.assoc._handlers
        return (
            self.state_machine.current_state == "Sta6"
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
        while size < _WRITE_CHUNK:
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


def upgrade_requestor(assoc: Association) -> FastRequestorAssociation:
    """Switch a new requestor association (no thread started) to the event-driven reactors."""
    fast = upgrade_association(assoc)
    fast.__class__ = FastRequestorAssociation
    assert isinstance(fast, FastRequestorAssociation)
    fast.dimse.msg_queue = _ResponseSafeQueue(fast._fast_wake.set)
    fast.dul.__class__ = _FastRequestorDUL
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
        for event, handler in _LOG_HANDLERS:
            bound: list[Any] = list(cast(Any, fast._handlers.get(event)) or [])
            if any(h is handler for h, _args in bound):
                fast.unbind(event, handler)
    return fast


class _FastAE(AE):
    """AE whose requested associations use :func:`upgrade_requestor` (not with TLS)."""

    def _create_socket(self, assoc: Association, address: Any, tls_args: Any) -> Any:
        if tls_args is None:
            upgrade_requestor(assoc)
        return super()._create_socket(assoc, address, tls_args)


@dataclass(frozen=True)
class StoreContexts:
    """The presentation contexts to propose for a set of (SOP class, transfer syntax) pairs.

    For each pair, one context with only the file's own syntax — so that the peer's answer
    says whether *that* syntax is accepted — and for each SOP class one fallback context
    offering Explicit then Implicit VR Little Endian, used only when the own syntax is refused.
    """

    contexts: tuple[PresentationContext, ...]

    @property
    def pairs(self) -> frozenset[tuple[str, str]]:
        return frozenset(
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in self.contexts
            if len(cx.transfer_syntax) == 1
        )


def store_contexts(pairs: Iterable[tuple[str, str]]) -> list[StoreContexts]:
    """Group (SOP class, transfer syntax) *pairs* into context sets of at most 128 each."""
    by_class: dict[str, list[str]] = {}
    for sop_class, ts in pairs:
        syntaxes = by_class.setdefault(sop_class, [])
        if ts not in syntaxes:
            syntaxes.append(ts)
    groups: list[StoreContexts] = []
    current: list[PresentationContext] = []
    for sop_class, syntaxes in by_class.items():
        needed = [build_context(sop_class, [ts]) for ts in syntaxes]
        needed.append(build_context(sop_class, list(FALLBACK_SYNTAXES)))
        if len(needed) > MAX_CONTEXTS:
            raise ValueError(f"too many transfer syntaxes for one SOP class: {len(syntaxes)}")
        if len(current) + len(needed) > MAX_CONTEXTS:
            groups.append(StoreContexts(tuple(current)))
            current = []
        current.extend(needed)
    if current:
        groups.append(StoreContexts(tuple(current)))
    return groups


def open_association(
    settings: DimseSettings,
    contexts: Sequence[PresentationContext],
    evt_handlers: Sequence[Any] = (),
    ext_neg: Sequence[Any] = (),
) -> Any:
    """Request an association with the destination; return it established.

    Raises :class:`AssociationFailed` (retryable: the caller decides how often to retry)."""
    ae = _FastAE(ae_title=settings.calling_ae)
    ae.acse_timeout = settings.timeout
    ae.dimse_timeout = settings.timeout
    ae.network_timeout = settings.timeout
    ae.connection_timeout = settings.connect_timeout
    requested = [
        build_context(str(cx.abstract_syntax), [str(ts) for ts in cx.transfer_syntax])
        for cx in contexts
    ]
    tls_args = None
    if settings.tls.enabled:
        tls_args = (settings.tls.client_context(), settings.tls.server_name or settings.host)
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, _on_conn_open), *evt_handlers]
    assoc = ae.associate(
        settings.host,
        settings.port,
        contexts=requested or [build_context(VERIFICATION)],
        ae_title=settings.ae_title,
        max_pdu=settings.max_pdu,
        ext_neg=list(ext_neg) or None,
        tls_args=tls_args,
        evt_handlers=handlers,
    )
    if assoc.is_established:
        return assoc
    if not getattr(assoc, "radiogate_connected", False):
        raise AssociationFailed(
            f"cannot connect to {settings.name} ({settings.host}:{settings.port})"
        )
    if assoc.is_rejected:
        raise AssociationFailed(f"association rejected by {settings.name}")
    if assoc.is_aborted:
        raise AssociationFailed(f"association aborted by {settings.name} during negotiation")
    raise AssociationFailed(f"no association with {settings.name} (ACSE timeout)")

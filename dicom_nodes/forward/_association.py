"""Opening SCU associations: socket options, the response-race guard, the accelerator switch.

Socket options and the guard are installed by one ``EVT_CONN_OPEN`` handler
(:func:`_on_conn_open`). pynetdicom fires that event in the DUL thread right after ``connect()``
succeeds (and after the TLS wrap), before the A-ASSOCIATE-RQ is written — the only point where
the socket exists and no PDU has been exchanged yet, and it needs no subclass of pynetdicom's
socket or association classes.

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

Accelerated associations (``forward.accelerate``)
    With the accelerator enabled (:func:`use_accelerator`, called once at start by
    ``radiogate worker``), associations are requested through
    :func:`dicom_nodes.accelerator.requestor_ae`: event-driven reactors instead of 1 ms polling
    and P-DATA-TF written directly (see that package for what each part does and what it was
    measured to gain). The accelerator's message queue wakes its reactor; the guard above
    keeps that wake-up (``_notify``) when it replaces the queue. Otherwise, and for TLS
    associations, pynetdicom runs as it is.
"""

from __future__ import annotations

import logging
import queue
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pynetdicom import evt
from pynetdicom.presentation import PresentationContext, build_context

from dicom_nodes import accelerator
from dicom_nodes.forward.settings import DimseSettings

__all__ = [
    "EXPLICIT_VR_LE",
    "IMPLICIT_VR_LE",
    "MAX_CONTEXTS",
    "AssociationFailed",
    "StoreContexts",
    "accelerated",
    "open_association",
    "store_contexts",
    "use_accelerator",
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


class _Accelerator:
    """This process's choice for ``forward.accelerate`` (None: not made yet, ``auto``)."""

    enabled: bool | None = None


def use_accelerator(mode: str) -> bool:
    """Decide once, at start, whether associations requested from now on are accelerated
    (``forward.accelerate``: ``auto``, ``on`` or ``off``; see
    :func:`dicom_nodes.accelerator.enabled`). Raises
    :class:`~dicom_nodes.accelerator.AcceleratorUnavailable` for ``on`` with an unverified
    pynetdicom version."""
    _Accelerator.enabled = accelerator.enabled(mode, "forward.accelerate")
    LOGGER.info(
        "forward.accelerate = %s: %s",
        mode,
        "accelerated associations" if _Accelerator.enabled else "stock pynetdicom",
    )
    return _Accelerator.enabled


def accelerated() -> bool:
    """Whether associations requested from now on are accelerated (``auto`` until decided)."""
    if _Accelerator.enabled is None:
        _Accelerator.enabled = accelerator.enabled("auto", "forward.accelerate")
    return _Accelerator.enabled


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


def store_contexts(
    pairs: Iterable[tuple[str, str]], room: int = MAX_CONTEXTS
) -> list[StoreContexts]:
    """Group (SOP class, transfer syntax) *pairs* into context sets of at most *room* each
    (128 at most, PS3.8 9.3.2.2: odd context IDs 1-255)."""
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
        if len(needed) > room:
            raise ValueError(f"too many transfer syntaxes for one SOP class: {len(syntaxes)}")
        if len(current) + len(needed) > room:
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
    ae = accelerator.requestor_ae(settings.calling_ae, accelerated())
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
    started = time.monotonic()
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
    raise AssociationFailed(
        describe_failure(
            settings,
            connected=bool(getattr(assoc, "radiogate_connected", False)),
            rejected=bool(assoc.is_rejected),
            aborted_by_peer=bool(assoc.is_aborted) and not getattr(assoc, "_sent_abort", False),
            elapsed=time.monotonic() - started,
        )
    )


class FailureKind(StrEnum):
    """Why no association was established (PS3.8 7.1 A-ASSOCIATE; 9.1.4 ARTIM)."""

    CONNECT_TIMEOUT = "connect-timeout"
    """The TCP connection was not made within ``connect_timeout`` (no answer to our SYN)."""
    CONNECT_FAILED = "connect-failed"
    """The TCP connection was refused or the address unreachable."""
    REJECTED = "rejected"
    """The peer answered A-ASSOCIATE-RJ."""
    ABORTED_BY_PEER = "aborted-by-peer"
    """The peer answered the request with A-ABORT (or its connection dropped)."""
    NO_ANSWER = "no-answer"
    """Connected, but no answer to the A-ASSOCIATE-RQ within the ACSE timeout: we aborted."""


def classify_failure(
    *, connected: bool, rejected: bool, aborted_by_peer: bool, elapsed: float,
    connect_timeout: float,
) -> FailureKind:  # fmt: skip
    """Classify a failed association request from what the requestor saw.

    pynetdicom keeps the socket error of a failed connect to itself, so a connect that failed
    only after (nearly) the whole ``connect_timeout`` timed out, while one that failed sooner
    was refused or unreachable. When our own ACSE timer expires pynetdicom aborts the
    association itself (``is_aborted`` set, and ``_sent_abort``): that is no answer from the
    peer, not an abort by it."""
    if not connected:
        if elapsed >= 0.9 * connect_timeout:
            return FailureKind.CONNECT_TIMEOUT
        return FailureKind.CONNECT_FAILED
    if rejected:
        return FailureKind.REJECTED
    if aborted_by_peer:
        return FailureKind.ABORTED_BY_PEER
    return FailureKind.NO_ANSWER


def describe_failure(
    settings: DimseSettings, *, connected: bool, rejected: bool, aborted_by_peer: bool,
    elapsed: float,
) -> str:  # fmt: skip
    """The log and audit text of a failed association request (no PHI: names and ports)."""
    kind = classify_failure(
        connected=connected, rejected=rejected, aborted_by_peer=aborted_by_peer,
        elapsed=elapsed, connect_timeout=settings.connect_timeout,
    )  # fmt: skip
    where = f"{settings.name} ({settings.host}:{settings.port})"
    return {
        FailureKind.CONNECT_TIMEOUT: (
            f"connect timeout to destination {where} after {settings.connect_timeout:g} s"
        ),
        FailureKind.CONNECT_FAILED: f"cannot connect to destination {where} (refused or "
        "unreachable)",
        FailureKind.REJECTED: f"association rejected by {settings.name}",
        FailureKind.ABORTED_BY_PEER: f"association aborted by {settings.name} during negotiation",
        FailureKind.NO_ANSWER: (
            f"no answer from destination {where} to the association request within "
            f"{settings.timeout:g} s (ACSE timeout)"
        ),
    }[kind]

"""Accelerated associations: the class swaps that put :mod:`._dul` and :mod:`._dimse` to work.

pynetdicom creates an association, its DUL and DIMSE providers in ``__init__``; before any of
their threads starts, :func:`upgrade_association` changes their classes in place (and the
queues that wake the event-driven reactors). An acceptor's associations are upgraded through the
server's request handler (:func:`install`), a requestor's through
:class:`AcceleratedAE`'s ``_create_socket`` (called by ``AE.associate`` before it connects).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import AE, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from dicom_nodes.accelerator._dimse import DIMSE_PARTS, FastDIMSE
from dicom_nodes.accelerator._dul import FastDUL, RequestorDUL
from dicom_nodes.accelerator._parts import Part
from dicom_nodes.accelerator._wake import MAX_WAIT, WakingQueue

if TYPE_CHECKING:  # pragma: no cover
    from pynetdicom.transport import AssociationServer

__all__ = [
    "AcceleratedAE",
    "FastAssociation",
    "FastRequestorAssociation",
    "install",
    "share_contexts",
    "upgrade_association",
]

LOGGER = logging.getLogger(__name__)

_DUL_PARTS = frozenset({Part.REACTORS, Part.P_DATA})
"""Parts that need :class:`FastDUL`."""
_LOG_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)


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


class FastRequestorAssociation(FastAssociation):
    """Requestor association with the event-driven reactor.

    It differs from the acceptor's in one point: it reports itself *paused* (``_is_paused``)
    while it waits for its event, because it does not touch the message queue or ACSE while
    waiting, so a ``send_*`` call (which spins in 0.1 ms sleeps until the reactor is paused)
    finds it paused at once instead of spinning until its next wake-up.
    """

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


_REQUESTOR_DIMSE_PARTS = frozenset({Part.RESPONSES})
"""The :data:`DIMSE_PARTS` that apply to a requestor (it sends no C-STORE-RSP, and receives no
C-STORE-RQ: it proposes no SCP role)."""


def upgrade_association(
    assoc: Association, parts: Collection[Part], *, requestor: bool = False
) -> Association:
    """Switch a new, not yet started association to the selected *parts* (in place)."""
    if assoc.is_alive() or assoc.dul.is_alive():
        raise RuntimeError("only an association that has not started can be upgraded")
    selected = frozenset(parts)
    if Part.REACTORS in selected:
        wake = threading.Event()
        assoc.__class__ = FastRequestorAssociation if requestor else FastAssociation
        cast(FastAssociation, assoc)._fast_wake = wake
        assoc.dimse.msg_queue = WakingQueue(wake.set)
        assoc.dul.to_user_queue = WakingQueue(wake.set)
    if selected & _DUL_PARTS:
        dul = assoc.dul
        dul.__class__ = RequestorDUL if requestor else FastDUL
        cast(FastDUL, dul)._fast_init(selected)
    if selected & (_REQUESTOR_DIMSE_PARTS if requestor else DIMSE_PARTS):
        assoc.dimse.__class__ = FastDIMSE
        cast(FastDIMSE, assoc.dimse)._parts = selected
    # pynetdicom's logging handlers for PDUs and DIMSE messages only write DEBUG records;
    # bound, they keep every PDU on the state machine's path.
    if (
        requestor
        and Part.P_DATA in selected
        and not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG)
    ):
        for event, handler in _LOG_HANDLERS:
            bound: list[Any] = list(cast(Any, assoc._handlers.get(event)) or [])
            if any(h is handler for h, _args in bound):
                assoc.unbind(event, handler)
    return assoc


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


def install(server: AssociationServer, parts: Collection[Part]) -> None:
    """Use the selected *parts* for every association *server* accepts from now on."""
    selected = frozenset(parts)
    if Part.CONTEXTS in selected:
        share_contexts(server.contexts)
    if not selected - {Part.CONTEXTS}:
        return
    base: Any = server.RequestHandlerClass

    def _create_association(self: Any) -> Association:
        return upgrade_association(base._create_association(self), selected)

    server.RequestHandlerClass = type(
        f"Accelerated{base.__name__}", (base,), {"_create_association": _create_association}
    )


class AcceleratedAE(AE):
    """AE whose requested associations use the selected parts (not with TLS: bytes already
    decrypted inside the SSL object do not make the socket readable for ``select()``)."""

    accelerator_parts: frozenset[Part] = frozenset()

    def _create_socket(self, assoc: Association, address: Any, tls_args: Any) -> Any:
        if tls_args is None:
            upgrade_association(assoc, self.accelerator_parts, requestor=True)
        return super()._create_socket(assoc, address, tls_args)

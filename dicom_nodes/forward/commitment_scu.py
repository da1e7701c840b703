"""Confirmation by Storage Commitment as the SCU (PS3.4 J.3, Push Model).

:func:`request_commitment` is what a DIMSE destination's ``confirm`` does with
``confirm = "commitment"``:

1. Instances this destination already committed in an earlier transaction of ours count at
   once (:meth:`~dicom_nodes.forward.commitment.CommitmentSink.committed_earlier`: a report
   that came after its requester stopped waiting is not wasted).
2. The others are asked for in N-ACTION-RQs (Action Type 1, at most :data:`CHUNK` instances
   per Transaction UID); each transaction is recorded in the sink *before* its N-ACTION is
   sent, so the report can be matched to this destination whichever process receives it.
3. The N-EVENT-REPORTs arrive at our SCP on the peer's own association (or on the requesting
   association while it is open, hence the handler bound to it too); the sink wakes us.
   No report within ``commitment_timeout`` seconds raises
   :class:`~dicom_nodes.forward.model.ConfirmationUnavailable` — the caller decides between a
   C-FIND fallback (``commitment-or-query``) and a later retry (``commitment``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from pynetdicom import evt
from pynetdicom.presentation import build_context

from dicom_nodes.forward._association import AssociationFailed, open_association
from dicom_nodes.forward.commitment import (
    ACTION_REQUEST_COMMITMENT,
    STORAGE_COMMITMENT_PUSH_MODEL,
    STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
    CommitmentSink,
    build_commitment_request,
    handle_commitment_report,
)
from dicom_nodes.forward.model import ConfirmationUnavailable, InstanceRef
from dicom_nodes.forward.settings import DimseSettings

__all__ = ["CHUNK", "request_commitment"]

LOGGER = logging.getLogger(__name__)

CHUNK = 1000
"""Instances per storage commitment transaction."""


def request_commitment(
    settings: DimseSettings, sink: CommitmentSink, instances: Sequence[InstanceRef]
) -> dict[str, bool]:
    """SOP Instance UID -> committed, for every one of *instances* (module docstring).

    Raises :class:`ConfirmationUnavailable` when the peer cannot be asked, refuses, or does
    not report in time, and when the sink cannot record or read."""
    pairs = [(i.sop_class_uid, i.sop_instance_uid) for i in instances]
    confirmed = {uid: False for _cls, uid in pairs}
    try:
        earlier = sink.committed_earlier(settings.name, settings.ae_title, pairs)
    except Exception as exc:
        raise ConfirmationUnavailable(f"commitment records unavailable: {exc}") from exc
    confirmed.update(dict.fromkeys(earlier & confirmed.keys(), True))
    todo = [pair for pair in pairs if not confirmed[pair[1]]]
    transactions: list[str] = []
    if todo:
        transactions = _ask(settings, sink, todo)
        deadline = time.monotonic() + settings.commitment_timeout
        for tx in transactions:
            report = sink.wait(tx, max(0.0, deadline - time.monotonic()))
            if report is None:
                raise ConfirmationUnavailable(
                    f"no storage commitment report from {settings.name} within "
                    f"{settings.commitment_timeout:g} s (transaction {tx})"
                )
            for uid in report.committed:
                if uid in confirmed:
                    confirmed[uid] = True
    LOGGER.info(
        "%s: %d of %d instances confirmed by storage commitment "
        "(%d by earlier reports; transactions %s)",
        settings.name,
        sum(confirmed.values()),
        len(confirmed),
        len(earlier & confirmed.keys()),
        ", ".join(transactions) or "none",
    )
    return confirmed


def _ask(settings: DimseSettings, sink: CommitmentSink, todo: list[tuple[str, str]]) -> list[str]:
    """Record and send one N-ACTION per chunk; the Transaction UIDs, in order."""
    requests = [build_commitment_request(todo[n : n + CHUNK]) for n in range(0, len(todo), CHUNK)]
    try:
        for request, start in zip(requests, range(0, len(todo), CHUNK), strict=True):
            sink.expect(
                str(request.TransactionUID),
                settings.name,
                settings.ae_title,
                settings.calling_ae,
                todo[start : start + CHUNK],
            )
    except Exception as exc:
        raise ConfirmationUnavailable(f"commitment request not recorded: {exc}") from exc
    handlers: list[Any] = [(evt.EVT_N_EVENT_REPORT, handle_commitment_report, [sink])]
    try:
        assoc = open_association(settings, [build_context(STORAGE_COMMITMENT_PUSH_MODEL)], handlers)
    except AssociationFailed as exc:
        raise ConfirmationUnavailable(str(exc)) from exc
    try:
        if not assoc.accepted_contexts:
            raise ConfirmationUnavailable(f"{settings.name} does not support storage commitment")
        for request in requests:
            status, _reply = assoc.send_n_action(
                request,
                ACTION_REQUEST_COMMITMENT,
                STORAGE_COMMITMENT_PUSH_MODEL,
                STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
            )
            if "Status" not in status:
                raise ConfirmationUnavailable("no N-ACTION response")
            if int(status.Status) != 0:
                raise ConfirmationUnavailable(
                    f"storage commitment refused: status 0x{int(status.Status):04X}"
                )
    finally:
        if assoc.is_established:
            assoc.release()
    return [str(r.TransactionUID) for r in requests]

"""Storage Commitment Push Model (PS3.4 Annex J): the request, the report handler, the sink.

Flow (PS3.4 J.3)::

    Radiogate (SCU)                              destination (SCP)
      N-ACTION-RQ  Action Type 1, Transaction UID,
                   Referenced SOP Sequence  ---->
                                           <----  N-ACTION-RSP (request accepted, not done)
                                                  ... checks what it holds ...
      [our SCP]                            <----  N-EVENT-REPORT-RQ on a NEW association to the
                                                  AE it knows us as (Orthanc: DicomModalities),
                                                  Event Type 1 (all committed) or 2 (failures),
                                                  Transaction UID, Referenced SOP Sequence,
                                                  Failed SOP Sequence with Failure Reason
      N-EVENT-REPORT-RSP 0x0000  ---->

The report can also come on the requesting association while it is open; both paths end in
:func:`handle_commitment_report`, a thin pynetdicom handler bound with its sink::

    (evt.EVT_N_EVENT_REPORT, handle_commitment_report, [sink])

so any Radiogate SCP (the receiver included) can host it next to its C-STORE handler, with
the supported context from :func:`commitment_scp_context`. The sink is a Protocol: the
in-memory one here serves a process that waits for its own transactions; a database-backed
one lets any worker pick up a report that another process received.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.presentation import PresentationContext, build_context

from dicom_nodes.forward.status import CommitmentFailureReason

__all__ = [
    "STORAGE_COMMITMENT_PUSH_MODEL",
    "STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE",
    "CommitmentReport",
    "CommitmentSink",
    "EventType",
    "InMemoryCommitmentSink",
    "build_commitment_request",
    "commitment_scp_context",
    "handle_commitment_report",
    "parse_commitment_report",
]

LOGGER = logging.getLogger(__name__)

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
"""Storage Commitment Push Model SOP Class (PS3.4 J.3)."""
STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
"""Well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.1)."""
ACTION_REQUEST_COMMITMENT = 1
"""Action Type ID "Request Storage Commitment" (PS3.4 Table J.3-1)."""


class EventType:
    """Event Type IDs of the N-EVENT-REPORT (PS3.4 Table J.3-2)."""

    SUCCESSFUL = 1
    """Storage Commitment Request Successful: every referenced instance is committed."""
    FAILURES_EXIST = 2
    """Storage Commitment Request Complete - Failures Exist."""


N_EVENT_REPORT_SUCCESS = 0x0000
N_EVENT_REPORT_PROCESSING_FAILURE = 0x0110
"""Processing failure (PS3.7 C.4.1): returned when the report cannot be understood or kept,
so that the SCP retries it (PS3.4 J.3.3.1 leaves retrying to the SCP)."""


@dataclass(frozen=True)
class CommitmentReport:
    """The result of one storage commitment transaction."""

    transaction_uid: str
    committed: frozenset[str]
    failed: dict[str, int] = field(default_factory=dict)
    """SOP Instance UID -> Failure Reason (0008,1197), see :class:`CommitmentFailureReason`."""
    received_at: float = field(default_factory=time.time)


class CommitmentSink(Protocol):
    """Where commitment reports go, and where a waiting requester finds them."""

    def put(self, report: CommitmentReport) -> None:
        """Keep *report*; must be durable before returning if the sink claims durability."""
        ...

    def wait(self, transaction_uid: str, timeout: float) -> CommitmentReport | None:
        """The report for *transaction_uid*, waiting up to *timeout* s; ``None`` if none."""
        ...


class InMemoryCommitmentSink:
    """A process-local sink: reports kept in memory for ``keep_seconds`` (thread-safe)."""

    def __init__(self, keep_seconds: float = 3600.0) -> None:
        self._reports: dict[str, CommitmentReport] = {}
        self._cond = threading.Condition()
        self._keep = keep_seconds

    def put(self, report: CommitmentReport) -> None:
        with self._cond:
            cutoff = time.time() - self._keep
            for uid in [u for u, r in self._reports.items() if r.received_at < cutoff]:
                del self._reports[uid]
            self._reports[report.transaction_uid] = report
            self._cond.notify_all()

    def wait(self, transaction_uid: str, timeout: float) -> CommitmentReport | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while transaction_uid not in self._reports:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._reports.pop(transaction_uid)


def build_commitment_request(
    instances: Sequence[tuple[str, str]], transaction_uid: str | None = None
) -> Dataset:
    """The N-ACTION-RQ Action Information (PS3.4 Table J.3-1) for (SOP class, SOP instance)
    *instances*, with a new Transaction UID (0008,1195) unless one is given."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid or generate_uid()
    items = []
    for sop_class, sop_instance in instances:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def parse_commitment_report(event_type: int, info: Dataset) -> CommitmentReport:
    """Read an N-EVENT-REPORT's Event Information (PS3.4 Table J.3-2). Raises ValueError."""
    if event_type not in (EventType.SUCCESSFUL, EventType.FAILURES_EXIST):
        raise ValueError(f"not a storage commitment event type: {event_type}")
    transaction_uid = str(info.get("TransactionUID", "") or "")
    if not transaction_uid:
        raise ValueError("Transaction UID (0008,1195) missing")
    committed = frozenset(
        str(item.ReferencedSOPInstanceUID)
        for item in info.get("ReferencedSOPSequence", [])
        if item.get("ReferencedSOPInstanceUID")
    )
    failed = {
        str(item.ReferencedSOPInstanceUID): int(
            item.get("FailureReason", CommitmentFailureReason.PROCESSING_FAILURE)
        )
        for item in info.get("FailedSOPSequence", [])
        if item.get("ReferencedSOPInstanceUID")
    }
    return CommitmentReport(transaction_uid, committed - failed.keys(), failed)


def handle_commitment_report(event: Any, sink: CommitmentSink) -> tuple[int, Dataset | None]:
    """pynetdicom ``EVT_N_EVENT_REPORT`` handler for Storage Commitment (PS3.4 J.3.3).

    Bind it as ``(evt.EVT_N_EVENT_REPORT, handle_commitment_report, [sink])``. Answers 0x0000
    once the report is in *sink*, 0x0110 (so the SCP may send it again) otherwise."""
    request = event.request
    if str(request.AffectedSOPClassUID) != STORAGE_COMMITMENT_PUSH_MODEL:
        LOGGER.warning("N-EVENT-REPORT for unexpected SOP class %s", request.AffectedSOPClassUID)
        return N_EVENT_REPORT_PROCESSING_FAILURE, None
    try:
        report = parse_commitment_report(int(request.EventTypeID), event.event_information)
        sink.put(report)
    except Exception:
        LOGGER.exception("storage commitment report not accepted")
        return N_EVENT_REPORT_PROCESSING_FAILURE, None
    LOGGER.info(
        "storage commitment report %s from %s: %d committed, %d failed",
        report.transaction_uid,
        event.assoc.requestor.ae_title,
        len(report.committed),
        len(report.failed),
    )
    return N_EVENT_REPORT_SUCCESS, None


def commitment_scp_context() -> PresentationContext:
    """The context an SCP must support to receive reports on a new association: the
    destination requests it and takes the SCP role (PS3.4 J.3.3, PS3.7 D.3.3.4)."""
    cx = build_context(STORAGE_COMMITMENT_PUSH_MODEL)
    cx.scu_role = True
    cx.scp_role = True
    return cx

"""Storage Commitment Push Model (PS3.4 Annex J): the request, the report handler, the sink.

Flow (PS3.4 J.3)::

    Radiogate worker (SCU)                       destination (SCP)
      sink.expect(transaction)      (recorded before anything is sent)
      N-ACTION-RQ  Action Type 1, Transaction UID,
                   Referenced SOP Sequence  ---->
                                           <----  N-ACTION-RSP (request accepted, not done)
                                                  ... checks what it holds ...
      [radiogate scp]                      <----  N-EVENT-REPORT-RQ on a NEW association to the
                                                  AE it knows us as (Orthanc: DicomModalities),
                                                  proposing the SCP role for itself (PS3.7
                                                  D.3.3.4); Event Type 1 (all committed) or 2
                                                  (failures), Transaction UID, Referenced SOP
                                                  Sequence, Failed SOP Sequence with reasons
      sink.put(report)
      N-EVENT-REPORT-RSP 0x0000  ---->
      sink.wait(transaction)        (the worker wakes up)

The report can also come on the requesting association while it is open; both paths end in
:func:`handle_commitment_report`, a thin pynetdicom handler bound with its sink::

    (evt.EVT_N_EVENT_REPORT, handle_commitment_report, [sink])

next to the context from :func:`commitment_scp_context`. The sink is a Protocol with two
implementations: :class:`InMemoryCommitmentSink` (one process that waits for its own
transactions, e.g. :class:`~dicom_nodes.forward.listener.CommitmentListener`) and
:class:`~dicom_nodes.db.commitment.PostgresCommitmentSink` (the SCP records, any worker reads).

Reports nobody waits for any more (the worker gave up waiting, or restarted) stay usable:
:meth:`CommitmentSink.committed_earlier` applies **the reuse rule** — an instance counts as
committed by a destination when the most recent result recorded for it, among transactions
Radiogate asked that destination (same name and AE title) for, within the sink's retention

* says committed, under the SOP class we ask about (a later failure outweighs an earlier
  success, and the other way round), and
* belongs to a report that its requester never received (:meth:`CommitmentSink.wait` marks
  a report taken when it returns it): a report that was waited for has done its job, so a
  confirmation that failed afterwards asks the destination again rather than trusting an
  answer given for an earlier round.

Exceptions become N-EVENT-REPORT-RSP statuses in one place, :func:`report_status_for`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.presentation import PresentationContext, build_context

from dicom_nodes.errors import PermanentError, RetryableError
from dicom_nodes.forward.status import CommitmentFailureReason

__all__ = [
    "STORAGE_COMMITMENT_PUSH_MODEL",
    "STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE",
    "CommitmentReport",
    "CommitmentSink",
    "EventReportStatus",
    "EventType",
    "InMemoryCommitmentSink",
    "InvalidReport",
    "ReportProblem",
    "build_commitment_request",
    "commitment_scp_context",
    "handle_commitment_report",
    "latest_committed",
    "parse_commitment_report",
    "report_status_for",
]

LOGGER = logging.getLogger(__name__)

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
"""Storage Commitment Push Model SOP Class (PS3.4 J.3)."""
STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
"""Well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.1)."""
ACTION_REQUEST_COMMITMENT = 1
"""Action Type ID "Request Storage Commitment" (PS3.4 Table J.3-1)."""


class EventType(IntEnum):
    """Event Type IDs of the N-EVENT-REPORT (PS3.4 Table J.3-2)."""

    SUCCESSFUL = 1
    """Storage Commitment Request Successful: every referenced instance is committed."""
    FAILURES_EXIST = 2
    """Storage Commitment Request Complete - Failures Exist."""


class EventReportStatus(IntEnum):
    """N-EVENT-REPORT-RSP statuses of our report handler (PS3.7 10.1.1.1.8, Annex C)."""

    SUCCESS = 0x0000
    """Success (PS3.7 C.1.1): the report is recorded; the peer may forget it."""
    INVALID_ARGUMENT_VALUE = 0x0115
    """Invalid argument value (PS3.7 C.5.10): Event Information without a Transaction UID or
    without any referenced instance (PS3.4 Table J.3-2 requires them)."""
    NO_SUCH_EVENT_TYPE = 0x0113
    """No such Event Type (PS3.7 C.5.18): neither 1 nor 2 (PS3.4 Table J.3-2)."""
    NO_SUCH_SOP_CLASS = 0x0118
    """No such SOP Class (PS3.7 C.5.20): not the Storage Commitment Push Model."""
    RESOURCE_LIMITATION = 0x0213
    """Resource limitation (PS3.7 C.5.22): understood but not recorded (database unavailable);
    the peer may send the report again (PS3.4 J.3.3.1 leaves retries to the SCP)."""
    PROCESSING_FAILURE = 0x0110
    """Processing failure (PS3.7 C.5.21): anything unexpected; nothing was recorded."""


class ReportProblem(Enum):
    """Why a report was refused."""

    NOT_STORAGE_COMMITMENT = "not-storage-commitment"
    UNKNOWN_EVENT_TYPE = "unknown-event-type"
    MALFORMED = "malformed"


class InvalidReport(PermanentError):
    """An N-EVENT-REPORT that is not a storage commitment report we can understand."""

    def __init__(self, problem: ReportProblem, detail: str) -> None:
        super().__init__(f"{problem.value}: {detail}")
        self.problem = problem


_DEFAULT_REASON = CommitmentFailureReason.PROCESSING_FAILURE
"""Failure Reason assumed when a failed item has none (it is Type 1, PS3.4 Table J.3-2)."""

_PROBLEM_STATUS = {
    ReportProblem.NOT_STORAGE_COMMITMENT: EventReportStatus.NO_SUCH_SOP_CLASS,
    ReportProblem.UNKNOWN_EVENT_TYPE: EventReportStatus.NO_SUCH_EVENT_TYPE,
    ReportProblem.MALFORMED: EventReportStatus.INVALID_ARGUMENT_VALUE,
}


def report_status_for(exc: BaseException) -> EventReportStatus:
    """The N-EVENT-REPORT-RSP status for a failure; the one place that decides it."""
    if isinstance(exc, InvalidReport):
        return _PROBLEM_STATUS[exc.problem]
    if isinstance(exc, RetryableError):
        return EventReportStatus.RESOURCE_LIMITATION
    return EventReportStatus.PROCESSING_FAILURE


@dataclass(frozen=True)
class CommitmentReport:
    """The result of one storage commitment transaction, as one peer reported it."""

    transaction_uid: str
    committed: frozenset[str]
    failed: Mapping[str, int] = field(default_factory=dict)
    """SOP Instance UID -> Failure Reason (0008,1197), see :class:`CommitmentFailureReason`."""
    sop_classes: Mapping[str, str] = field(default_factory=dict)
    """SOP Instance UID -> Referenced SOP Class UID as reported (committed and failed)."""
    event_type: int = EventType.SUCCESSFUL
    reporter_ae: str = ""
    """Calling AE title of the association the report came on."""
    reporter_address: str = ""
    received_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not self.transaction_uid:
            raise ValueError("a commitment report needs a Transaction UID")
        both = self.committed & self.failed.keys()
        if both:
            raise ValueError(f"instances both committed and failed: {sorted(both)}")
        object.__setattr__(self, "committed", frozenset(self.committed))


def latest_committed(
    results: Sequence[tuple[float, str, str, bool, bool]], instances: Sequence[tuple[str, str]]
) -> set[str]:
    """The reuse rule (module docstring) over *results* ``(received_at, SOP Instance UID,
    SOP class as reported, committed, taken by its requester)`` of one destination: which of
    *instances* ``(SOP class, SOP Instance UID)`` have a most recent result that is committed,
    under their class ('' reported: any class), and was never taken."""
    latest: dict[str, tuple[float, str, bool, bool]] = {}
    for received_at, uid, sop_class, committed, taken in results:
        if uid not in latest or received_at >= latest[uid][0]:
            latest[uid] = (received_at, sop_class, committed, taken)
    found = set()
    for sop_class, uid in instances:
        hit = latest.get(uid)
        if hit is not None and hit[2] and not hit[3] and hit[1] in ("", sop_class):
            found.add(uid)
    return found


class CommitmentSink(Protocol):
    """Where commitment reports go, and where a requester records and finds its transactions."""

    def put(self, report: CommitmentReport) -> None:
        """Keep *report* (durably, if the sink claims durability) before returning; raise
        :class:`~dicom_nodes.errors.RetryableError` when it cannot be kept now."""
        ...

    def expect(
        self,
        transaction_uid: str,
        destination: str,
        peer_ae: str,
        calling_ae: str,
        instances: Sequence[tuple[str, str]],
    ) -> None:
        """Record that *destination* (AE *peer_ae*) is asked to commit *instances*
        ``(SOP class, SOP instance)`` under *transaction_uid*, reporting to *calling_ae*.
        Called before the N-ACTION is sent; raises when it cannot be recorded."""
        ...

    def wait(self, transaction_uid: str, timeout: float) -> CommitmentReport | None:
        """The report for *transaction_uid*, waiting up to *timeout* s; ``None`` if none.
        A report returned is marked taken (the reuse rule no longer counts it)."""
        ...

    def committed_earlier(
        self, destination: str, peer_ae: str, instances: Sequence[tuple[str, str]]
    ) -> set[str]:
        """SOP Instance UIDs of *instances* that *destination* already committed in a
        transaction we asked for (the reuse rule of the module docstring)."""
        ...


@dataclass(frozen=True)
class _Request:
    destination: str
    peer_ae: str


class InMemoryCommitmentSink:
    """A process-local sink: requests and reports kept in memory for ``keep_seconds``
    (thread-safe)."""

    def __init__(self, keep_seconds: float = 3600.0) -> None:
        self._reports: dict[str, CommitmentReport] = {}
        self._requests: dict[str, tuple[float, _Request]] = {}
        self._taken: set[str] = set()
        self._cond = threading.Condition()
        self._keep = keep_seconds

    def _expire(self) -> None:
        cutoff = time.time() - self._keep
        for uid in [u for u, r in self._reports.items() if r.received_at < cutoff]:
            del self._reports[uid]
        for uid in [u for u, (at, _r) in self._requests.items() if at < cutoff]:
            del self._requests[uid]
        self._taken &= self._reports.keys()

    def put(self, report: CommitmentReport) -> None:
        with self._cond:
            self._expire()
            self._reports[report.transaction_uid] = report
            self._cond.notify_all()

    def expect(
        self,
        transaction_uid: str,
        destination: str,
        peer_ae: str,
        calling_ae: str,
        instances: Sequence[tuple[str, str]],
    ) -> None:
        with self._cond:
            self._expire()
            self._requests[transaction_uid] = (time.time(), _Request(destination, peer_ae))

    def wait(self, transaction_uid: str, timeout: float) -> CommitmentReport | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while transaction_uid not in self._reports:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            self._taken.add(transaction_uid)
            return self._reports[transaction_uid]

    def committed_earlier(
        self, destination: str, peer_ae: str, instances: Sequence[tuple[str, str]]
    ) -> set[str]:
        wanted = _Request(destination, peer_ae)
        with self._cond:
            ours = [
                (r, tx in self._taken)
                for tx, r in self._reports.items()
                if tx in self._requests and self._requests[tx][1] == wanted
            ]
        results = [
            (r.received_at, uid, r.sop_classes.get(uid, ""), uid in r.committed, taken)
            for r, taken in ours
            for uid in (*r.committed, *r.failed)
        ]
        return latest_committed(results, instances)


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


def parse_commitment_report(
    event_type: int, info: Dataset, reporter_ae: str = "", reporter_address: str = ""
) -> CommitmentReport:
    """Read an N-EVENT-REPORT's Event Information (PS3.4 Table J.3-2).

    Raises :class:`InvalidReport`."""
    if event_type not in (EventType.SUCCESSFUL, EventType.FAILURES_EXIST):
        raise InvalidReport(ReportProblem.UNKNOWN_EVENT_TYPE, f"event type {event_type}")
    transaction_uid = str(info.get("TransactionUID", "") or "")
    if not transaction_uid:
        raise InvalidReport(ReportProblem.MALFORMED, "Transaction UID (0008,1195) missing")
    classes: dict[str, str] = {}
    committed: set[str] = set()
    failed: dict[str, int] = {}
    for item in info.get("ReferencedSOPSequence", None) or []:
        if item.get("ReferencedSOPInstanceUID"):
            uid = str(item.ReferencedSOPInstanceUID)
            committed.add(uid)
            classes[uid] = str(item.get("ReferencedSOPClassUID", "") or "")
    for item in info.get("FailedSOPSequence", None) or []:
        if item.get("ReferencedSOPInstanceUID"):
            uid = str(item.ReferencedSOPInstanceUID)
            reason = item.get("FailureReason", None)
            failed[uid] = int(reason if reason is not None else _DEFAULT_REASON)
            classes[uid] = str(item.get("ReferencedSOPClassUID", "") or "")
    if not committed and not failed:
        raise InvalidReport(ReportProblem.MALFORMED, "no referenced instance")
    return CommitmentReport(
        transaction_uid,
        frozenset(committed - failed.keys()),
        failed,
        classes,
        event_type=event_type,
        reporter_ae=reporter_ae,
        reporter_address=reporter_address,
    )


def _peer(assoc: Any) -> Any:
    """The other end of *assoc* (the report's sender), whichever side requested it."""
    return assoc.acceptor if assoc.is_requestor else assoc.requestor


def handle_commitment_report(event: Any, sink: CommitmentSink) -> tuple[int, Dataset | None]:
    """pynetdicom ``EVT_N_EVENT_REPORT`` handler for Storage Commitment (PS3.4 J.3.3).

    Bind it as ``(evt.EVT_N_EVENT_REPORT, handle_commitment_report, [sink])``. Answers 0x0000
    once the report is in *sink*, a failure status from :func:`report_status_for` otherwise
    (the peer may send it again). Logs UIDs and AE titles only."""
    request = event.request
    peer = _peer(event.assoc)
    reporter = str(peer.ae_title).strip()
    try:
        if str(request.AffectedSOPClassUID) != STORAGE_COMMITMENT_PUSH_MODEL:
            raise InvalidReport(
                ReportProblem.NOT_STORAGE_COMMITMENT, f"SOP class {request.AffectedSOPClassUID}"
            )
        report = parse_commitment_report(
            int(request.EventTypeID), event.event_information, reporter, str(peer.address)
        )
        sink.put(report)
    except Exception as exc:
        status = report_status_for(exc)
        log = LOGGER.exception if status is EventReportStatus.PROCESSING_FAILURE else LOGGER.warning
        log("storage commitment report from %s refused with 0x%04X: %s", reporter, status, exc)
        return int(status), None
    LOGGER.info(
        "storage commitment report %s from %s: %d committed, %d failed",
        report.transaction_uid,
        reporter,
        len(report.committed),
        len(report.failed),
    )
    return int(EventReportStatus.SUCCESS), None


def commitment_scp_context() -> PresentationContext:
    """The context a Radiogate SCP supports to receive reports on a new association.

    The destination requests the association and proposes the **SCP** role for itself (SCP/SCU
    Role Selection, PS3.7 D.3.3.4; Orthanc proposes SCU-role 0, SCP-role 1), because in the
    Push Model the requestor of the association is the Storage Commitment SCP that sends the
    N-EVENT-REPORT (PS3.4 J.3.3). In pynetdicom's acceptor terms: accept the requestor's SCP
    role (``scp_role``), refuse its SCU role (``scu_role``) — we never act as the Storage
    Commitment SCP, so a peer that only wants to send us N-ACTIONs has the context rejected.
    A peer that proposes no role selection gets the default roles and its reports are still
    accepted."""
    cx = build_context(STORAGE_COMMITMENT_PUSH_MODEL)
    cx.scu_role = False
    cx.scp_role = True
    return cx

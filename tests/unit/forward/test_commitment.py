"""Storage commitment request/report (PS3.4 J.3), the report handler, the in-memory sink and
the role negotiation of the context our SCPs accept reports on (PS3.7 D.3.3.4)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import build_context, negotiate_as_acceptor

from dicom_nodes.errors import DatabaseUnavailable
from dicom_nodes.forward import (
    CommitmentReport,
    EventReportStatus,
    InMemoryCommitmentSink,
    handle_commitment_report,
)
from dicom_nodes.forward.commitment import (
    STORAGE_COMMITMENT_PUSH_MODEL,
    EventType,
    InvalidReport,
    build_commitment_request,
    commitment_scp_context,
    latest_committed,
    parse_commitment_report,
)
from tests.support.commitment import CT, MR, check_sink_contract


def _report_info(tx: str, ok: list[str], failed: dict[str, int]) -> Dataset:
    info = Dataset()
    info.TransactionUID = tx
    refs = []
    for uid in ok:
        item = Dataset()
        item.ReferencedSOPClassUID = CT
        item.ReferencedSOPInstanceUID = uid
        refs.append(item)
    fails = []
    for uid, reason in failed.items():
        item = Dataset()
        item.ReferencedSOPClassUID = CT
        item.ReferencedSOPInstanceUID = uid
        item.FailureReason = reason
        fails.append(item)
    if refs:
        info.ReferencedSOPSequence = refs
    if fails:
        info.FailedSOPSequence = fails
    return info


def _event(
    event_type: int,
    info: Dataset,
    sop_class: str = STORAGE_COMMITMENT_PUSH_MODEL,
    we_requested: bool = False,
) -> object:
    request = SimpleNamespace(AffectedSOPClassUID=sop_class, EventTypeID=event_type)
    peer = SimpleNamespace(ae_title="ORTHANC", address="10.0.0.7")
    us = SimpleNamespace(ae_title="RADIOGATE", address="10.0.0.1")
    assoc = SimpleNamespace(
        is_requestor=we_requested,
        requestor=us if we_requested else peer,
        acceptor=peer if we_requested else us,
    )
    return SimpleNamespace(request=request, event_information=info, assoc=assoc)


class _FailingSink(InMemoryCommitmentSink):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def put(self, report: CommitmentReport) -> None:
        raise self.exc


def test_request_lists_every_instance_with_a_new_transaction() -> None:
    a = build_commitment_request([(CT, "1.2.3"), (CT, "1.2.4")])
    b = build_commitment_request([(CT, "1.2.3")])
    assert a.TransactionUID != b.TransactionUID
    assert [
        (i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in a.ReferencedSOPSequence
    ] == [(CT, "1.2.3"), (CT, "1.2.4")]


def test_report_parsing() -> None:
    report = parse_commitment_report(
        EventType.FAILURES_EXIST, _report_info("1.9", ["1.2.3"], {"1.2.4": 0x0112}), "ORTHANC"
    )
    assert report.transaction_uid == "1.9"
    assert report.committed == {"1.2.3"}
    assert report.failed == {"1.2.4": 0x0112}
    assert report.sop_classes == {"1.2.3": CT, "1.2.4": CT}
    assert report.event_type == EventType.FAILURES_EXIST
    assert report.reporter_ae == "ORTHANC"


def test_an_instance_listed_as_failed_is_not_committed() -> None:
    info = _report_info("1.9", ["1.2.3", "1.2.4"], {"1.2.4": 0x0119})
    report = parse_commitment_report(EventType.FAILURES_EXIST, info)
    assert report.committed == {"1.2.3"} and report.failed == {"1.2.4": 0x0119}


def test_report_validates_itself() -> None:
    with pytest.raises(ValueError, match="Transaction UID"):
        CommitmentReport("", frozenset({"1.2.3"}))
    with pytest.raises(ValueError, match="both committed and failed"):
        CommitmentReport("1.9", frozenset({"1.2.3"}), {"1.2.3": 0x0110})


def test_handler_puts_the_report_into_the_sink() -> None:
    sink = InMemoryCommitmentSink()
    status, reply = handle_commitment_report(
        _event(EventType.SUCCESSFUL, _report_info("1.9.1", ["1.2.3"], {})), sink
    )
    assert (status, reply) == (EventReportStatus.SUCCESS, None)
    report = sink.wait("1.9.1", timeout=0)
    assert report is not None and report.committed == {"1.2.3"}
    assert (report.reporter_ae, report.reporter_address) == ("ORTHANC", "10.0.0.7")


def test_failed_sop_report_is_recorded_as_not_committed() -> None:
    sink = InMemoryCommitmentSink()
    sink.expect("1.9.2", "archive", "ORTHANC", "RADIOGATE", [(CT, "1.2.3"), (CT, "1.2.4")])
    info = _report_info("1.9.2", ["1.2.3"], {"1.2.4": 0x0112})
    assert handle_commitment_report(_event(EventType.FAILURES_EXIST, info), sink)[0] == 0
    asked = [(CT, "1.2.3"), (CT, "1.2.4")]
    assert sink.committed_earlier("archive", "ORTHANC", asked) == {"1.2.3"}
    report = sink.wait("1.9.2", timeout=0)
    assert report is not None and report.failed == {"1.2.4": 0x0112}


def test_report_on_our_own_association_names_the_peer() -> None:
    sink = InMemoryCommitmentSink()
    event = _event(EventType.SUCCESSFUL, _report_info("1.9.3", ["1.2.3"], {}), we_requested=True)
    assert handle_commitment_report(event, sink)[0] == 0
    report = sink.wait("1.9.3", timeout=0)
    assert report is not None and report.reporter_ae == "ORTHANC"


def test_handler_statuses_for_what_it_cannot_understand_or_keep() -> None:
    sink = InMemoryCommitmentSink()
    cases = [
        (_event(1, Dataset()), EventReportStatus.INVALID_ARGUMENT_VALUE),  # no Transaction UID
        (_event(1, _report_info("1.9", [], {})), EventReportStatus.INVALID_ARGUMENT_VALUE),
        (_event(7, _report_info("1.9", ["1.2.3"], {})), EventReportStatus.NO_SUCH_EVENT_TYPE),
        (
            _event(1, _report_info("1.9", ["1.2.3"], {}), sop_class="1.2.3"),
            EventReportStatus.NO_SUCH_SOP_CLASS,
        ),
    ]
    for event, expected in cases:
        assert handle_commitment_report(event, sink)[0] == expected
    assert sink.wait("1.9", timeout=0) is None  # nothing kept
    good = _event(1, _report_info("1.9", ["1.2.3"], {}))
    down = _FailingSink(DatabaseUnavailable("no database connection available"))
    assert handle_commitment_report(good, down)[0] == EventReportStatus.RESOURCE_LIMITATION
    broken = _FailingSink(RuntimeError("bug"))
    assert handle_commitment_report(good, broken)[0] == EventReportStatus.PROCESSING_FAILURE


def test_statuses_are_failures_of_ps3_7_annex_c() -> None:
    """0000 success; everything else in the 01xx/02xx failure range (PS3.7 Annex C)."""
    assert int(EventReportStatus.SUCCESS) == 0
    for status in EventReportStatus:
        if status is not EventReportStatus.SUCCESS:
            assert 0x0100 <= status <= 0x02FF and status not in (0x0107, 0x0116), status
    assert len(set(EventReportStatus)) == len(EventReportStatus.__members__)


def test_parse_refuses_reports_without_instances() -> None:
    with pytest.raises(InvalidReport):
        parse_commitment_report(1, _report_info("1.9", [], {}))


def test_in_memory_sink_contract() -> None:
    check_sink_contract(InMemoryCommitmentSink())


def test_in_memory_sink_forgets_after_keep_seconds() -> None:
    sink = InMemoryCommitmentSink(keep_seconds=0.0)
    sink.expect("1.5", "archive", "ORTHANC", "RADIOGATE", [(CT, "1.2.3")])
    sink.put(CommitmentReport("1.5", frozenset({"1.2.3"}), received_at=0.0))
    sink.put(CommitmentReport("1.6", frozenset({"1.2.4"})))  # expires the first
    assert sink.wait("1.5", timeout=0) is None


def test_latest_committed_rule() -> None:
    rows: Sequence[tuple[float, str, str, bool, bool]] = [
        (1.0, "1.1", CT, True, False),
        (2.0, "1.1", CT, False, False),  # later failure wins
        (1.0, "1.2", CT, False, False),
        (3.0, "1.2", CT, True, False),  # later success wins
        (1.0, "1.3", "", True, False),  # no class reported: any class
        (1.0, "1.4", MR, True, False),  # reported under another class
        (1.0, "1.6", CT, True, False),
        (2.0, "1.6", CT, True, True),  # the latest was taken by its requester
    ]
    asked = [(CT, "1.1"), (CT, "1.2"), (CT, "1.3"), (CT, "1.4"), (CT, "1.5"), (CT, "1.6")]
    assert latest_committed(rows, asked) == {"1.2", "1.3"}


# --------------------------------------------------------------------------- roles


def _role(scu: bool, scp: bool) -> SCP_SCU_RoleSelectionNegotiation:
    item = SCP_SCU_RoleSelectionNegotiation()
    item.sop_class_uid = STORAGE_COMMITMENT_PUSH_MODEL
    item.scu_role = scu
    item.scp_role = scp
    return item


def _negotiate(proposed: tuple[bool, bool] | None) -> tuple[int, bool, bool, list[object]]:
    rq = build_context(STORAGE_COMMITMENT_PUSH_MODEL)
    rq.context_id = 1
    roles: dict[UID, tuple[bool | None, bool | None]] | None = (
        None if proposed is None else {UID(STORAGE_COMMITMENT_PUSH_MODEL): proposed}
    )
    result, replies = negotiate_as_acceptor([rq], [commitment_scp_context()], roles)
    (cx,) = result
    assert cx.result is not None
    return int(cx.result), bool(cx.as_scu), bool(cx.as_scp), list(replies)


def test_peer_proposing_the_scp_role_is_accepted_as_scp() -> None:
    """Orthanc proposes SCU-role 0, SCP-role 1 when it reports: accepted, and we act as the
    SCU of the context (we receive N-EVENT-REPORTs, PS3.4 J.3.3)."""
    result, as_scu, as_scp, replies = _negotiate((False, True))
    assert (result, as_scu, as_scp) == (0, True, False)
    (reply,) = replies
    assert isinstance(reply, SCP_SCU_RoleSelectionNegotiation)
    assert (reply.scu_role, reply.scp_role) == (False, True)


def test_peer_proposing_both_roles_gets_the_scp_role_only() -> None:
    result, as_scu, as_scp, replies = _negotiate((True, True))
    assert (result, as_scu, as_scp) == (0, True, False)
    (reply,) = replies
    assert isinstance(reply, SCP_SCU_RoleSelectionNegotiation)
    assert (reply.scu_role, reply.scp_role) == (False, True)


def test_peer_wanting_to_be_scu_only_is_refused() -> None:
    """A peer that would send us N-ACTIONs: we are no Storage Commitment SCP."""
    result, _as_scu, _as_scp, _replies = _negotiate((True, False))
    assert result == 0x01  # user rejection (PS3.8 9.3.3.2)


def test_peer_without_role_selection_gets_the_default_roles() -> None:
    result, as_scu, as_scp, replies = _negotiate(None)
    assert (result, as_scu, as_scp, replies) == (0, False, True, [])

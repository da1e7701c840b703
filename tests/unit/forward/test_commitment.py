"""Storage commitment request/report (PS3.4 J.3) and the report handler with its sink."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from pydicom.dataset import Dataset

from dicom_nodes.forward import CommitmentReport, InMemoryCommitmentSink, handle_commitment_report
from dicom_nodes.forward.commitment import (
    STORAGE_COMMITMENT_PUSH_MODEL,
    EventType,
    build_commitment_request,
    parse_commitment_report,
)

CT = "1.2.840.10008.5.1.4.1.1.2"


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
    event_type: int, info: Dataset, sop_class: str = STORAGE_COMMITMENT_PUSH_MODEL
) -> object:
    request = SimpleNamespace(AffectedSOPClassUID=sop_class, EventTypeID=event_type)
    assoc = SimpleNamespace(requestor=SimpleNamespace(ae_title="ORTHANC"))
    return SimpleNamespace(request=request, event_information=info, assoc=assoc)


def test_request_lists_every_instance_with_a_new_transaction() -> None:
    a = build_commitment_request([(CT, "1.2.3"), (CT, "1.2.4")])
    b = build_commitment_request([(CT, "1.2.3")])
    assert a.TransactionUID != b.TransactionUID
    assert [
        (i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in a.ReferencedSOPSequence
    ] == [
        (CT, "1.2.3"),
        (CT, "1.2.4"),
    ]


def test_report_parsing() -> None:
    report = parse_commitment_report(
        EventType.FAILURES_EXIST, _report_info("1.9", ["1.2.3"], {"1.2.4": 0x0112})
    )
    assert report.transaction_uid == "1.9"
    assert report.committed == {"1.2.3"}
    assert report.failed == {"1.2.4": 0x0112}


def test_handler_puts_the_report_into_the_sink() -> None:
    sink = InMemoryCommitmentSink()
    status, reply = handle_commitment_report(
        _event(EventType.SUCCESSFUL, _report_info("1.9.1", ["1.2.3"], {})), sink
    )
    assert (status, reply) == (0x0000, None)
    report = sink.wait("1.9.1", timeout=0)
    assert report is not None and report.committed == {"1.2.3"}
    assert sink.wait("1.9.1", timeout=0) is None  # taken once


def test_handler_refuses_what_it_cannot_understand() -> None:
    sink = InMemoryCommitmentSink()
    assert handle_commitment_report(_event(1, Dataset()), sink)[0] == 0x0110  # no Transaction UID
    assert handle_commitment_report(_event(7, _report_info("1.9", [], {})), sink)[0] == 0x0110
    info = _report_info("1.9", ["1.2.3"], {})
    assert handle_commitment_report(_event(1, info, sop_class="1.2.3"), sink)[0] == 0x0110


def test_sink_wakes_a_waiting_thread() -> None:
    sink = InMemoryCommitmentSink()
    got: list[CommitmentReport | None] = []
    waiter = threading.Thread(target=lambda: got.append(sink.wait("1.5", timeout=5)))
    waiter.start()
    sink.put(CommitmentReport("1.5", frozenset({"1.2.3"})))
    waiter.join()
    assert got[0] is not None and got[0].committed == {"1.2.3"}
    assert sink.wait("1.6", timeout=0.05) is None

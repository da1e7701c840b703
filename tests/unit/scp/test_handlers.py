"""The C-STORE handler with fakes behind the IngestRecorder protocol (no network, no DB)."""

from __future__ import annotations

import errno
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest

from dicom_nodes.db.ingest import CommitOutcomeUnknown, Receipt, RecordOutcome
from dicom_nodes.errors import DatabaseUnavailable, DatasetProblem, InvalidDataset, OutOfResources
from dicom_nodes.scp import handlers
from dicom_nodes.scp.handlers import handle_echo, status_for
from dicom_nodes.scp.status import StoreStatus
from dicom_nodes.spool.inspect import DatasetIdentity
from dicom_nodes.spool.store import Spool, SpooledFile
from tests.support.data import PYDICOM_FILES


def handle_store(*args: Any, **kwargs: Any) -> int:
    """The handler's status (failures come as a data set with an Error Comment)."""
    rsp = handlers.handle_store(*args, **kwargs)
    if isinstance(rsp, int):
        return rsp
    assert rsp.ErrorComment
    return int(rsp.Status)


@dataclass
class FakeRecorder:
    fail: Exception | None = None
    outcome: RecordOutcome = RecordOutcome.NEW
    referenced: set[str] = field(default_factory=set)
    calls: list[tuple[DatasetIdentity, SpooledFile, Receipt]] = field(default_factory=list)

    def record(
        self, identity: DatasetIdentity, spooled: SpooledFile, receipt: Receipt
    ) -> RecordOutcome:
        if self.fail is not None:
            raise self.fail
        self.calls.append((identity, spooled, receipt))
        return self.outcome

    def replaced_path(self) -> str | None:
        return None

    def unreferenced(self, paths: list[str]) -> list[str]:
        if self.fail is not None:
            raise DatabaseUnavailable("down")
        return [p for p in paths if p not in self.referenced]


def _event(
    spool: Spool, src: Path, sop_class: str | None = None, sop_uid: str | None = None
) -> Any:
    ds = pydicom.dcmread(src, stop_before_pixels=True)
    temp = spool.incoming / "tmp.dcm"
    shutil.copy(src, temp)
    requestor = SimpleNamespace(ae_title="CT1", address="127.0.0.1", port=40000)
    acceptor = SimpleNamespace(ae_title="RADIOGATE")
    return SimpleNamespace(
        assoc=SimpleNamespace(requestor=requestor, acceptor=acceptor),
        request=SimpleNamespace(
            AffectedSOPClassUID=sop_class or ds.SOPClassUID,
            AffectedSOPInstanceUID=sop_uid or ds.SOPInstanceUID,
            _dataset_path=temp,
        ),
        dataset_path=temp,
    )


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool", unrecorded_min_age=0)
    s.prepare()
    return s


CT = PYDICOM_FILES / "CT_small.dcm"


def test_success_records_once_with_receipt(spool: Spool) -> None:
    rec = FakeRecorder()
    assert handle_store(_event(spool, CT), spool, rec, "n1") == StoreStatus.SUCCESS
    (identity, spooled, receipt) = rec.calls[0]
    assert spooled.path.exists() and spooled.created
    assert receipt.calling_ae == "CT1" and receipt.called_ae == "RADIOGATE" and receipt.node == "n1"
    assert identity.sop_instance_uid == pydicom.dcmread(CT).SOPInstanceUID


def _spooled(spool: Spool) -> list[Path]:
    return list(spool.root.glob("??/*.dcm"))


def test_database_failure_answers_a700_and_the_file_goes_once_nothing_needs_it(
    spool: Spool,
) -> None:
    rec = FakeRecorder(fail=DatabaseUnavailable("down"))
    assert handle_store(_event(spool, CT), spool, rec, "n1") == StoreStatus.OUT_OF_RESOURCES
    # Only the database can say whether another association recorded the same bytes.
    assert len(_spooled(spool)) == 1
    assert [p.name for p in spool.unrecorded.iterdir()] == [_spooled(spool)[0].name]
    rec.fail = None
    other = PYDICOM_FILES / "MR_small.dcm"
    assert handle_store(_event(spool, other), spool, rec, "n1") == StoreStatus.SUCCESS
    assert [p for p in _spooled(spool)] == [rec.calls[0][1].path]
    assert list(spool.unrecorded.iterdir()) == []


def test_a_file_another_receipt_recorded_is_not_swept(spool: Spool) -> None:
    rec = FakeRecorder(fail=DatabaseUnavailable("down"))
    assert handle_store(_event(spool, CT), spool, rec, "n1") == StoreStatus.OUT_OF_RESOURCES
    (path,) = _spooled(spool)
    rec.fail = None
    rec.referenced.add(str(path))  # identical bytes recorded by another association
    assert handle_store(_event(spool, PYDICOM_FILES / "MR_small.dcm"), spool, rec, "n1") == 0
    assert path.exists() and list(spool.unrecorded.iterdir()) == []


def test_unknown_commit_outcome_answers_a700_and_keeps_the_file_a_row_names(
    spool: Spool,
) -> None:
    rec = FakeRecorder(fail=CommitOutcomeUnknown("cut during COMMIT"))
    assert handle_store(_event(spool, CT), spool, rec, "n1") == StoreStatus.OUT_OF_RESOURCES
    (path,) = _spooled(spool)
    rec.fail = None
    rec.referenced.add(str(path))  # it had committed
    assert handle_store(_event(spool, PYDICOM_FILES / "MR_small.dcm"), spool, rec, "n1") == 0
    assert path.exists()


def test_identical_resend_of_a_released_instance_leaves_no_file(spool: Spool) -> None:
    rec = FakeRecorder(outcome=RecordOutcome.DUPLICATE_SAME)
    assert handle_store(_event(spool, CT), spool, rec, "n1") == StoreStatus.SUCCESS
    assert _spooled(spool) == []


def test_a_file_swept_while_identical_bytes_were_recorded_is_put_back(spool: Spool) -> None:
    rec = FakeRecorder()
    assert handle_store(_event(spool, CT), spool, rec, "n1") == StoreStatus.SUCCESS
    (path,) = _spooled(spool)
    original = path.read_bytes()

    class SweepingRecorder(FakeRecorder):
        def record(self, identity: Any, spooled: SpooledFile, receipt: Receipt) -> RecordOutcome:
            # A concurrent sweep removed the shared file after commit() saw it.
            spooled.path.unlink()
            return RecordOutcome.DUPLICATE_SAME

    assert handle_store(_event(spool, CT), spool, SweepingRecorder(), "n1") == 0
    assert path.read_bytes() == original


class SlowSweptRecorder(FakeRecorder):
    """A commit that took so long that the orphan sweep took the new file before it."""

    def record(self, identity: Any, spooled: SpooledFile, receipt: Receipt) -> RecordOutcome:
        outcome = super().record(identity, spooled, receipt)
        spooled.path.unlink()
        return outcome


def test_a_slow_receipt_whose_new_file_was_swept_is_not_success(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "ORPHAN_MIN_AGE", 0.0)  # every receipt counts as slow
    rec = SlowSweptRecorder()
    assert handle_store(_event(spool, CT), spool, rec, "n1") == StoreStatus.OUT_OF_RESOURCES
    assert len(rec.calls) == 1  # recorded: the re-send finds the row and brings the file back


def test_a_slow_receipt_whose_file_is_there_succeeds(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """... and syncs it again: the name may hold another receipt's unsynced copy by now."""
    monkeypatch.setattr(handlers, "ORPHAN_MIN_AGE", 0.0)
    synced: list[Path] = []
    make_durable = spool.make_durable

    def counting(spooled: SpooledFile) -> None:
        make_durable(spooled)
        synced.append(spooled.path)

    monkeypatch.setattr(spool, "make_durable", counting)
    assert handle_store(_event(spool, CT), spool, FakeRecorder(), "n1") == StoreStatus.SUCCESS
    assert _spooled(spool) == synced[:1] and len(synced) == 2


def test_the_fsync_overlaps_the_commit_and_the_answer_waits_for_both(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    recorded = threading.Event()
    make_durable = spool.make_durable

    def slow_sync(spooled: SpooledFile) -> None:
        # Finishes only once the commit has: done one after the other (fsync first) this
        # would never return, and the guard's timeout makes the receipt fail.
        if not recorded.wait(timeout=60):
            raise OutOfResources("the commit did not run beside the fsync")
        make_durable(spooled)
        order.append("synced")

    class Recorder(FakeRecorder):
        def record(self, identity: Any, spooled: SpooledFile, receipt: Receipt) -> RecordOutcome:
            outcome = super().record(identity, spooled, receipt)
            order.append("recorded")
            recorded.set()
            return outcome

    monkeypatch.setattr(spool, "make_durable", slow_sync)
    assert handle_store(_event(spool, CT), spool, Recorder(), "n1") == StoreStatus.SUCCESS
    assert order == ["recorded", "synced"]


def test_a_failed_fsync_after_the_commit_is_a700_and_a_resend_succeeds(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = FakeRecorder()
    make_durable = spool.make_durable

    def failing(_spooled: SpooledFile) -> None:
        raise OutOfResources("spool write failed: Input/output error")

    monkeypatch.setattr(spool, "make_durable", failing)
    assert handle_store(_event(spool, CT), spool, rec, "n1") == StoreStatus.OUT_OF_RESOURCES
    assert len(rec.calls) == 1  # recorded, but never acknowledged
    synced: list[SpooledFile] = []

    def syncing(spooled: SpooledFile) -> None:
        make_durable(spooled)
        synced.append(spooled)

    monkeypatch.setattr(spool, "make_durable", syncing)
    rec.outcome = RecordOutcome.DUPLICATE_SAME
    assert handle_store(_event(spool, CT), spool, rec, "n1") == StoreStatus.SUCCESS
    # The re-send found the file under its name and synced it before answering.
    assert [s.path for s in synced] == [rec.calls[0][1].path]
    assert not synced[0].created and synced[0].path.exists()


def test_mismatches(spool: Spool) -> None:
    rec = FakeRecorder()
    ev = _event(spool, CT, sop_class="1.2.840.10008.5.1.4.1.1.4")
    assert handle_store(ev, spool, rec, "n1") == StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS
    ev = _event(spool, CT, sop_uid="1.2.3.4")
    assert handle_store(ev, spool, rec, "n1") == StoreStatus.CANNOT_UNDERSTAND_INSTANCE_MISMATCH
    assert rec.calls == []


def test_unexpected_exception_is_c211(spool: Spool) -> None:
    rec = FakeRecorder(fail=RuntimeError("bug"))
    assert (
        handle_store(_event(spool, CT), spool, rec, "n1")
        == StoreStatus.CANNOT_UNDERSTAND_HANDLER_FAILURE
    )


def test_status_mapping_is_total() -> None:
    assert status_for(OutOfResources("x")) is StoreStatus.OUT_OF_RESOURCES
    assert status_for(DatabaseUnavailable("x")) is StoreStatus.OUT_OF_RESOURCES
    for problem in DatasetProblem:
        status = status_for(InvalidDataset(problem, "x"))
        assert status != StoreStatus.SUCCESS and (status >> 12) in (0xA, 0xC)
    assert status_for(ValueError()) is StoreStatus.CANNOT_UNDERSTAND_HANDLER_FAILURE


def test_echo() -> None:
    assert handle_echo(SimpleNamespace(assoc=SimpleNamespace())) == 0


def test_statuses_are_distinct_and_in_the_right_ranges() -> None:
    values = [int(s) for s in StoreStatus]
    assert len(values) == len(set(values))
    for s in StoreStatus:
        if s is not StoreStatus.SUCCESS:
            assert (int(s) >> 12) in (0xA, 0xC), s.name


@dataclass
class FakeWriter:
    events: list[Any] = field(default_factory=list)

    def write(self, event: Any) -> bool:
        self.events.append(event)
        return True


def test_pixel_data_mismatch_is_c212_with_a_comment_and_an_audit_event(
    spool: Spool, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(CT)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # a truncated image, re-encoded
    src = tmp_path / "half.dcm"
    ds.save_as(src)
    writer = FakeWriter()
    rsp = handlers.handle_store(_event(spool, src), spool, FakeRecorder(), "n1", writer)  # type: ignore[arg-type]
    assert not isinstance(rsp, int)
    assert rsp.Status == int(StoreStatus.CANNOT_UNDERSTAND_PIXEL_DATA) == 0xC212
    assert rsp.ErrorComment == "Pixel Data is 16384 bytes; the image attributes require 32768"
    (event,) = writer.events
    assert event.step.value == "refused" and event.reason == "pixel-data-mismatch"
    assert event.objects[0].instances[0].sop_instance_uid == ds.SOPInstanceUID
    assert _spooled(spool) == []


def test_a_data_set_that_could_not_be_written_is_a700_and_leaves_nothing(spool: Spool) -> None:
    ev = _event(spool, CT)
    ev.request._dataset_file = SimpleNamespace(error=OSError(errno.ENOSPC, "full"))
    ev.dataset_path.unlink()  # ReceiveFile removed the partial file
    rsp = handlers.handle_store(ev, spool, FakeRecorder(), "n1")
    assert not isinstance(rsp, int)
    assert rsp.Status == StoreStatus.OUT_OF_RESOURCES
    assert rsp.ErrorComment == "spool write failed: No space left on device"
    assert _spooled(spool) == [] and list(spool.incoming.iterdir()) == []


def test_a_request_without_a_data_set_is_c210_without_a_traceback(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    ev = _event(spool, CT)
    ev.request._dataset_path = None
    assert (
        handle_store(ev, spool, FakeRecorder(), "n1") == StoreStatus.CANNOT_UNDERSTAND_UNPARSEABLE
    )
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)


def test_no_space_anywhere_in_the_handler_is_a700() -> None:
    assert status_for(OSError(errno.ENOSPC, "full")) is StoreStatus.OUT_OF_RESOURCES
    assert status_for(OSError(errno.EDQUOT, "quota")) is StoreStatus.OUT_OF_RESOURCES

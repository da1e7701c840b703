"""The receiver accepts storage commitment reports (PS3.4 J.3.3) on associations the reporting
peer opens, with the role negotiation that needs (PS3.7 D.3.3.4): the SCP built by
``build_server`` (fast path included), a pynetdicom peer as the reporting archive, a fake sink
behind the CommitmentSink protocol (no database)."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, _config
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

from config import Settings
from config.schema import ScpSettings
from dicom_nodes.errors import DatabaseUnavailable
from dicom_nodes.forward.commitment import (
    STORAGE_COMMITMENT_PUSH_MODEL,
    STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
    CommitmentReport,
    EventReportStatus,
    EventType,
    InMemoryCommitmentSink,
)
from dicom_nodes.scp.app import build_server
from dicom_nodes.scp.transport import ReceiverServer
from dicom_nodes.spool.store import Spool
from tests.support.commitment import CT


class _FlakySink(InMemoryCommitmentSink):
    """Fails the first *failures* puts as a database outage would."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.failures = failures
        self.puts = 0

    def put(self, report: CommitmentReport) -> None:
        self.puts += 1
        if self.puts <= self.failures:
            raise DatabaseUnavailable("database unavailable (OperationalError)")
        super().put(report)


class _NoRecorder:
    def record(self, *args: object) -> Any:
        raise AssertionError("no C-STORE expected")

    def replaced_path(self) -> str | None:
        raise AssertionError("no C-STORE expected")

    def unreferenced(self, paths: list[str]) -> list[str]:
        raise AssertionError("no C-STORE expected")


class _Scp:
    def __init__(self, tmp: Path, sink: InMemoryCommitmentSink) -> None:
        settings = Settings(scp=ScpSettings(port=0, ae_title="RADIOGATE"))
        spool = Spool(tmp / "spool")
        spool.incoming.mkdir(parents=True, exist_ok=True)
        self.server = build_server(settings, spool, _NoRecorder(), commitment_sink=sink)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scp_globals() -> Iterator[None]:
    """build_server sets process-wide state; put it back afterwards."""
    saved = (
        _config.STORE_RECV_CHUNKED_DATASET,
        _config.LOG_HANDLER_LEVEL,
        tempfile.tempdir,
        ReceiverServer.quickack,
        ReceiverServer.allowed_networks,
        ReceiverServer.tls_handshake_timeout,
    )
    yield
    (
        _config.STORE_RECV_CHUNKED_DATASET,
        _config.LOG_HANDLER_LEVEL,
        tempfile.tempdir,
        ReceiverServer.quickack,
        ReceiverServer.allowed_networks,
        ReceiverServer.tls_handshake_timeout,
    ) = saved


def _report(tx: str, committed: list[str], failed: dict[str, int]) -> Dataset:
    info = Dataset()
    info.TransactionUID = tx
    info.ReferencedSOPSequence = []
    for uid in committed:
        item = Dataset()
        item.ReferencedSOPClassUID = CT
        item.ReferencedSOPInstanceUID = uid
        info.ReferencedSOPSequence.append(item)
    if failed:
        info.FailedSOPSequence = []
        for uid, reason in failed.items():
            item = Dataset()
            item.ReferencedSOPClassUID = CT
            item.ReferencedSOPInstanceUID = uid
            item.FailureReason = reason
            info.FailedSOPSequence.append(item)
    return info


def _associate(port: int, role: tuple[bool, bool] | None) -> Any:
    """Associate as the reporting archive does (Orthanc: SCU-role 0, SCP-role 1)."""
    ae = AE(ae_title="ORTHANC")
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL)
    if role is None:
        return ae.associate("127.0.0.1", port, ae_title="RADIOGATE", ext_neg=[])
    item = SCP_SCU_RoleSelectionNegotiation()
    item.sop_class_uid = STORAGE_COMMITMENT_PUSH_MODEL
    item.scu_role, item.scp_role = role
    return ae.associate("127.0.0.1", port, ae_title="RADIOGATE", ext_neg=[item])


def _send(assoc: Any, event_type: int, info: Dataset) -> int:
    status, _reply = assoc.send_n_event_report(
        info, event_type, STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE
    )
    return int(status.Status)


@pytest.mark.usefixtures("scp_globals")
def test_report_from_a_peer_in_the_scp_role_reaches_the_sink(tmp_path: Path) -> None:
    sink = _FlakySink()
    scp = _Scp(tmp_path, sink)
    try:
        assoc = _associate(scp.port, (False, True))
        assert assoc.is_established
        (cx,) = assoc.accepted_contexts
        assert cx.as_scp and not cx.as_scu  # the peer is the Storage Commitment SCP
        assert _send(assoc, EventType.SUCCESSFUL, _report("2.25.7", ["1.2.3.1"], {})) == 0
        info = _report("2.25.8", ["1.2.3.1"], {"1.2.3.2": 0x0112})
        assert _send(assoc, EventType.FAILURES_EXIST, info) == 0
        assoc.release()
    finally:
        scp.stop()
    first, second = sink.wait("2.25.7", timeout=0), sink.wait("2.25.8", timeout=0)
    assert first is not None and first.committed == {"1.2.3.1"}
    assert first.reporter_ae == "ORTHANC" and first.reporter_address == "127.0.0.1"
    assert second is not None and second.failed == {"1.2.3.2": 0x0112}
    assert second.committed == {"1.2.3.1"}


@pytest.mark.usefixtures("scp_globals")
def test_report_not_recorded_gets_a_failure_status_and_is_taken_when_resent(
    tmp_path: Path,
) -> None:
    sink = _FlakySink(failures=1)
    scp = _Scp(tmp_path, sink)
    try:
        assoc = _associate(scp.port, (False, True))
        info = _report("2.25.9", ["1.2.3.1"], {})
        assert _send(assoc, EventType.SUCCESSFUL, info) == EventReportStatus.RESOURCE_LIMITATION
        assert sink.wait("2.25.9", timeout=0) is None
        assert _send(assoc, EventType.SUCCESSFUL, info) == EventReportStatus.SUCCESS
        assoc.release()
    finally:
        scp.stop()
    report = sink.wait("2.25.9", timeout=0)
    assert report is not None and report.committed == {"1.2.3.1"}


@pytest.mark.usefixtures("scp_globals")
def test_peer_asking_to_be_the_scu_is_refused_the_context(tmp_path: Path) -> None:
    """We never provide Storage Commitment as SCP: a peer that wants to send N-ACTIONs gets
    the context rejected; a peer without role selection is served with the default roles."""
    sink = _FlakySink()
    scp = _Scp(tmp_path, sink)
    try:
        refused = _associate(scp.port, (True, False))
        assert not refused.is_established  # pynetdicom gives up without a usable context
        assert [cx.result for cx in refused.rejected_contexts] == [0x01]  # user rejection
        plain = _associate(scp.port, None)
        assert plain.is_established
        assert _send(plain, EventType.SUCCESSFUL, _report("2.25.10", ["1.2.3.1"], {})) == 0
        plain.release()
    finally:
        scp.stop()
    assert sink.wait("2.25.10", timeout=0) is not None


@pytest.mark.usefixtures("scp_globals")
def test_without_a_sink_the_scp_does_not_offer_storage_commitment(tmp_path: Path) -> None:
    settings = Settings(scp=ScpSettings(port=0, ae_title="RADIOGATE"))
    spool = Spool(tmp_path / "spool")
    spool.incoming.mkdir(parents=True)
    server = build_server(settings, spool, _NoRecorder())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assoc = _associate(int(server.server_address[1]), (False, True))
        assert not assoc.is_established
        # abstract syntax not supported (PS3.8 Table 9-18)
        assert [cx.result for cx in assoc.rejected_contexts] == [0x03]
    finally:
        server.shutdown()
        server.server_close()

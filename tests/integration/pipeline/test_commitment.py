"""Storage commitment end to end: storescu → ``radiogate scp`` + ``radiogate worker`` → Orthanc
(or a pynetdicom archive that reports as told), whose N-EVENT-REPORTs come back on their own
associations to the SCP, are recorded in PostgreSQL and picked up by the waiting worker.

How we know which confirmation was used: the worker logs one line per confirmation ("… by
storage commitment …" / "… by C-FIND"), the SCP one per report received, and the
``commitment_request`` / ``commitment_result`` rows say what was asked and answered.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

from dicom_nodes.forward.commitment import (
    STORAGE_COMMITMENT_PUSH_MODEL,
    STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
    EventType,
)
from dicom_nodes.services.orthanc import ManagedOrthanc, OrthancPeer
from tests.integration.pipeline.test_forwarding import storescu
from tests.support import free_port
from tests.support.data import extract_ct
from tests.support.pipeline import Node, orthanc_instances

pytestmark = pytest.mark.integration

BY_COMMITMENT = "confirmed by storage commitment"
BY_C_FIND = "confirmed by C-FIND"


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return extract_ct(tmp_path_factory.mktemp("ct"))[:8]


def _uids(files: list[Path]) -> set[str]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


class _Orthanc:
    """A private Orthanc whose ``DicomModalities`` entry for RADIOGATE points at *port*."""

    def __init__(self, port: int) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="radiogate-orthanc-"))
        self.server = ManagedOrthanc(
            storage_dir=self.base,
            http_port=free_port(),
            dicom_port=free_port(),
            peers=[OrthancPeer("radiogate", "RADIOGATE", "127.0.0.1", port)],
        )

    def report_to(self, port: int) -> None:
        """Restart with the entry pointing at *port* (the archive's content is kept)."""
        self.server.stop()
        self.server.peers = [OrthancPeer("radiogate", "RADIOGATE", "127.0.0.1", port)]
        self.server.start()


@pytest.fixture
def make_orthanc() -> Iterator[Callable[[int], ManagedOrthanc]]:
    started: list[_Orthanc] = []

    def make(port: int) -> ManagedOrthanc:
        o = _Orthanc(port)
        o.server.start()
        started.append(o)
        return o.server

    yield make
    for o in started:
        o.server.stop()
        shutil.rmtree(o.base, ignore_errors=True)


def _worker_log(node: Node) -> str:
    assert node.worker is not None
    return node.worker.log_path.read_text(errors="replace")


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.25)


def test_commitment_confirms_through_the_scp_without_any_c_find(
    fresh_dsn: str,
    tmp_path: Path,
    ct_files: list[Path],
    make_orthanc: Callable[[int], ManagedOrthanc],
) -> None:
    scp_port = free_port()
    orthanc = make_orthanc(scp_port)
    node = Node(fresh_dsn, tmp_path / "node", orthanc, confirm="commitment", scp_port=scp_port)
    node.start()
    try:
        assert node.scp is not None
        storescu(node.scp.port, ct_files)
        node.wait_released(len(ct_files))
        assert len(orthanc_instances(orthanc)) == len(ct_files)
        assert node.scp.spooled_files() == []
        # every instance committed by Orthanc's report, recorded by the SCP for this destination
        results = node.query(
            "SELECT sop_instance_uid, committed, failure_reason, destination, reporter_ae "
            "FROM commitment_result"
        )
        assert {r[0] for r in results} == _uids(ct_files)
        assert {r[1:] for r in results} == {(True, None, "archive", orthanc.ae_title)}
        # asked by the worker, answered, and taken by the worker that waited
        requests = node.query(
            "SELECT destination, peer_ae, calling_ae, reported_at IS NOT NULL, "
            "taken_at IS NOT NULL, instance_count FROM commitment_request"
        )
        assert {r[:5] for r in requests} == {("archive", "ORTHANC", "RADIOGATE", True, True)}
        assert sum(r[5] for r in requests) == len(ct_files)
        rows = node.query("SELECT state, count(*) FROM forward_item GROUP BY state")
        assert rows == [("confirmed", len(ct_files))]
        log = _worker_log(node)
        assert BY_COMMITMENT in log
        assert BY_C_FIND not in log and "falling back" not in log
        assert "storage commitment report" in node.scp.log_text()
    finally:
        node.stop()


def test_no_report_in_time_falls_back_to_c_find(
    fresh_dsn: str,
    tmp_path: Path,
    ct_files: list[Path],
    make_orthanc: Callable[[int], ManagedOrthanc],
) -> None:
    """commitment-or-query: Orthanc accepts the N-ACTION but reports to a closed port."""
    scp_port = free_port()
    orthanc = make_orthanc(free_port())  # nobody listens there
    node = Node(
        fresh_dsn,
        tmp_path / "node",
        orthanc,
        confirm="commitment-or-query",
        destination_toml="commitment_timeout = 3.0",
        scp_port=scp_port,
    )
    node.start()
    try:
        assert node.scp is not None
        started = time.monotonic()
        storescu(node.scp.port, ct_files)
        node.wait_released(len(ct_files))
        assert time.monotonic() - started >= 3.0  # not before the timeout
        log = _worker_log(node)
        assert "falling back to C-FIND" in log and BY_C_FIND in log
        assert "no storage commitment report from archive within 3 s" in log
        assert BY_COMMITMENT not in log
        assert node.query("SELECT count(*) FROM commitment_result") == [(0,)]
        unanswered = node.query("SELECT count(*) FROM commitment_request WHERE reported_at IS NULL")
        assert unanswered[0][0] >= 1
    finally:
        node.stop()


def test_commitment_alone_retries_until_the_report_comes(
    fresh_dsn: str,
    tmp_path: Path,
    ct_files: list[Path],
    make_orthanc: Callable[[int], ManagedOrthanc],
) -> None:
    """commitment: no report, no release and no C-FIND — the items go back to pending (the
    pipeline's answer to ConfirmationUnavailable) and are sent and asked again; once Orthanc
    reports to the right place, they are released."""
    scp_port = free_port()
    archive = _Orthanc(free_port())  # reports go nowhere at first
    archive.server.start()
    node = Node(
        fresh_dsn,
        tmp_path / "node",
        archive.server,
        confirm="commitment",
        destination_toml="commitment_timeout = 2.0",
        scp_port=scp_port,
    )
    node.start()
    try:
        assert node.scp is not None
        storescu(node.scp.port, ct_files)
        _wait_for(
            lambda: node.query("SELECT count(*) FROM commitment_request")[0][0] >= 3,
            90,
            "three unanswered commitment requests",
        )
        states = node.query("SELECT DISTINCT state FROM ingest_instance")
        assert ("released",) not in states and ("confirmed",) not in states
        items = node.query("SELECT state, min(attempts) FROM forward_item GROUP BY state")
        # Sent and not confirmed: asked again, then sent again, never released.
        assert {s for s, _a in items} <= {"sent", "pending"} and min(a for _s, a in items) >= 1
        assert items, items
        assert node.scp.spooled_files() != []
        log = _worker_log(node)
        assert "unconfirmed until the next attempt" in log
        assert BY_C_FIND not in log and BY_COMMITMENT not in log
        archive.report_to(scp_port)
        node.wait_released(len(ct_files), timeout=120)
        assert BY_COMMITMENT in _worker_log(node)
        assert BY_C_FIND not in _worker_log(node)
        committed = node.query("SELECT count(DISTINCT sop_instance_uid) FROM commitment_result")
        assert committed == [(len(ct_files),)]
    finally:
        node.stop()
        archive.server.stop()
        shutil.rmtree(archive.base, ignore_errors=True)


# --------------------------------------------------------------------------- a scripted archive


class _Archive:
    """A pynetdicom Storage SCP and Storage Commitment SCP (no C-FIND) that reports each
    N-ACTION as ``plan(n, instances) -> (delay s, failed uids) | None`` says (None: never),
    on an association of its own to our SCP, proposing the SCP role (PS3.7 D.3.3.4)."""

    def __init__(
        self,
        scp_port: int,
        sop_classes: set[str],
        plan: Callable[[int, list[str]], tuple[float, set[str]] | None],
    ) -> None:
        self.scp_port = scp_port
        self.plan = plan
        self.port = free_port()
        self.actions: list[str] = []
        self.reported: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        ae = AE(ae_title="ARCHIVE")
        for sop_class in sop_classes:
            ae.add_supported_context(sop_class)
        ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL)
        server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, lambda _e: 0), (evt.EVT_N_ACTION, self._action)],
        )
        assert server is not None  # not blocking: the running server is returned
        self._server = server

    def _action(self, event: Any) -> tuple[int, None]:
        info = event.action_information
        tx = str(info.TransactionUID)
        refs = [(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
                for i in info.ReferencedSOPSequence]  # fmt: skip
        with self._lock:
            self.actions.append(tx)
            n = len(self.actions)
        decision = self.plan(n, [uid for _cls, uid in refs])
        if decision is not None:
            delay, failed = decision
            timer = threading.Timer(delay, self._report, (tx, refs, failed))
            timer.start()
            self._timers.append(timer)
        return 0x0000, None

    def _report(self, tx: str, refs: list[tuple[str, str]], failed: set[str]) -> None:
        info = Dataset()
        info.TransactionUID = tx
        committed, failures = [], []
        for sop_class, uid in refs:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = uid
            if uid in failed:
                item.FailureReason = 0x0112  # no such object instance (PS3.4 Table J.3-3)
                failures.append(item)
            else:
                committed.append(item)
        info.ReferencedSOPSequence = committed
        if failures:
            info.FailedSOPSequence = failures
        event_type = EventType.FAILURES_EXIST if failed else EventType.SUCCESSFUL
        ae = AE(ae_title="ARCHIVE")
        ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL)
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = STORAGE_COMMITMENT_PUSH_MODEL
        role.scu_role, role.scp_role = False, True
        assoc = ae.associate("127.0.0.1", self.scp_port, ae_title="RADIOGATE", ext_neg=[role])
        assert assoc.is_established
        status, _ = assoc.send_n_event_report(
            info, event_type, STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE
        )
        assoc.release()
        with self._lock:
            self.reported.append((tx, int(getattr(status, "Status", -1))))

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._server.shutdown()


@pytest.fixture
def archive_node(
    fresh_dsn: str, tmp_path: Path, ct_files: list[Path]
) -> Iterator[Callable[..., tuple[Node, _Archive]]]:
    made: list[tuple[Node, _Archive]] = []

    def make(
        plan: Callable[[int, list[str]], tuple[float, set[str]] | None], timeout: float
    ) -> tuple[Node, _Archive]:
        scp_port = free_port()
        classes = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID) for f in ct_files}
        archive = _Archive(scp_port, classes, plan)
        dummy = ManagedOrthanc(tmp_path / "unused", 0, archive.port, ae_title="ARCHIVE")
        node = Node(
            fresh_dsn,
            tmp_path / "node",
            dummy,
            confirm="commitment",
            destination_toml=f"commitment_timeout = {timeout}",
            scp_port=scp_port,
        )
        made.append((node, archive))
        return node.start(), archive

    yield make
    for node, archive in made:
        node.stop()
        archive.stop()


def test_a_late_report_confirms_at_the_next_attempt(
    archive_node: Callable[..., tuple[Node, _Archive]], ct_files: list[Path]
) -> None:
    """The archive reports an N-ACTION only when it names an instance it was never asked
    about, and only after the worker stopped waiting; it never reports again and offers no
    C-FIND. So every instance is released on a report recorded by the SCP after its
    requester gave up, at a later round."""
    asked: set[str] = set()

    def plan(_n: int, uids: list[str]) -> tuple[float, set[str]] | None:
        new = set(uids) - asked
        asked.update(uids)
        return (3.0, set()) if new else None

    node, archive = archive_node(plan, 1.5)
    assert node.scp is not None
    storescu(node.scp.port, ct_files)
    node.wait_released(len(ct_files), timeout=120)
    assert archive.reported and all(status == 0 for _tx, status in archive.reported)
    assert len(archive.actions) > len(archive.reported)  # asked again after each time-out
    reported = [tx for tx, _status in archive.reported]
    never_taken = node.query(
        "SELECT count(*) FROM commitment_request WHERE transaction_uid = ANY(%s) "
        "AND reported_at IS NOT NULL AND taken_at IS NULL",
        reported,
    )
    assert never_taken == [(len(reported),)]
    log = _worker_log(node)
    for tx in reported:
        assert f"no storage commitment report from archive within 1.5 s (transaction {tx})" in log
    counts = [
        (int(m[1]), int(m[2]))
        for m in re.finditer(
            r"(\d+) of \d+ instances confirmed by storage commitment \((\d+) by", log
        )
    ]
    assert sum(n for n, _ in counts) == len(ct_files)
    assert all(n == earlier for n, earlier in counts)  # none confirmed by a waited-for report
    assert BY_C_FIND not in log


def test_failed_instances_are_recorded_and_sent_again(
    archive_node: Callable[..., tuple[Node, _Archive]], ct_files: list[Path]
) -> None:
    """Event Type 2: the failed instance is recorded as not committed (with its Failure
    Reason) and stays in the spool; the others are released; the next round asks again (and
    sends again if still not committed) and it is committed."""
    failing = sorted(_uids(ct_files))[0]
    failed_once: set[str] = set()

    def plan(_n: int, uids: list[str]) -> tuple[float, set[str]]:
        fail = {failing} & set(uids) - failed_once
        failed_once.update(fail)
        return 0.0, fail

    node, archive = archive_node(plan, 20.0)
    assert node.scp is not None
    storescu(node.scp.port, ct_files)
    node.wait_released(len(ct_files), timeout=120)
    assert failed_once == {failing}
    failed = node.query(
        "SELECT sop_instance_uid, committed, failure_reason, event_type, reporter_ae "
        "FROM commitment_result WHERE NOT committed"
    )
    assert failed == [(failing, False, 0x0112, 2, "ARCHIVE")]
    (attempts,) = node.query(
        "SELECT attempts FROM forward_item WHERE sop_instance_uid = %s", failing
    )
    assert attempts[0] >= 1
    assert len(archive.actions) >= 2 and all(status == 0 for _tx, status in archive.reported)

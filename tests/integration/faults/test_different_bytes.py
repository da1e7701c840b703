"""Different bytes for the same SOP Instance UID follow ``scp.different_bytes``; every case is
recorded and audited, and no copy's file is lost or left behind."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pydicom
import pytest
from blake3 import blake3

from dicom_nodes.services.orthanc import ManagedOrthanc, OrthancPeer
from tests.support import ScpProcess, dcmtk, free_port
from tests.support.data import extract_ct
from tests.support.pipeline import Node, orthanc_instances, site_keys
from tests.support.roles import admin_role

pytestmark = pytest.mark.integration


def _store(port: int, path: Path) -> str:
    return subprocess.run(
        [dcmtk("storescu"), "-v", "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1", str(port),
         str(path)],
        capture_output=True, text=True, check=False, timeout=60,
    ).stderr  # fmt: skip


def _copies(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two versions of one instance (a corrected Window Center) and another instance."""
    first, other = extract_ct(tmp_path / "ct")[:2]
    ds = pydicom.dcmread(first)
    ds.WindowCenter = 77
    second = tmp_path / "second.dcm"
    ds.save_as(second)
    return first, second, other


def _instance(dsn: str) -> tuple[bytes, str]:
    with psycopg.connect(dsn) as conn:
        ((b3, path),) = conn.execute("SELECT blake3, spool_path FROM ingest_instance").fetchall()
        return bytes(b3), str(path)


def _reasons(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        bodies = conn.execute(
            "SELECT body FROM audit_pending WHERE step = 'received' ORDER BY id"
        ).fetchall()
    out = []
    for (body,) in bodies:
        text = bytes(body).decode()
        out.append(text.split('"reason":"', 1)[1].split('"', 1)[0] if '"reason"' in text else "")
    return out


def _is_second(b3: bytes, path: str) -> bool:
    """Whether the recorded copy is the corrected one (and its file holds those bytes)."""
    assert blake3(Path(path).read_bytes()).digest() == b3
    return float(pydicom.dcmread(path).WindowCenter) == 77


@pytest.mark.parametrize("policy", ["replace", "keep"])
def test_a_resend_before_routing(fresh_dsn: str, tmp_path: Path, policy: str) -> None:
    first, second, other = _copies(tmp_path)
    scp = ScpProcess(
        dsn=fresh_dsn, data_dir=tmp_path / "node",
        extra_env={"RADIOGATE_SCP__DIFFERENT_BYTES": policy},
    ).start()  # fmt: skip
    try:
        assert "(Success)" in _store(scp.port, first)
        first_path = _instance(fresh_dsn)[1]
        assert "(Success)" in _store(scp.port, second)
        b3, path = _instance(fresh_dsn)
        with psycopg.connect(fresh_dsn) as conn:
            dups = conn.execute("SELECT bytes_differ FROM ingest_duplicate").fetchall()
        assert dups == [(True,)]
        if policy == "replace":
            assert _is_second(b3, path) and path != first_path
            assert _reasons(fresh_dsn) == ["", "replaced-unrouted-copy"]
            # The first copy's file goes once the database confirms nothing needs it.
            time.sleep(scp_min_age() + 0.5)
            assert "(Success)" in _store(scp.port, other)
            assert not Path(first_path).exists()
        else:
            assert not _is_second(b3, path) and path == first_path
            assert _reasons(fresh_dsn) == ["", "resent-different-bytes"]
            time.sleep(scp_min_age() + 0.5)
            assert "(Success)" in _store(scp.port, other)
            assert Path(first_path).exists()
        assert len(scp.spooled_files()) == 3 if policy == "keep" else 2
    finally:
        scp.stop()


def test_a_resend_after_routing_keeps_the_routed_copy(fresh_dsn: str, tmp_path: Path) -> None:
    first, second, _ = _copies(tmp_path)
    scp = ScpProcess(dsn=fresh_dsn, data_dir=tmp_path / "node").start()
    try:
        assert "(Success)" in _store(scp.port, first)
        with psycopg.connect(fresh_dsn) as conn:
            # As the router leaves it (the state is the pipeline's to set; a test stands in).
            conn.execute("UPDATE ingest_instance SET state = 'routed'")
        assert "(Success)" in _store(scp.port, second)
        b3, path = _instance(fresh_dsn)
        assert not _is_second(b3, path)
        assert _reasons(fresh_dsn) == ["", "resent-different-bytes"]
        assert len(scp.spooled_files()) == 2  # the second copy waits for a person
    finally:
        scp.stop()


def scp_min_age() -> float:
    from dicom_nodes.spool.store import UNRECORDED_MIN_AGE

    return UNRECORDED_MIN_AGE


@pytest.fixture
def archive() -> Iterator[ManagedOrthanc]:
    """A private Orthanc as ``radiogate run`` configures it (``OverwriteInstances`` on)."""
    base = Path(tempfile.mkdtemp(prefix="radiogate-orthanc-"))
    server = ManagedOrthanc(
        storage_dir=base, http_port=free_port(), dicom_port=free_port(),
        peers=[OrthancPeer("radiogate", "RADIOGATE", "127.0.0.1", free_port())],
    )  # fmt: skip
    server.start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


def _archived_window_centers(orthanc: ManagedOrthanc) -> list[float]:
    """The Window Center of every instance the archive holds, read from its stored bytes."""
    out = []
    for oid in orthanc_instances(orthanc):
        data = orthanc.request(f"/instances/{oid}/file")
        out.append(float(pydicom.dcmread(io.BytesIO(data)).WindowCenter))
    return out


def _steps(node: Node) -> list[tuple[str, str]]:
    """(step, reason) of every audit event, sealed or not."""
    rows = node.query(
        "SELECT step, body FROM audit_pending UNION ALL SELECT step, body FROM audit_event"
    )
    return [(str(step), json.loads(bytes(body)).get("reason") or "") for step, body in rows]


@pytest.mark.parametrize("policy", ["keep", "replace-in-archive", "quarantine"])
def test_a_resend_of_an_archived_instance(
    fresh_dsn: str, tmp_path: Path, archive: ManagedOrthanc, policy: str
) -> None:
    first, second, _ = _copies(tmp_path)
    original = float(pydicom.dcmread(first).WindowCenter)
    node = Node(
        fresh_dsn, tmp_path / "node", archive,
        extra_env={
            "RADIOGATE_SCP__DIFFERENT_BYTES_ARCHIVED": policy,
            # The site's secrets, as `radiogate run` makes them (`quarantine release` needs them).
            **site_keys(),
        },
    ).start()  # fmt: skip
    assert node.scp is not None
    try:
        assert "(Success)" in _store(node.scp.port, first)
        node.wait_released(1)
        assert _archived_window_centers(archive) == [original]
        ((first_b3,),) = node.query("SELECT blake3 FROM ingest_instance")
        assert "(Success)" in _store(node.scp.port, second)
        ((dup_path, note, second_b3),) = node.query(
            "SELECT spool_path, note, blake3 FROM ingest_duplicate"
        )
        assert first_b3 != second_b3
        assert Path(dup_path).exists()  # acknowledged, so durable whatever the policy
        if policy == "keep":
            ((state, b3),) = node.query("SELECT state, blake3 FROM ingest_instance")
            assert state == "released" and b3 == first_b3
            assert ("received", "resent-different-bytes") in _steps(node)
            assert _archived_window_centers(archive) == [original]
            return
        decision = "replace-in-archive" if policy == "replace-in-archive" else (
            "archived-copy-differs")  # fmt: skip
        assert note == decision
        if policy == "replace-in-archive":
            node.wait_for(lambda: node.query(
                "SELECT state = 'released' AND blake3 = %s FROM ingest_instance", second_b3
            ) == [(True,)])  # fmt: skip
            assert _archived_window_centers(archive) == [77.0]
            assert not Path(dup_path).exists()  # released: every destination confirmed it
            assert node.query("SELECT instances FROM series") == [(1,)]  # counted once
            steps = _steps(node)
            assert ("received", "replaces-archived-copy") in steps
            assert ("rerouted", "replace-in-archive") in steps
            assert ("retried", "replace-in-archive") in steps
        else:
            node.wait_for(lambda: node.query(
                "SELECT i.state, f.state, f.hold_reason FROM ingest_instance i"
                " JOIN forward_item f USING (sop_instance_uid)"
            ) == [("held", "quarantined", "archived-copy-differs")])  # fmt: skip
            assert _archived_window_centers(archive) == [original]
            assert Path(dup_path).exists()  # held for a person
            steps = _steps(node)
            assert ("received", "archived-copy-quarantined") in steps
            assert ("rerouted", "archived-copy-differs") in steps
            assert ("quarantined", "archived-copy-differs") in steps
            listing = subprocess.run(
                [sys.executable, "-m", "dicom_nodes.cli", "quarantine", "list"],
                env=node.scp.env(), capture_output=True, text=True, check=True, timeout=60,
            )  # fmt: skip
            (uid,) = [r[0] for r in node.query("SELECT sop_instance_uid FROM ingest_instance")]
            assert uid in listing.stdout and "archived-copy-differs" in listing.stdout
            # A person reviews it and releases it: it then replaces the archived copy.
            released = subprocess.run(
                [sys.executable, "-m", "dicom_nodes.cli", "quarantine", "release", uid],
                env={**node.scp.env(), "RADIOGATE_DATABASE__ADMIN_DSN":
                     admin_role(fresh_dsn, "bob", "radiogate_admin")},
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
            assert released.returncode == 0, released.stderr
            node.wait_for(lambda: node.query(
                "SELECT state = 'released' AND blake3 = %s FROM ingest_instance", second_b3
            ) == [(True,)])  # fmt: skip
            assert _archived_window_centers(archive) == [77.0]
    finally:
        node.stop()

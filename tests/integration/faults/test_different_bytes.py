"""Different bytes for the same SOP Instance UID follow ``scp.different_bytes``; every case is
recorded and audited, and no copy's file is lost or left behind."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psycopg
import pydicom
import pytest
from blake3 import blake3

from tests.support import ScpProcess, dcmtk
from tests.support.data import extract_ct

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

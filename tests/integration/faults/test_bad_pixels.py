"""A truncated image re-encoded as a consistent data set is refused (0xC212, Error Comment,
audit event); the intact re-send of the same SOP Instance UID is then the one recorded."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pydicom
import pytest

from tests.support import ScpProcess, dcmtk
from tests.support.data import extract_ct

pytestmark = pytest.mark.integration


def test_half_pixel_data_is_refused_and_the_intact_resend_is_recorded(
    scp: ScpProcess, fresh_dsn: str, tmp_path: Path
) -> None:
    (good,) = extract_ct(tmp_path / "ct")[:1]
    ds = pydicom.dcmread(good)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    half = tmp_path / "half.dcm"
    ds.save_as(half)

    def store(path: Path) -> str:
        return subprocess.run(
            [dcmtk("storescu"), "-d", "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1",
             str(scp.port), str(path)],
            capture_output=True, text=True, check=False, timeout=60,
        ).stderr  # fmt: skip

    out = store(half)
    assert "Error: Cannot understand" in out and "0xc212" in out.lower(), out
    assert "Pixel Data is 262144 bytes; the image attributes require 524288" in out
    assert scp.spooled_files() == []
    assert list((scp.spool / ".incoming").iterdir()) == []
    out = store(good)
    assert "0x0000: Success" in out, out
    with psycopg.connect(fresh_dsn) as conn:
        rows = conn.execute("SELECT blake3 FROM ingest_instance").fetchall()
        dups = conn.execute("SELECT count(*) FROM ingest_duplicate").fetchone()
        steps = [
            r[0]
            for r in conn.execute("SELECT step FROM audit_pending ORDER BY id").fetchall()
            if r[0] in ("received", "refused")
        ]
    assert len(rows) == 1 and dups == (0,)
    assert steps == ["refused", "received"]
    assert "C-STORE refused with 0xC212" in scp.log_text()
    assert ds.PatientName and str(ds.PatientName) not in scp.log_text()

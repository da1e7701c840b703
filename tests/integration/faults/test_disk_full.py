"""A spool on a small tmpfs fills up in the middle of data sets: each is answered 0xA700
after the rest of it was read, the association goes on, and no partial file stays."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from blake3 import blake3

from tests.support import ScpProcess, dcmtk
from tests.support.data import extract_ct

pytestmark = pytest.mark.integration


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs CAP_SYS_ADMIN, as the test machines and CI give; elsewhere the
    same path is covered by the unit tests of ReceiveFile with an injected ENOSPC)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_mid_data_set_is_a700_and_leaves_no_partial_file(
    small_fs: Path, fresh_dsn: str, tmp_path: Path
) -> None:
    files = extract_ct(tmp_path / "ct")[:12]  # ~6 MiB into 4 MiB
    spool = small_fs / "spool"
    scp = ScpProcess(
        dsn=fresh_dsn, data_dir=tmp_path / "node",
        extra_env={"RADIOGATE_SPOOL__PATH": str(spool)},
    ).start()  # fmt: skip
    try:
        out = subprocess.run(
            [dcmtk("storescu"), "-v", "-nh", "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1",
             str(scp.port), *map(str, files)],
            capture_output=True, text=True, check=False, timeout=120,
        ).stderr  # fmt: skip
        acked = out.count("Received Store Response (Success)")
        refused = out.count("Received Store Response (Refused: OutOfResources)")
        # One association throughout: every data set got an answer, none was cut off.
        assert acked + refused == len(files), out
        assert acked >= 3 and refused >= 1, out
        assert "Association Aborted" not in out
        assert list((spool / ".incoming").iterdir()) == []
        with psycopg.connect(fresh_dsn) as conn:
            rows = conn.execute("SELECT spool_path, blake3 FROM ingest_instance").fetchall()
        assert len(rows) == acked
        for path, digest in rows:
            assert blake3(Path(path).read_bytes()).digest() == bytes(digest)
        assert "No space left on device" in scp.log_text()
        assert "Traceback" not in scp.log_text()
    finally:
        scp.stop()
        with contextlib.suppress(Exception):
            subprocess.run(["umount", "-l", str(small_fs)], check=False)

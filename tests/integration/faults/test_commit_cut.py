"""The database connection cut during the receiver's COMMIT: the outcome is found out, never
guessed, and no file a committed row names is ever removed."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support import ScpProcess, dcmtk
from tests.support.data import extract_ct
from tests.support.pgproxy import PgProxy

pytestmark = pytest.mark.integration


def _store(port: int, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("storescu"), "-v", "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1", str(port),
         *map(str, files)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def _rows(dsn: str, table: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return [
            (str(r[0]), str(r[1]))
            for r in conn.execute(f"SELECT sop_instance_uid, spool_path FROM {table}")
        ]


@pytest.fixture
def proxy(fresh_dsn: str) -> Iterator[PgProxy]:
    port = int(fresh_dsn.split("port=")[1].split(maxsplit=1)[0])
    p = PgProxy(upstream_port=port).start()
    yield p
    p.stop()


@pytest.fixture
def ct(tmp_path: Path) -> list[Path]:
    return extract_ct(tmp_path / "ct")[:2]


def _scp(proxy: PgProxy, dsn: str, tmp_path: Path) -> ScpProcess:
    return ScpProcess(dsn=proxy.dsn(dsn), data_dir=tmp_path / "node").start()


def test_cut_after_commit_is_found_committed_and_answered_success(
    proxy: PgProxy, fresh_dsn: str, tmp_path: Path, ct: list[Path]
) -> None:
    scp = _scp(proxy, fresh_dsn, tmp_path)
    try:
        proxy.cut = "after"
        result = _store(scp.port, ct[:1])
        assert proxy.cuts == 1
        assert result.returncode == 0 and "Received Store Response (Success)" in result.stderr
        (row,) = _rows(fresh_dsn, "ingest_instance")
        assert Path(row[1]).exists()
        assert _rows(fresh_dsn, "ingest_duplicate") == []  # not recorded twice
        assert "the interrupted commit had committed" in scp.log_text()
    finally:
        scp.stop()


def test_cut_after_commit_with_the_database_gone_keeps_the_file(
    proxy: PgProxy, fresh_dsn: str, tmp_path: Path, ct: list[Path]
) -> None:
    scp = _scp(proxy, fresh_dsn, tmp_path)
    try:
        proxy.cut, proxy.down_after_cut = "after", 8.0
        result = _store(scp.port, ct[:1])
        assert proxy.cuts == 1
        assert "Refused: OutOfResources" in result.stderr, result.stderr
        assert "its spool file is kept" in scp.log_text()
        # The row committed: its file is there, and stays there once the database is back.
        (row,) = _rows(fresh_dsn, "ingest_instance")
        assert Path(row[1]).exists()
        while proxy.down:
            time.sleep(0.2)
        result = _store(scp.port, ct)  # the modality re-sends, plus the next image
        assert result.returncode == 0, result.stderr
        assert result.stderr.count("Received Store Response (Success)") == 2
        for _, path in _rows(fresh_dsn, "ingest_instance"):
            assert Path(path).exists()
        assert len(scp.spooled_files()) == 2
    finally:
        scp.stop()


def test_cut_before_commit_with_the_database_gone_removes_the_file_later(
    proxy: PgProxy, fresh_dsn: str, tmp_path: Path, ct: list[Path]
) -> None:
    scp = _scp(proxy, fresh_dsn, tmp_path)
    try:
        proxy.cut, proxy.down_after_cut = "before", 8.0
        result = _store(scp.port, ct[:1])
        assert "Refused: OutOfResources" in result.stderr, result.stderr
        assert _rows(fresh_dsn, "ingest_instance") == []
        while proxy.down:
            time.sleep(0.2)
        result = _store(scp.port, ct[1:])
        assert result.returncode == 0, result.stderr
        # The unrecorded file went once the database could say that nothing names it.
        ((_, path),) = _rows(fresh_dsn, "ingest_instance")
        assert scp.spooled_files() == [Path(path)]
    finally:
        scp.stop()

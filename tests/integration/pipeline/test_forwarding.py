"""storescu → Radiogate (SCP + worker) → Orthanc, with real PostgreSQL, Orthanc and DCMTK."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest

from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.support import dcmtk
from tests.support.data import extract_ct, series_copies
from tests.support.pipeline import Node, orthanc_get, orthanc_instances

pytestmark = pytest.mark.integration


def storescu(port: int, files: list[Path]) -> None:
    result = subprocess.run(
        [dcmtk("storescu"), "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, check=False, env={"TCP_NODELAY": "1"}, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


def _scrape(port: int, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:  # the worker opens its endpoint a moment after it starts
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as rsp:
                return str(rsp.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _pixel_data(raw: bytes) -> bytes:
    from io import BytesIO

    return bytes(pydicom.dcmread(BytesIO(raw)).PixelData)


def test_ct_series_reaches_orthanc_unchanged(
    fresh_dsn: str, tmp_path: Path, orthanc: ManagedOrthanc
) -> None:
    files = extract_ct(tmp_path / "ct")
    node = Node(fresh_dsn, tmp_path / "node", orthanc).start()
    try:
        assert node.scp is not None
        assert 'radiogate_received_instances_total{node="node1"} 0.0' in _scrape(
            node.scp.metrics_port
        )
        storescu(node.scp.port, files)
        node.wait_released(len(files))
        ids = orthanc_instances(orthanc)
        assert len(ids) == len(files)
        originals = {}
        for f in files:
            ds = pydicom.dcmread(f)
            originals[str(ds.SOPInstanceUID)] = (
                ds.StudyInstanceUID,
                ds.SeriesInstanceUID,
                bytes(ds.PixelData),
            )
        for oid in ids:
            raw = orthanc_get(orthanc, f"/instances/{oid}/file")
            ds = pydicom.dcmread(__import__("io").BytesIO(raw))
            study, series, pixels = originals.pop(str(ds.SOPInstanceUID))
            assert (ds.StudyInstanceUID, ds.SeriesInstanceUID) == (study, series)
            assert bytes(ds.PixelData) == pixels
            assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert not originals
        assert node.scp.spooled_files() == []  # released after confirmation
        rows = node.query("SELECT state, count(*) FROM forward_item GROUP BY state")
        assert rows == [("confirmed", len(files))]
        # Metrics and status see the counters.
        with urllib.request.urlopen(
            f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=10
        ) as rsp:
            text = rsp.read().decode()
        assert "radiogate_received_instances_total" not in text  # the receiver's to export
        assert f'radiogate_confirmed_instances_total{{node="node1"}} {float(len(files))}' in text
        assert 'radiogate_queue_depth{lane="critical",node="node1"} 0.0' in text
        # The SCP serves the receiver's counters, and both answer /health.
        scp_metrics = f"http://127.0.0.1:{node.scp.metrics_port}"
        with urllib.request.urlopen(f"{scp_metrics}/metrics", timeout=10) as rsp:
            assert (
                f'radiogate_received_instances_total{{node="node1"}} {float(len(files))}'
                in rsp.read().decode()
            )
        for url in (scp_metrics, f"http://127.0.0.1:{node.metrics_port}"):
            with urllib.request.urlopen(f"{url}/health", timeout=10) as rsp:
                health = json.loads(rsp.read())
            assert rsp.status == 200 and health["status"] == "ok", health
    finally:
        node.stop()


def test_orthanc_down_for_a_while_loses_nothing(
    fresh_dsn: str, tmp_path: Path, orthanc: ManagedOrthanc
) -> None:
    files = extract_ct(tmp_path / "ct")[:12]
    node = Node(fresh_dsn, tmp_path / "node", orthanc).start()
    try:
        assert node.scp is not None
        orthanc.stop()
        storescu(node.scp.port, files)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            (row,) = node.query("SELECT count(*) FROM forward_item WHERE attempts >= 2")
            if row[0] == len(files):
                break
            time.sleep(0.25)
        assert row[0] == len(files), "forwarding was not retried while Orthanc was down"
        assert len(node.scp.spooled_files()) == len(files)
        orthanc.start()
        node.wait_released(len(files))
        assert len(orthanc_instances(orthanc)) == len(files)
    finally:
        node.stop()


@pytest.mark.slow
def test_worker_killed_mid_forwarding(
    fresh_dsn: str, tmp_path: Path, orthanc: ManagedOrthanc
) -> None:
    files = series_copies(extract_ct(tmp_path / "ct"), tmp_path / "many", 4)  # 192 instances
    node = Node(fresh_dsn, tmp_path / "node", orthanc).start(worker=False)
    try:
        assert node.scp is not None
        storescu(node.scp.port, files)
        worker = node.start_worker()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            (row,) = node.query("SELECT count(*) FROM forward_item WHERE sent_at IS NOT NULL")
            if row[0] >= 20:
                break
            time.sleep(0.05)
        worker.kill()
        (done,) = node.query("SELECT count(*) FROM ingest_instance WHERE state = 'released'")
        assert done[0] < len(files), "the worker finished before it could be killed"
        node.start_worker()
        node.wait_released(len(files))
        assert len(orthanc_instances(orthanc)) == len(files)
        assert node.scp.spooled_files() == []
    finally:
        node.stop()

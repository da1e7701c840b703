"""storescu → Radiogate (SCP + worker) → Orthanc, with real PostgreSQL, Orthanc and DCMTK."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.support import dcmtk
from tests.support.data import extract_ct, series_copies
from tests.support.deploy_metrics import metric_names
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
        assert (
            f'radiogate_confirmed_instances_total{{destination="archive",node="node1"}} '
            f"{float(len(files))}" in text
        )
        assert (
            'radiogate_queue_depth{destination="archive",lane="critical",node="node1"} 0.0' in text
        )
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
            with pytest.raises(urllib.error.HTTPError) as unknown:
                urllib.request.urlopen(f"{url}/anything", timeout=10)
            assert unknown.value.code == 404
        scp_text = _scrape(node.scp.metrics_port)
        worker_text = _scrape(node.metrics_port)
        # The receiver counts what it answered and accepted; the worker its destinations' work.
        n = float(len(files))
        assert (
            f'radiogate_store_responses_total{{node="node1",outcome="success",status="0000"}} {n}'
            in scp_text
        )
        assert 'radiogate_associations_total{node="node1",reason="",result="accepted"}' in scp_text
        assert f'radiogate_receive_seconds_count{{node="node1"}} {n}' in scp_text
        assert "radiogate_spool_free_bytes{" in scp_text and "process_cpu_seconds_total" in scp_text
        assert (
            f'radiogate_forwarded_instances_total{{destination="archive",node="node1"}} {n}'
            in worker_text
        )
        assert (
            f'radiogate_forward_seconds_count{{destination="archive",node="node1"}} {n}'
            in worker_text
        )
        assert 'radiogate_confirm_seconds_count{destination="archive",node="node1"}' in worker_text
        assert 'radiogate_node_metrics_exporter{node="node1"} 1.0' in worker_text
        # No family is exported by both processes (a sum() would count it twice), except
        # each process's own health and process figures.
        families = [
            {f.name for f in text_string_to_metric_families(t)} for t in (scp_text, worker_text)
        ]
        shared = families[0] & families[1]
        own = {"radiogate_database_up", "radiogate_service_processes"}
        assert all(f in own or f.startswith("process_") for f in shared), shared
        # Every metric the shipped dashboard and alert rules use is exported.
        exported = {
            s.name for t in (scp_text, worker_text) for f in text_string_to_metric_families(t)
            for s in f.samples
        } | set().union(*families)  # fmt: skip
        used = metric_names()
        assert len(used) >= 15, used
        # A histogram nobody observed yet (no de-identifying route here) has its family but no
        # samples: a suffixed name counts as exported when its family is.
        suffixes = ("_bucket", "_sum", "_count", "_total")
        missing = {
            name for name in used - exported
            if not any(name.endswith(x) and name.removesuffix(x) in exported for x in suffixes)
        }  # fmt: skip
        assert missing == set(), missing
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

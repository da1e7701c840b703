"""A critical study overtakes the routine backlog (priority lanes), end to end."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.support import dcmtk
from tests.support.pipeline import Node, orthanc_instances

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LANE_RULES = """
[[lane_rules]]
lane = "critical"
[lane_rules.match]
tags = { RequestedProcedurePriority = ["STAT"] }
"""


def _series(dest: Path, count: int, *, priority: str = "", rows: int = 128) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(7)
    out = []
    for i in range(count):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality = "CT"
        ds.PatientID = "LANE-TEST"
        ds.InstanceNumber = i + 1
        if priority:
            ds.RequestedProcedurePriority = priority
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = rows
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = rng.integers(-1000, 1000, (rows, rows), dtype=np.int16).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = dest / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def _send(port: int, files: list[Path]) -> None:
    result = subprocess.run(
        [dcmtk("storescu"), "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, check=False, env={"TCP_NODELAY": "1"}, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


def test_critical_study_overtakes_routine_backlog(
    fresh_dsn: str, tmp_path: Path, orthanc: ManagedOrthanc
) -> None:
    routine = _series(tmp_path / "routine", 500)
    critical = _series(tmp_path / "critical", 8, priority="STAT")
    node = Node(fresh_dsn, tmp_path / "node", orthanc, extra_toml=LANE_RULES).start(worker=False)
    try:
        assert node.scp is not None
        _send(node.scp.port, routine)  # the backlog builds up while no worker runs
        node.start_worker()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            (row,) = node.query("SELECT count(*) FROM forward_item WHERE sent_at IS NOT NULL")
            if row[0] >= 10:
                break
            time.sleep(0.02)
        _send(node.scp.port, critical)
        critical_received = node.query(
            "SELECT max(received_at) FROM ingest_instance WHERE lane = 'critical' OR route = ''"
        )
        node.wait_released(len(routine) + len(critical), timeout=180)
        (crit,) = node.query(
            """SELECT max(f.confirmed_at), count(*), max(i.received_at) FROM forward_item f
               JOIN ingest_instance i USING (sop_instance_uid) WHERE i.lane = 'critical'"""
        )
        assert crit[1] == len(critical)
        (before,) = node.query(
            """SELECT count(*) FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
               WHERE i.lane = 'routine' AND f.confirmed_at <= %s""",
            crit[0],
        )
        latency = (crit[0] - crit[2]).total_seconds()
        timeline = node.query(
            """SELECT min(i.received_at), max(i.received_at), max(i.state_changed_at),
                      min(f.sent_at), max(f.sent_at), max(f.confirmed_at)
               FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
               WHERE i.lane = 'critical'"""
        )
        print("critical timeline (received, routed/released, sent, confirmed):", timeline)
        print(f"critical study confirmed {latency:.2f} s after its last instance was received; "
              f"{before[0]} of {len(routine)} routine instances confirmed before it")  # fmt: skip
        assert before[0] < len(routine), "the critical study waited for the whole backlog"
        assert latency < 5.0
        assert len(orthanc_instances(orthanc)) == len(routine) + len(critical)
        (study,) = node.query(
            "SELECT lane FROM study WHERE study_instance_uid = (SELECT study_instance_uid FROM ingest_instance WHERE lane = 'critical' LIMIT 1)"
        )
        assert study[0] == "critical"
        _ = critical_received
    finally:
        node.stop()

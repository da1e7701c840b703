"""The lung1 chest CT end to end: storescu → Radiogate (de-identified) → Orthanc → analysis →
SEG and TID 1500 SR in the same study in Orthanc, values in the feature store; the tumour comes
from another tool's SEG in the archive; a re-run replaces the earlier results."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import pyarrow.dataset as pads  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pydicom
import pytest

from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.support import dcmtk
from tests.support.data import extract_ct
from tests.support.outline import lung1_tumour_seg
from tests.support.pipeline import Node, WorkerProcess, orthanc_get, site_keys
from tests.support.sr import measurement_report

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

ROUTES = """
[[routes]]
name = "chest"
steps = ["deidentify:basic", "forward:archive"]
"""


def _archived_series(orthanc: ManagedOrthanc) -> list[pydicom.Dataset]:
    (study,) = orthanc_get(orthanc, "/studies")
    series = orthanc_get(orthanc, f"/studies/{study}/series?expand")
    (ct,) = [s for s in series if s["MainDicomTags"].get("Modality") == "CT"]
    return [pydicom.dcmread(io.BytesIO(orthanc_get(orthanc, f"/instances/{i}/file")))
            for i in ct["Instances"]]  # fmt: skip


def test_chest_ct_analysis_end_to_end(
    fresh_dsn: str, tmp_path: Path, orthanc: ManagedOrthanc
) -> None:
    files = extract_ct(tmp_path / "ct")
    original_study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    extra = f"""
[analysis]
archive_url = "{orthanc.url}"
credentials_file = "{orthanc.credentials_path}"
time_limit = 600.0
{ROUTES}"""
    secrets = site_keys()
    node = Node(fresh_dsn, tmp_path / "node", orthanc, extra_toml=extra, extra_env=secrets)
    node.start()
    try:
        assert node.scp is not None
        env = node.scp.env()
        sent = subprocess.run(
            [dcmtk("storescu"), "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1",
             str(node.scp.port), *map(str, files)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        node.wait_released(len(files))
        archived = _archived_series(orthanc)
        assert original_study not in {str(ds.StudyInstanceUID) for ds in archived}
        orthanc.request("/instances", method="POST", body=lung1_tumour_seg(archived)[0])

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "dicom_nodes.cli", *args],
                                  capture_output=True, text=True, env=env, check=False)  # fmt: skip

        # The route has no analyse step: an admin asks for it (the worker reads the archive).
        assert cli("analyse", original_study).stdout.strip() == "1 analyses requested"
        node.wait_for(lambda: node.query("SELECT state FROM series_analysis")
                      in ([("done",)], [("failed",)]), timeout=600)  # fmt: skip
        state, error, seg_uid, sr_uid, runs = node.query(
            "SELECT state, error, seg_sop_instance_uid, sr_sop_instance_uid, runs "
            "FROM series_analysis")[0]  # fmt: skip
        assert (state, error, runs) == ("done", "", 1)
        # SEG and SR are in the same study in the archive, and valid.
        (study,) = orthanc_get(orthanc, "/studies")
        series = orthanc_get(orthanc, f"/studies/{study}/series?expand")
        ours = {s["MainDicomTags"]["SeriesDescription"]: s for s in series
                if s["MainDicomTags"].get("SeriesDescription", "").startswith("Radiogate")}  # fmt: skip
        # The demonstration emphysema model contributed: the report says so.
        assert set(ours) == {"Radiogate segmentation",
                             "Radiogate measurements (not for clinical use)"}  # fmt: skip
        sr_id = ours["Radiogate measurements (not for clinical use)"]["Instances"][0]
        sr = pydicom.dcmread(io.BytesIO(orthanc_get(orthanc, f"/instances/{sr_id}/file")))
        assert str(sr.SOPInstanceUID) == sr_uid
        report = hd.sr.Comprehensive3DSR.from_dataset(sr)
        groups = measurement_report(report.content).get_volumetric_roi_measurement_groups()
        assert len(groups) == 3  # right lung, left lung, the tumour from the other tool's SEG
        # each segment's key-slice outline too (what OHIF draws)
        planar = measurement_report(report.content).get_planar_roi_measurement_groups()
        assert {str(g.tracking_uid) for g in planar} == {str(g.tracking_uid) for g in groups}
        # The feature store holds the same values, with what they were computed with.
        rows = node.query(
            "SELECT segment_label, feature, value, parameter_hash, pyradiomics_version, "
            "sr_sop_instance_uid FROM feature_value WHERE run = 1")  # fmt: skip
        labels = {r[0] for r in rows}
        assert labels == {"Right lung", "Left lung", "GTV"}
        assert {r[5] for r in rows} == {sr_uid} and all(len(r[3]) == 64 for r in rows)
        volumes = {r[0]: r[2] for r in rows if r[1] == "lung_volume_ml"}
        assert 500 < volumes["Right lung"] + volumes["Left lung"] < 8000
        assert seg_uid is not None
        # ... and the feature table files hold the report's NUMs, pseudonymous.
        original_patient = str(pydicom.dcmread(files[0], stop_before_pixels=True).PatientID)
        (exported,) = (node.data_dir / "features" / "parquet").glob("date=*/*.parquet")
        table = pads.dataset(node.data_dir / "features" / "parquet", partitioning="hive")
        records = table.to_table().to_pylist()
        assert exported.name == f"{sr.StudyInstanceUID}_{archived[0].SeriesInstanceUID}.parquet"
        assert {r["SOPInstanceUID"] for r in records} == {sr_uid}
        assert {r["PatientID"] for r in records} == {str(sr.PatientID)} != {original_patient}
        nums = [v for g in groups for v in g.get_measurements()]
        volumetric = [r for r in records if r["segmentationSegmentNumber"] is not None]
        assert len(volumetric) == len(nums)
        assert sorted(r["Value"] for r in volumetric) == pytest.approx(
            sorted(float(m.value) for m in nums)
        )
        assert len(list((node.data_dir / "features" / "csv").glob("date=*/*.csv"))) == 1
        # Again, by a worker whose jobs extract the segments in a pool of two processes (the
        # job's own process starts them): a new run, the earlier results replaced.
        assert node.worker is not None
        node.worker.stop()
        node.worker = WorkerProcess(
            {**env, "RADIOGATE_ANALYSIS__PROCESSES": "2"}, node.data_dir / "worker2.log"
        ).start()
        assert cli("analyse", original_study).stdout.strip() == "1 analyses requested"
        node.wait_for(lambda: node.query("SELECT state, runs FROM series_analysis")
                      in ([("done", 2)], [("failed", 2)]), timeout=600)  # fmt: skip
        assert node.query("SELECT state, error FROM series_analysis") == [("done", "")]
        series = orthanc_get(orthanc, f"/studies/{study}/series?expand")
        descriptions = sorted(s["MainDicomTags"].get("SeriesDescription", "") for s in series)
        assert descriptions.count("Radiogate segmentation") == 1
        (again,) = (node.data_dir / "features" / "parquet").glob("date=*/*.parquet")
        new_sr = node.query("SELECT sr_sop_instance_uid FROM series_analysis")[0][0]
        assert {r["SOPInstanceUID"] for r in pq.read_table(again).to_pylist()} == {new_sr}
        steps = [s for (s,) in node.query("SELECT step FROM audit_pending ORDER BY id")
                 if s.startswith("analys")]  # fmt: skip
        assert steps == ["analysis-started", "analysed", "analysis-requested",
                         "analysis-started", "analysed"]  # fmt: skip
    finally:
        node.stop()

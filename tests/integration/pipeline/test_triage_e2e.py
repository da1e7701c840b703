"""Triage end to end (real SCP, worker, PostgreSQL, Orthanc, Mosquitto, DCMTK as the modality):
a chest CT with a large hyperdense finding, sent behind a routine backlog, is scored critical by
the shipped model; its images, SR and KOS reach the archive before the backlog drains, in the
critical lane; the alert goes out over MQTT at once, reaches a webhook that was down once it is
up, escalates while nobody acknowledges it, and stops when someone does."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from analysis.triage import DEFAULT_CARD, load_model
from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.integration.results.test_dciodvfy import verify
from tests.support.data import extract_ct, series_copies
from tests.support.pipeline import Node, orthanc_get
from tests.support.services import HttpReceiver, Mosquitto, mqtt_messages
from tests.support.triage import TRIAGE_ROUTES, insert_dense_finding, node_secrets, storescu

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


def _critical_study(files: list[Path], dest: Path) -> tuple[list[Path], list[str]]:
    """A new study of the CT whose middle slices carry a large hyperdense finding that the
    shipped model scores critical; returns the files and the SOP UIDs of those slices."""
    model = load_model(DEFAULT_CARD)
    rng = np.random.default_rng(7)
    dest.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    out, flagged = [], []
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.AccessionNumber = "CRIT1"
        if 18 <= index < 30 and (changed := insert_dense_finding(ds, rng)) is not None:
            spacing = [float(v) for v in ds.PixelSpacing]
            score = float(model.score(model.preprocess(changed, spacing)[np.newaxis])[0])
            if score >= 0.8:
                flagged.append(str(ds.SOPInstanceUID))
        target = dest / f"crit{index:03d}.dcm"
        ds.save_as(target, enforce_file_format=True)
        out.append(target)
    assert len(flagged) >= 3, "the inserted findings should score critical"
    return out, flagged


def test_critical_study_overtakes_the_backlog_and_is_announced(
    fresh_dsn: str, tmp_path: Path, orthanc: ManagedOrthanc
) -> None:
    ct = extract_ct(tmp_path / "ct")
    backlog = series_copies(ct, tmp_path / "backlog", 4)  # 192 routine instances
    critical, flagged = _critical_study(ct, tmp_path / "critical")
    broker = Mosquitto(tmp_path / "mosquitto").start()
    webhook = HttpReceiver()  # down until later
    extra = f"""
[triage]
association_grace = 0.5

[alerts]
targets = ["mqtt", "webhook"]
escalation_targets = ["oncall"]
category1_minutes = 0.1
retry_initial = 0.5
retry_max = 1.0

[[alerts.target]]
name = "mqtt"
kind = "mqtt"
port = {broker.port}
topic = "rg/alerts"

[[alerts.target]]
name = "webhook"
kind = "webhook"
url = "{webhook.url}"
timeout = 2.0

[[alerts.target]]
name = "oncall"
kind = "mqtt"
port = {broker.port}
topic = "rg/oncall"
{TRIAGE_ROUTES}"""
    node = Node(fresh_dsn, tmp_path / "node", orthanc, extra_toml=extra, extra_env=node_secrets())
    node.start(worker=False)
    try:
        assert node.scp is not None
        env = node.scp.env()
        with mqtt_messages(broker.port, "rg/#") as inbox:
            storescu(node.scp.port, "ROUTINE", backlog)
            storescu(node.scp.port, "CT1", critical)
            last_received = time.monotonic()
            node.start_worker()
            topic, message = inbox.get(timeout=120)
            alerted = time.monotonic() - last_received
            assert topic == "rg/alerts/1" and message["category"] == 1
            assert message["kind"] == "finding" and message["lane"] == "critical"
            assert 80.0 <= message["certainty"] <= 100.0
            assert message["model"]["name"] == "radiogate-demo-ct-critical"
            (crit_study,) = {str(pydicom.dcmread(critical[0], stop_before_pixels=True)
                                 .StudyInstanceUID)}  # fmt: skip
            assert crit_study not in str(message)  # pseudonymous only
            # The critical study and its SR and KOS are archived before the backlog drains.
            node.wait_released(len(backlog) + len(critical) + 2, timeout=600)
            crit_done, backlog_done = node.query(
                """SELECT max(f.confirmed_at) FILTER (WHERE i.calling_ae <> 'ROUTINE'),
                          max(f.confirmed_at) FILTER (WHERE i.calling_ae = 'ROUTINE')
                   FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)"""
            )[0]
            assert crit_done < backlog_done, (crit_done, backlog_done)
            lane, quality, reasons, sr_uid, kos_uid = node.query(
                "SELECT lane, quality, reasons, sr_sop_instance_uid, kos_sop_instance_uid "
                "FROM series_triage")[0]  # fmt: skip
            assert (lane, quality) == ("critical", "complete") and "model-critical" in reasons
            assert sr_uid and kos_uid
            # The webhook comes up and gets the alert; nobody acknowledges: it escalates.
            webhook.up()
            node.wait_for(lambda: len(webhook.requests) >= 1, timeout=60)
            seen = [inbox.get(timeout=60)[0] for _ in range(2)]
            assert seen == ["rg/alerts/1", "rg/oncall/1"], seen
        (alert_id,) = node.query("SELECT alert_id FROM alert")[0]
        acked = subprocess.run([sys.executable, "-m", "dicom_nodes.cli", "alert", "ack",
                                alert_id, "--user", "dr-house"], env=env, capture_output=True,
                               text=True, check=False)  # fmt: skip
        assert acked.returncode == 0, acked
        # The results in the archive: the SR reads back and passes dciodvfy; the KOS lists
        # the flagged images under their archive UIDs.
        by_modality: dict[str, list[str]] = {}
        for sid in orthanc_get(orthanc, "/series"):
            tags = orthanc_get(orthanc, f"/series/{sid}")["MainDicomTags"]
            by_modality.setdefault(tags.get("Modality", ""), []).append(sid)
        (sr_series,) = by_modality["SR"]
        (sr_instance,) = orthanc_get(orthanc, f"/series/{sr_series}/instances")
        data = orthanc_get(orthanc, f"/instances/{sr_instance['ID']}/file")
        with pydicom.config.strict_reading():
            sr = pydicom.dcmread(io.BytesIO(data))
        report = hd.sr.Comprehensive3DSR.from_dataset(sr)
        assert report.content is not None
        assert "RID49480" in str(report)  # ACR category 1 as the priority
        dciodvfy = shutil.which("dciodvfy", path="/usr/bin:/usr/local/bin:/bin")
        assert dciodvfy
        errors, _warnings = verify(dciodvfy, data, tmp_path)
        assert not errors, errors
        (kos_series,) = by_modality["KO"]
        (kos_instance,) = orthanc_get(orthanc, f"/series/{kos_series}/instances")
        kos_id = kos_instance["ID"]
        kos = pydicom.dcmread(io.BytesIO(orthanc_get(orthanc, f"/instances/{kos_id}/file")))
        listed = {str(i.ReferencedSOPInstanceUID)
                  for s in kos.CurrentRequestedProcedureEvidenceSequence
                  for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}  # fmt: skip
        archived_instances = {str(orthanc_get(orthanc, f"/instances/{i}")["MainDicomTags"]
                                  ["SOPInstanceUID"]) for i in orthanc_get(orthanc, "/instances")}  # fmt: skip
        assert listed and listed <= archived_instances  # de-identified consistently
        assert not listed & set(flagged)  # under their archive UIDs, not the originals
        # Timestamps of every stage are there for `radiogate study show`.
        shown = subprocess.run([sys.executable, "-m", "dicom_nodes.cli", "study", "show",
                                crit_study], env=env, capture_output=True, text=True,
                               check=False)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert (
            '"results_confirmed": "' in shown.stdout
            and '"acknowledged_by": "dr-house"' in shown.stdout
        )
        print(f"alert {alerted:.1f} s after the last instance was sent")
    finally:
        node.stop()
        webhook.down()
        broker.stop()

"""A study stored into Orthanc directly, whose arrival route triages, is triaged as a received
one: a chest CT with a large hyperdense finding (real Orthanc, real PostgreSQL, the shipped
model) becomes critical, with its SR and KOS in the archive (dciodvfy: no error) under the
archive's UIDs and an alert; a part of the same CT that the model scores low everywhere stays
routine, with neither."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pydicom
import pytest
from psycopg_pool import ConnectionPool

from analysis.triage import DEFAULT_CARD, load_model
from dicom_nodes.audit_events import pipeline_sink
from dicom_nodes.pacs.arrivals import run_arrival
from dicom_nodes.pipeline.analyse import Analysis
from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.pipeline.triage import Triage
from tests.integration.pacs.conftest import Pacs, chained, start_pacs, upload
from tests.integration.pipeline.test_triage_e2e import _critical_study
from tests.integration.results.test_dciodvfy import ACCEPTED, verify
from tests.support.data import extract_ct

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]
ROUTE = """
[[routes]]
name = "direct"
steps = ["triage"]
"""
STEPS = ["triage"]


def _ctx(pacs: Pacs, pool: ConnectionPool) -> PipelineContext:
    creds = pacs.users["service"]
    s = pacs.settings
    return PipelineContext(
        node="node1", pool=pool, routes=s.routes, lane_rules=s.lane_rules, destinations={},
        audit=pipeline_sink("node1", "RADIOGATE"),
        triage=Triage(s.triage, s.alerts, [load_model(DEFAULT_CARD)]),
        analysis=Analysis(pacs.orthanc.url, creds.user, creds.password, 60, 1, 0, "ct_ibsi",
                          True),
    )  # fmt: skip


def _store(pacs: Pacs, files: list[Path]) -> tuple[str, str]:
    """Store *files* into the archive over its REST API; (Orthanc id, Study Instance UID)."""
    study_id = ""
    for f in files:
        study_id = upload(pacs, f)["ParentStudy"]
    tags = pacs.call("service", f"/studies/{study_id}").json()["MainDicomTags"]
    return study_id, str(tags["StudyInstanceUID"])


def _objects(pacs: Pacs, study_id: str, modality: str) -> list[bytes]:
    out = []
    for series in pacs.call("service", f"/studies/{study_id}/series").json():
        if series["MainDicomTags"].get("Modality") == modality:
            for inst in series["Instances"]:
                out.append(pacs.call("service", f"/instances/{inst}/file").body)
    return out


def test_a_study_stored_directly_is_triaged(fresh_dsn: str, tmp_path: Path) -> None:
    dciodvfy = shutil.which("dciodvfy", path="/usr/bin:/usr/local/bin:/bin")
    if dciodvfy is None:
        pytest.fail("dciodvfy (dicom3tools) is not installed: make system-deps")
    ct = extract_ct(tmp_path / "ct")
    critical, flagged = _critical_study(ct, tmp_path / "critical")
    pacs = start_pacs(fresh_dsn, tmp_path / "pacs", more_config=ROUTE, arrivals="direct")
    try:
        crit_id, crit_uid = _store(pacs, critical)
        # The CT's upper slices (the tumour of lung1 lies lower: its slices score critical).
        upper = [
            f for f in ct if int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) <= 24
        ]
        clean_id, clean_uid = _store(pacs, upper)
        with ConnectionPool(fresh_dsn, min_size=1, max_size=3) as pool:
            ctx = _ctx(pacs, pool)
            assert run_arrival(ctx, crit_id, STEPS, "direct") == "opened"
            assert run_arrival(ctx, clean_id, STEPS, "direct") == "opened"
            # Its own SR and KOS made the study change in the archive: nothing is done again.
            assert run_arrival(ctx, crit_id, STEPS, "direct") == "known"
        with psycopg.connect(fresh_dsn) as conn:
            lanes: dict[str, str] = dict(
                conn.execute("SELECT study_instance_uid, lane FROM study").fetchall()
            )
            decided: dict[str, Any] = {
                str(r[0]): r[1:]
                for r in conn.execute(
                    """SELECT study_instance_uid, state, lane, model_lane, quality, reasons,
                              flagged, sr_sop_instance_uid, kos_sop_instance_uid
                       FROM series_triage"""
                ).fetchall()
            }
            alerts = conn.execute(
                "SELECT study_instance_uid, category, payload->>'finding' FROM alert"
            ).fetchall()
        assert lanes == {crit_uid: "critical", clean_uid: "routine"}
        state, lane, model_lane, quality, reasons, got_flagged, sr_uid, kos_uid = decided[crit_uid]
        assert (state, lane, model_lane, quality) == ("decided", "critical", "critical", "complete")
        assert "model-critical" in reasons
        assert set(got_flagged) >= set(flagged)  # the slices with the finding, archive UIDs
        assert decided[clean_uid][:4] == ("decided", "routine", None, "complete")
        assert decided[clean_uid][6:] == (None, None)  # no SR, no KOS
        assert alerts == [(crit_uid, 1, "critical-finding")]

        # The SR and KOS are in the archive, in the study as it is there (not de-identified
        # again: the archive's UIDs), and valid.
        (sr,) = _objects(pacs, crit_id, "SR")
        (kos,) = _objects(pacs, crit_id, "KO")
        for data in (sr, kos):
            ds = pydicom.dcmread(io.BytesIO(data))
            assert ds.StudyInstanceUID == crit_uid
            assert ds.PatientID == pydicom.dcmread(critical[0]).PatientID
            errors, warnings = verify(dciodvfy, data, tmp_path)
            assert errors == []
            assert [w for w in warnings if not any(a.fullmatch(w.strip()) for a in ACCEPTED)] == []
        kos_ds = pydicom.dcmread(io.BytesIO(kos))
        assert {str(ds.SOPInstanceUID) for ds in (pydicom.dcmread(io.BytesIO(sr)), kos_ds)} == {
            sr_uid, kos_uid}  # fmt: skip
        referenced = {
            str(item.ReferencedSOPInstanceUID)
            for ref in kos_ds.CurrentRequestedProcedureEvidenceSequence
            for series in ref.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        }
        assert referenced == set(got_flagged)
        assert _objects(pacs, clean_id, "SR") == [] and _objects(pacs, clean_id, "KO") == []

        # Every step in the audit trail, under the archive's study UID.
        steps = [e.event.step.value for e in chained(fresh_dsn, study_uid=crit_uid)]
        assert {"triaged", "alert-raised", "results-stored"} <= set(steps)
        assert steps.count("results-stored") == 2
        clean_steps = [e.event.step.value for e in chained(fresh_dsn, study_uid=clean_uid)]
        assert "triaged" in clean_steps and "alert-raised" not in clean_steps
    finally:
        pacs.orthanc.stop()

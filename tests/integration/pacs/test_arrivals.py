"""A study stored into Orthanc directly gets its rows and analysis job: STABLE_STUDY is the hint
the plugin journals, the recorder defers the job, the job opens what analysis needs."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from dicom_nodes.audit_events import pipeline_sink
from dicom_nodes.pacs.arrivals import defer_arrival, run_arrival
from dicom_nodes.pipeline.analyse import Analysis
from tests.integration.pacs.conftest import Pacs, chained, recorder, start_pacs, upload, wait_for

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[2] / "data"
ROUTE = """
[[routes]]
name = "direct"
steps = ["analyse:chest-ct"]
"""


class _Ctx:
    def __init__(self, pacs: Pacs, pool: ConnectionPool) -> None:
        creds = pacs.users["service"]
        self.node = "node1"
        self.pool = pool
        self.audit = pipeline_sink("node1", "RADIOGATE")
        self.analysis = Analysis(pacs.orthanc.url, creds.user, creds.password, 60, 1, 0,
                                 "ct_ibsi", True)  # fmt: skip


def test_a_study_stored_directly_gets_its_analysis_job(fresh_dsn: str, tmp_path: Path) -> None:
    pacs = start_pacs(fresh_dsn, tmp_path / "pacs", more_config=ROUTE, arrivals="direct",
                      orthanc_extra={"StableAge": 1})  # fmt: skip
    try:
        with tarfile.open(DATA / "lung1_ct_dicom.tar.xz") as tar:
            tar.extractall(tmp_path / "ct", filter="data")
        files = sorted((tmp_path / "ct").rglob("*.dcm"))[:5]
        study_id = ""
        for f in files:
            study_id = upload(pacs, f)["ParentStudy"]
        wait_for(lambda: any(r["k"] == "stable-study" for r in pacs.journal_lines()),
                 timeout=30, what="STABLE_STUDY in the journal")  # fmt: skip
        steps = ["analyse:chest-ct"]

        def on_stable(conn: psycopg.Connection[Any], orthanc_id: str) -> None:
            defer_arrival(conn, "node1", orthanc_id, steps)

        recorder(pacs, on_stable=on_stable).record_once()
        with psycopg.connect(fresh_dsn) as conn:
            jobs = conn.execute(
                "SELECT task_name, args FROM procrastinate_jobs WHERE status = 'todo'"
            ).fetchall()
        assert ("radiogate.archive_arrival", {"node": "node1", "study": study_id,
                                              "steps": steps}) in jobs  # fmt: skip

        with ConnectionPool(fresh_dsn, min_size=1, max_size=2) as pool:
            ctx = _Ctx(pacs, pool)
            assert run_arrival(ctx, study_id, steps) == "opened"
            assert run_arrival(ctx, study_id, steps) == "known"  # once per study
        uid = pacs.call("service", f"/studies/{study_id}").json()["MainDicomTags"][
            "StudyInstanceUID"
        ]
        with psycopg.connect(fresh_dsn) as conn:
            assert conn.execute(
                "SELECT state, archive_study_uid, completed_by FROM study"
            ).fetchall() == [("complete", uid, "archive-arrival")]
            series = conn.execute("SELECT state, modality, instances FROM series").fetchall()
            assert series == [("complete", "CT", 5)]
            analyses = conn.execute("SELECT pipeline, state FROM series_analysis").fetchall()
            assert analyses == [("chest-ct", "waiting")]
            assert conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE task_name = "
                "'radiogate.analyse_series' AND status = 'todo'"
            ).fetchone() == (1,)
        steps_recorded = [e.event.step.value for e in chained(fresh_dsn, study_uid=uid)]
        assert "series-completed" in steps_recorded and "study-completed" in steps_recorded
        # The worklist shows it, with its analysis waiting.
        row = pacs.call("alice", "/radiogate/worklist").json()["studies"][0]
        assert row["study_uid"] == uid and row["analysis"] == {"waiting": 1}
        assert row["orthanc_id"] == study_id and row["modalities"] == ["CT"]
    finally:
        pacs.orthanc.stop()

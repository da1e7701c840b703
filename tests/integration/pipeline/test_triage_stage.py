"""Triage per series against a real PostgreSQL: completion signals, the rules' lane, data
quality, the study moved ahead, alerts, the triage SR and KOS recorded, late slices — with the
stage functions called directly (a node without processes; the model is tested with the real
one in test_triage_model.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from psycopg_pool import ConnectionPool

from config.alerts import AlertSettings
from config.routes import LaneRule, MatchSettings, PipelineSettings, RouteSettings
from config.triage import TriageSettings
from dicom_nodes.audit_events import pipeline_sink
from dicom_nodes.db.signals import PostgresSignals
from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.pipeline.route import route_round
from dicom_nodes.pipeline.triage import Triage, complete_series, triage_round
from dicom_nodes.spool.store import Spool
from tests.support.data import extract_ct
from tests.support.stages import FlakyDestination, Stage

pytestmark = pytest.mark.integration

STAT = LaneRule("critical", MatchSettings(tags={"RequestedProcedurePriority": ["STAT"]}))


@pytest.fixture
def stage(fresh_dsn: str, tmp_path: Path) -> Iterator[Stage]:
    spool = Spool(tmp_path / "spool", fsync=False)
    spool.prepare()
    dest = FlakyDestination("archive")
    pool = ConnectionPool(fresh_dsn, min_size=1, max_size=4, open=True)
    ctx = PipelineContext(
        node="node1",
        pool=pool,
        routes=[RouteSettings(name="ct", steps=["triage", "forward:archive"])],
        lane_rules=[STAT],
        destinations={"archive": dest},
        settings=PipelineSettings(batch_size=50, quiet_period=3600.0),
        audit=pipeline_sink("node1", "RADIOGATE"),
    )
    ctx.triage = Triage(
        TriageSettings(models=[], association_grace=0.0), AlertSettings(), (), None, spool,
    )  # fmt: skip
    yield Stage(ctx, spool, extract_ct(tmp_path / "ct"), dest, FlakyDestination("x"))
    pool.close()


def _stat_copies(stage: Stage, tmp_path: Path, count: int) -> list[Path]:
    """*count* slices of a new series and study whose request says STAT."""
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    out = []
    for index, path in enumerate(stage.files[:count]):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.RequestedProcedurePriority = "STAT"
        target = tmp_path / f"stat{index}.dcm"
        ds.save_as(target, enforce_file_format=True)
        out.append(target)
    return out


def _route_all(stage: Stage) -> None:
    while route_round(stage.ctx):
        pass


def _triage(stage: Stage) -> None:
    while triage_round(stage.ctx):
        pass


def _one(stage: Stage, sql: str, *params: Any) -> Any:
    rows = stage.q(sql, *params)
    assert len(rows) == 1, rows
    return rows[0]


def test_a_stat_series_is_critical_once_complete_and_its_study_moves_ahead(
    stage: Stage, tmp_path: Path
) -> None:
    routine = stage.receive(10)
    stat = stage.receive_paths(_stat_copies(stage, tmp_path, 6))
    _route_all(stage)
    # Nothing is released before the series is decided, though the archive confirmed it.
    for name in stage.ctx.destinations:
        from dicom_nodes.pipeline.forward import forward_round

        while forward_round(stage.ctx, name):
            pass
    assert set(stage.states(stat)) == {"routed"}
    assert set(stage.states(routine)) == {"routed"}
    assert complete_series(stage.ctx) == []  # quiet period not over, no other signal
    stage.q_exec("UPDATE series SET last_received_at = now() - interval '2 hours'")
    assert {by for _s, by in complete_series(stage.ctx)} == {"quiet-period"}
    _triage(stage)
    (series,) = {s for (s,) in stage.q("SELECT series_instance_uid FROM triage_instance "
                                       "WHERE sop_instance_uid = %s", stat[0])}  # fmt: skip
    lane, quality, reasons, sr, kos = _one(
        stage,
        "SELECT lane, quality, reasons, sr_sop_instance_uid, kos_sop_instance_uid "
        "FROM series_triage WHERE series_instance_uid = %s",
        series,
    )
    assert (lane, quality, reasons) == ("critical", "complete", ["rule-critical"])
    assert sr is not None and kos is None  # nothing flagged by a model: no key images
    # The SR is an instance received from this node, waiting to be routed like any other.
    state, calling, modality = _one(
        stage, "SELECT state, calling_ae, modality FROM ingest_instance "
        "WHERE sop_instance_uid = %s", sr)  # fmt: skip
    assert (state, calling, modality) == ("received", "RADIOGATE", "SR")
    # The decided series' instances are released; the study is critical; an alert is raised.
    assert set(stage.states(stat)) == {"released"}
    (study,) = _one(stage, "SELECT study_instance_uid FROM series WHERE series_instance_uid "
                    "= %s", series)  # fmt: skip
    assert _one(stage, "SELECT lane FROM study WHERE study_instance_uid = %s", study) == (
        "critical",
    )
    assert _one(stage, "SELECT category, payload->>'kind' FROM alert") == (1, "finding")
    steps = [s for (s,) in stage.q("SELECT step FROM audit_pending ORDER BY id")]
    assert steps.count("series-completed") == 2 and steps.count("triaged") == 2
    assert steps.count("results-stored") == 1 and steps.count("alert-raised") == 1
    # The SR is routed, in the critical lane.
    _route_all(stage)
    assert _one(stage, "SELECT lane_rank FROM forward_item WHERE sop_instance_uid = %s", sr) == (0,)


def test_the_triage_job_routes_and_sends_the_results_it_wrote_at_once(
    stage: Stage, tmp_path: Path, fresh_dsn: str
) -> None:
    from dicom_nodes.pipeline.worker import build_app
    from dicom_nodes.state.jobs import TRIAGE_TASK

    routine = stage.receive(3)
    stat = stage.receive_paths(_stat_copies(stage, tmp_path, 4))
    _route_all(stage)
    stage.q_exec("UPDATE series SET last_received_at = now() - interval '2 hours'")
    complete_series(stage.ctx)
    late = stage.receive(2)  # a routine instance waiting: not for the triage job to route
    app = build_app(fresh_dsn, stage.ctx)
    app.tasks[TRIAGE_TASK](node="node1")
    (sr,) = _one(stage, "SELECT sr_sop_instance_uid FROM series_triage WHERE lane = 'critical'")
    # Routed and sent by the triage job itself, not left for the routing and forwarding jobs.
    assert _one(stage, "SELECT state FROM forward_item WHERE sop_instance_uid = %s", sr)[0] in (
        "sent", "confirmed")  # fmt: skip
    assert stat
    assert set(stage.states(late)) == {"received"}
    assert routine


def test_signals_complete_a_series_early(stage: Stage, tmp_path: Path) -> None:
    signals = PostgresSignals(stage.ctx.pool, "node1")
    assoc = uuid.uuid4()
    first = stage.receive(5, association=assoc)
    second = stage.receive(5)
    _route_all(stage)
    assert complete_series(stage.ctx) == []
    # The sending association is released: the series is complete (grace 0 s here).
    signals.association_ended(assoc, released=True)
    assert complete_series(stage.ctx) == []  # the other association is still open
    mpps = pydicom.uid.generate_uid()
    (series,) = {s for (s,) in stage.q("SELECT series_instance_uid FROM series")}
    assert signals.mpps_created(mpps, "IN PROGRESS", [], "CT1")
    assert not signals.mpps_created(mpps, "IN PROGRESS", [], "CT1")  # duplicate
    assert signals.mpps_set(mpps, None, [series]) == "IN PROGRESS"
    assert complete_series(stage.ctx) == []  # still in progress
    assert signals.mpps_set(mpps, "COMPLETED", []) == "IN PROGRESS"
    assert signals.mpps_set(mpps, "DISCONTINUED", []) == "COMPLETED"  # no longer updatable
    assert complete_series(stage.ctx) == [(series, "mpps")]
    assert first and second


def test_association_release_completes_a_series(stage: Stage) -> None:
    signals = PostgresSignals(stage.ctx.pool, "node1")
    assoc = uuid.uuid4()
    stage.receive(8, association=assoc)
    _route_all(stage)
    assert complete_series(stage.ctx) == []
    signals.association_ended(assoc, released=False)  # aborted: not a signal
    assert complete_series(stage.ctx) == []
    stage.q_exec("DELETE FROM association_end")
    signals.association_ended(assoc, released=True)
    (series,) = {s for (s,) in stage.q("SELECT series_instance_uid FROM series")}
    assert complete_series(stage.ctx) == [(series, "association-released")]


def test_a_series_with_unrouted_instances_is_not_complete(stage: Stage) -> None:
    """Released, quiet, but a slice still waits to be routed: deciding now would decide twice."""
    signals = PostgresSignals(stage.ctx.pool, "node1")
    assoc = uuid.uuid4()
    stage.receive(4, association=assoc)
    _route_all(stage)
    late = stage.receive(4, association=assoc)  # received, not routed yet
    signals.association_ended(assoc, released=True)
    stage.q_exec("UPDATE series SET last_received_at = now() - interval '2 hours'")
    assert complete_series(stage.ctx) == []
    assert set(stage.states(late)) == {"received"}
    _route_all(stage)
    (series,) = {s for (s,) in stage.q("SELECT series_instance_uid FROM series")}
    assert complete_series(stage.ctx) == [(series, "association-released")]
    _triage(stage)
    steps = [s for (s,) in stage.q("SELECT step FROM audit_pending ORDER BY id")]
    assert "series-reopened" not in steps and steps.count("series-completed") == 1


def test_an_instance_stuck_unrouted_past_the_quiet_period_does_not_hold_its_series(
    stage: Stage,
) -> None:
    stage.receive(4)
    _route_all(stage)
    stuck = stage.receive(1)
    stage.q_exec("UPDATE series SET last_received_at = now() - interval '2 hours'")
    assert complete_series(stage.ctx) == []  # a slice still waits to be routed
    stage.q_exec("UPDATE ingest_instance SET received_at = now() - interval '2 hours' "
                 "WHERE sop_instance_uid = %s", stuck[0])  # fmt: skip
    assert [by for _s, by in complete_series(stage.ctx)] == ["quiet-period"]


def test_a_routing_job_that_finds_its_instances_held_routes_again_shortly(
    stage: Stage, fresh_dsn: str
) -> None:
    import psycopg

    from dicom_nodes.pipeline.route import route_again_if_waiting

    (uid,) = stage.receive(1)
    stage.q_exec("DELETE FROM procrastinate_jobs")  # the receipt's own routing job
    with psycopg.connect(fresh_dsn) as other, other.transaction():
        other.execute("SELECT 1 FROM ingest_instance WHERE sop_instance_uid = %s FOR UPDATE",
                      (uid,))  # fmt: skip
        assert route_round(stage.ctx) == 0  # held by another round
        assert route_again_if_waiting(stage.ctx)
    (scheduled,) = _one(stage, "SELECT scheduled_at > now() FROM procrastinate_jobs "
                        "WHERE task_name = 'radiogate.route_received'")  # fmt: skip
    assert scheduled
    _route_all(stage)
    assert not route_again_if_waiting(stage.ctx)  # nothing waits: no job


def test_an_incomplete_series_is_flagged_alerted_and_archived(stage: Stage) -> None:
    # The modality's transmission lost slice 11 of 20.
    stage.receive_paths(stage.files[:10] + stage.files[11:20])
    _route_all(stage)
    stage.q_exec("UPDATE series SET last_received_at = now() - interval '2 hours'")
    complete_series(stage.ctx)
    _triage(stage)
    quality, reasons = _one(stage, "SELECT quality, reasons FROM series_triage")
    assert quality == "incomplete"
    assert reasons == ["missing-instances", "uneven-spacing"]
    assert _one(stage, "SELECT category, payload->>'finding' FROM alert") == (
        3, "missing-instances",
    )  # fmt: skip


def test_a_late_slice_reopens_and_the_series_is_decided_again(stage: Stage) -> None:
    stage.receive(6)
    _route_all(stage)
    stage.q_exec("UPDATE series SET last_received_at = now() - interval '2 hours'")
    complete_series(stage.ctx)
    _triage(stage)
    assert _one(stage, "SELECT state, decisions FROM series_triage") == ("decided", 1)
    stage.receive(1)  # the next slice of the same series, late
    _route_all(stage)
    assert _one(stage, "SELECT state, instances, increments FROM series") == (
        "receiving", 7, 1,
    )  # fmt: skip
    assert _one(stage, "SELECT state FROM series_triage") == ("pending",)
    stage.q_exec("UPDATE series SET last_received_at = now() - interval '2 hours'")
    complete_series(stage.ctx)
    _triage(stage)
    assert _one(stage, "SELECT state, decisions FROM series_triage") == ("decided", 2)
    steps = [s for (s,) in stage.q("SELECT step FROM audit_pending ORDER BY id")]
    assert steps.count("series-reopened") == 1 and steps.count("triage-reopened") == 1


def test_a_redecision_after_its_flagged_slices_were_released_uses_the_remaining_slices(
    stage: Stage,
) -> None:
    """A model flagged slices that are no longer spooled (released after an earlier decision):
    the series' slices still spooled stand in for the SR's patient, study and evidence, and no
    key-object selection is made for images that are not there."""
    import datetime

    from dicom_nodes.pipeline.results import TriageOutcome, write_triage_results
    from dicom_nodes.state import Lane

    uids = stage.receive(5)
    _route_all(stage)
    released = uids[:2]
    stage.q_exec("UPDATE ingest_instance SET state = 'released' WHERE sop_instance_uid = ANY(%s)",
                 released)  # fmt: skip
    (series,) = {s for (s,) in stage.q("SELECT series_instance_uid FROM triage_instance")}
    outcome = TriageOutcome(
        series, Lane.CRITICAL, 0.93,
        {"name": "demo-triage", "version": "1", "blake3": "ab" * 32, "demonstration": "true"},
        ["model-critical"], released, "rules", datetime.datetime.now(datetime.UTC),
    )  # fmt: skip
    assert stage.ctx.triage is not None and stage.ctx.triage.spool is not None
    with stage.ctx.pool.connection() as conn:
        sr_uid, kos_uid = write_triage_results(
            conn, stage.ctx.audit, stage.ctx.triage.spool, node="node1",
            ae_title="RADIOGATE", outcome=outcome,
        )  # fmt: skip
    assert sr_uid is not None and kos_uid is None
    (path,) = stage.q("SELECT spool_path FROM ingest_instance WHERE sop_instance_uid = %s", sr_uid)
    sr = pydicom.dcmread(path[0])
    spooled = pydicom.dcmread(
        stage.q("SELECT spool_path FROM ingest_instance WHERE sop_instance_uid = %s", uids[2])[0][0]
    )
    assert (sr.StudyInstanceUID, sr.PatientID) == (spooled.StudyInstanceUID, spooled.PatientID)
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for ser in study.ReferencedSeriesSequence
        for ref in ser.ReferencedSOPSequence
    }
    assert evidence == set(uids[2:])

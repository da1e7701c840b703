"""Stage 7, analyse: ``analyse:<pipeline>`` steps, run once a series is complete and archived.

A routed series whose route names a pipeline gets a ``waiting`` analysis; :func:`analyse_round`
takes the most urgent one whose series is complete and fully in the archive (none of its instances
waits for a destination), marks it ``running`` and runs the pipeline in a separate process
(:func:`_job`): bounded by ``analysis.time_limit``, at ``analysis.nice`` and in the idle scheduling
class (``analysis.idle``, :mod:`dicom_nodes.pipeline.priority`), on at most ``analysis.cpus`` CPUs
with ``analysis.threads`` threads per numerical library
(:func:`dicom_nodes.pipeline.pools.enter_analysis_pool`), with its memory returned when it ends. The
job is on the node's analysis queue: ``radiogate run`` runs it in a worker of its own
(:mod:`dicom_nodes.pipeline.pools`). The process reads the de-identified series back from the
archive (:mod:`dicom_nodes.archive`; any worker can), plus any SEG or RTSTRUCT of the study that
outlines lesions, and returns the result objects and feature rows. Then, in one transaction, the SEG
and SR are stored into the archive (directly: they carry the archive's UIDs already), the feature
values into the feature store (``feature_value``) and the report's rows into the feature table files
(``analysis.export_dir``: :mod:`dicom_nodes.features.export`), and the analysis is ``done`` — or
``failed`` with a short reason (the series cannot make a volume, the archive is down, the time
limit).
``radiogate analyse STUDY_UID`` runs a study's analyses again (``requested``).

=============  =====================================================================
pipeline       what it does
=============  =====================================================================
``chest-ct``   lungs (right, left), lesions from a SEG/RTSTRUCT of the study, IBSI
               radiomics and lung measures → SEG + TID 1500 SR
               (:mod:`analysis.pipelines.chest_ct`)
=============  =====================================================================
"""

from __future__ import annotations

import datetime
import io
import logging
import multiprocessing
import os
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.pipeline.door import POLL, DoorGuard
from dicom_nodes.pipeline.pools import enter_analysis_pool
from dicom_nodes.state import Change
from dicom_nodes.state import repository as repo
from dicom_nodes.state.model import ANALYSIS, AnalysisEvent

__all__ = ["PIPELINES", "Analysis", "analyse_round", "request_analysis"]

LOGGER = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]
PIPELINES = ("chest-ct",)


@dataclass(frozen=True)
class Analysis:
    """What an analysis job runs with (picklable: it crosses into the job's process)."""

    archive_url: str
    user: str | None
    password: str | None
    time_limit: float
    processes: int
    nice: int
    parameters: str
    replace_previous: bool
    export_dir: str = ""
    """Absolute directory of the feature table files (empty: none)."""
    idle: bool = True
    """The job's process runs in the idle scheduling class (:mod:`.priority`)."""
    cpus: int = 0
    """CPUs the job's process may run on (:func:`.pools.limit_cpus`; 0: any)."""
    threads: int = 0
    """Threads per numerical library in the job's process (:func:`.pools.bound_threads`; 0:
    the libraries' default)."""
    door_ports: tuple[int, ...] = ()
    """The receiver's ports: while one has an association open the job is held
    (:mod:`.door`); empty: never held."""
    resume_after: float = 2.0
    max_pause: float = 600.0

    @classmethod
    def from_settings(cls, settings: Any) -> Analysis:
        from config import data_path
        from config.analysis import PreviousResults
        from dicom_nodes.services.credentials import load_credentials

        a = settings.analysis
        url = a.archive_url or f"http://{settings.orthanc.host}:{settings.orthanc.http_port}"
        path = data_path(settings, a.credentials_file or settings.orthanc.credentials_file)
        creds = load_credentials(path) if path.exists() else None
        export = str(data_path(settings, a.export_dir)) if a.export_dir else ""
        return cls(url, creds.user if creds else None, creds.password if creds else None,
                   a.time_limit, a.processes, a.nice, a.parameters,
                   a.previous is PreviousResults.REPLACE, export, a.idle, a.cpus,
                   a.threads, (settings.scp.port,) if a.pause_while_receiving else (),
                   a.resume_after, a.max_pause)  # fmt: skip


@dataclass(frozen=True)
class _Claimed:
    analysis_id: str
    series_uid: str
    study_uid: str
    pipeline: str
    archive_series_uid: str
    archive_study_uid: str
    runs: int
    previous: tuple[str | None, str | None]


def _claim(conn: Conn, node: str) -> _Claimed | None:
    row = conn.execute(
        """SELECT a.analysis_id, a.series_instance_uid, a.study_instance_uid, a.pipeline,
                  coalesce(s.archive_series_uid, s.series_instance_uid),
                  coalesce(st.archive_study_uid, st.study_instance_uid), a.runs,
                  a.seg_series_uid, a.sr_series_uid
           FROM series_analysis a
           JOIN series s USING (series_instance_uid)
           JOIN study st ON st.study_instance_uid = a.study_instance_uid
           WHERE a.node = %s AND a.state = 'waiting' AND s.state = 'complete'
             AND NOT EXISTS (SELECT 1 FROM ingest_instance i
                             WHERE i.series_instance_uid = a.series_instance_uid
                               AND i.state IN ('received', 'routed'))
           ORDER BY CASE st.lane WHEN 'critical' THEN 0 WHEN 'urgent' THEN 1 ELSE 2 END,
                    a.created_at
           LIMIT 1 FOR UPDATE OF a SKIP LOCKED""",
        (node,),
    ).fetchone()
    if row is None:
        return None
    ids = [str(v) for v in row[:6]]
    return _Claimed(ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], int(row[6]),
                    (row[7], row[8]))  # fmt: skip


def analyse_round(ctx: PipelineContext) -> int:
    """Run one ready analysis; returns 1 when one ran (done or failed), else 0."""
    analysis = ctx.analysis
    if analysis is None:
        return 0
    with ctx.pool.connection() as conn, conn.transaction():
        claimed = _claim(conn, ctx.node)
        if claimed is None:
            return 0
        repo.apply(conn, ctx.audit, ANALYSIS, AnalysisEvent.STARTED,
                   [Change((claimed.analysis_id,), {"reason": claimed.pipeline})])  # fmt: skip
    LOGGER.info("analysing series %s with %s", claimed.series_uid, claimed.pipeline)
    try:
        output = _run_in_process(analysis, claimed)
        error = ""
    except _JobFailed as exc:
        output, error = None, exc.reason
    with ctx.pool.connection() as conn, conn.transaction():
        if output is not None:
            try:
                _store(conn, ctx, analysis, claimed, output)
            except Exception as exc:
                LOGGER.warning("storing the results of %s failed: %s", claimed.analysis_id,
                               type(exc).__name__)  # fmt: skip
                output, error = None, "archive-store-failed"
        if output is None:
            repo.apply(conn, ctx.audit, ANALYSIS, AnalysisEvent.FAILED,
                       [Change((claimed.analysis_id,), {"reason": error})],
                       values={"error": [error]})  # fmt: skip
            LOGGER.warning("analysis %s failed: %s", claimed.analysis_id, error)
        else:
            repo.apply(conn, ctx.audit, ANALYSIS, AnalysisEvent.FINISHED,
                       [Change((claimed.analysis_id,), {"reason": claimed.pipeline})])  # fmt: skip
    return 1


def _store(
    conn: Conn, ctx: PipelineContext, analysis: Analysis, claimed: _Claimed, output: dict[str, Any]
) -> None:
    """Results into the archive (replacing the earlier run's series if so configured) and the
    feature store; called in the transaction that marks the analysis done."""
    from audit import Step
    from dicom_nodes.archive import OrthancArchive
    from dicom_nodes.features import export_study
    from dicom_nodes.state.repository import AuditEntry

    archive = OrthancArchive(analysis.archive_url, analysis.user, analysis.password)
    if analysis.replace_previous:
        for old in claimed.previous:
            if old and old not in (output["seg_series"], output["sr_series"]):
                archive.delete_series(old)
    for key in ("seg", "sr"):
        archive.store(output[key])
    run = claimed.runs + 1
    conn.cursor().executemany(
        """INSERT INTO feature_value (analysis_id, run, study_instance_uid, series_instance_uid,
               segment_number, segment_label, tracking_uid, feature, code_value, code_scheme,
               code_meaning, unit, derivation, value, imputed, missing_reason, parameter_hash,
               pyradiomics_version, seg_sop_instance_uid, sr_sop_instance_uid)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                   %s)
           ON CONFLICT DO NOTHING""",
        [(claimed.analysis_id, run, claimed.study_uid, claimed.series_uid, *r,
          output["parameter_hash"], output["pyradiomics_version"], output["seg_uid"],
          output["sr_uid"]) for r in output["rows"]],
    )  # fmt: skip
    repo.set_analysis_results(
        conn, claimed.analysis_id,
        seg=(output["seg_series"], output["seg_uid"]), sr=(output["sr_series"], output["sr_uid"]),
        parameter_hash=output["parameter_hash"], pyradiomics_version=output["pyradiomics_version"],
    )  # fmt: skip
    if analysis.export_dir and output["table"]:
        today = datetime.datetime.now(datetime.UTC).date()
        export_study(output["table"], Path(analysis.export_dir), today)
    details = {"study_instance_uid": claimed.study_uid, "reason": f"analysis-{claimed.pipeline}"}
    ctx.audit(conn, [AuditEntry(Step.RESULTS_STORED, details)])


class _JobFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _run_in_process(analysis: Analysis, claimed: _Claimed) -> dict[str, Any]:
    """Run :func:`_job` in a fresh process, at most ``time_limit`` seconds of its own (held
    while the receiver has an association open: :mod:`.door`)."""
    context = multiprocessing.get_context("spawn")
    answers: multiprocessing.Queue[tuple[str, Any]] = context.Queue()
    computing = context.Event()  # the series is read: holding it no longer stalls a download
    # Not daemonic: a daemonic process may not start the pyradiomics processes
    # (analysis.processes > 1); it is killed in the ``finally`` below whatever happens.
    process = context.Process(
        target=_job, args=(analysis, claimed, answers, computing), name="radiogate-analysis",
        daemon=False,
    )  # fmt: skip
    guard = (
        DoorGuard(analysis.door_ports, analysis.resume_after, analysis.max_pause)
        if analysis.door_ports
        else None
    )
    if guard is not None:
        guard.wait_quiet()  # start (spawn, imports, download) while no modality sends
    process.start()
    started = time.monotonic()
    waited = guard.held if guard is not None else 0.0
    try:
        while True:
            try:
                kind, value = answers.get(timeout=POLL if guard is not None else 1.0)
                break
            except queue.Empty:
                pass
            held = guard.held_now() - waited if guard is not None else 0.0
            if time.monotonic() - started - held > analysis.time_limit:
                raise _JobFailed("time-limit") from None
            if guard is not None and process.pid is not None and computing.is_set():
                guard.tick(process.pid)
    finally:
        if guard is not None and process.pid is not None:
            guard.release(process.pid)
            if guard.holds:
                LOGGER.info("analysis %s held %.1f s (%d times) while the receiver was busy",
                            claimed.analysis_id, guard.held, guard.holds)  # fmt: skip
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
    if kind == "ok":
        assert isinstance(value, dict)
        return value
    raise _JobFailed(str(value))


def _job(analysis: Analysis, claimed: _Claimed, answers: Any, computing: Any = None) -> None:
    """The analysis process: read the series back, analyse, return bytes and rows; *computing*
    (an event) is set once the series is read (from then on the job may be held)."""
    try:
        # Niceness analysis.nice whatever the worker's (an analysis worker is there already).
        nice = max(0, analysis.nice - os.getpriority(os.PRIO_PROCESS, 0))
        enter_analysis_pool(nice, analysis.idle, analysis.cpus, analysis.threads)
        answers.put(("ok", _analyse(analysis, claimed, computing)))
    except _JobFailed as exc:
        answers.put(("failed", exc.reason))
    except Exception as exc:  # reported as a reason code; the worker goes on
        LOGGER.exception("analysis of %s failed", claimed.analysis_id)
        answers.put(("failed", f"error-{type(exc).__name__.lower()}"[:64]))


def _analyse(analysis: Analysis, claimed: _Claimed, computing: Any = None) -> dict[str, Any]:
    import pydicom

    from analysis.pipelines.chest_ct import AnalysisRefused, analyse_chest_ct
    from analysis.radiomics.params import load_parameters
    from analysis.results import Provenance, to_bytes
    from dicom_nodes.archive import ArchiveError, OrthancArchive

    if claimed.pipeline not in PIPELINES:
        raise _JobFailed("unknown-pipeline")
    archive = OrthancArchive(analysis.archive_url, analysis.user, analysis.password)
    try:
        files = archive.series_files(claimed.archive_series_uid)
        others = [s for s in archive.study_series(claimed.archive_study_uid)
                  if s.modality in ("SEG", "RTSTRUCT")
                  and not s.description.startswith("Radiogate")]  # fmt: skip
        outlines = [pydicom.dcmread(io.BytesIO(b)) for s in others
                    for b in archive.series_files(s.series_uid)]  # fmt: skip
    except ArchiveError as exc:
        raise _JobFailed("archive-unavailable") from exc
    if not files:
        raise _JobFailed("series-not-in-archive")
    if computing is not None:  # downloaded: from here on the job may be held
        computing.set()
    source = []
    while files:  # each file's bytes go as soon as they are parsed
        source.append(pydicom.dcmread(io.BytesIO(files.pop(0))))
    lesions = _referencing(outlines, claimed.archive_series_uid)
    try:
        result = analyse_chest_ct(
            source, params=load_parameters(analysis.parameters), lesions=lesions,
            provenance=Provenance(software_version=_version()), processes=analysis.processes,
            release_pixels=True,
        )  # fmt: skip
    except AnalysisRefused as exc:
        raise _JobFailed(("refused-" + "-".join(exc.reasons))[:64].replace("_", "-")) from exc
    rows = [(r.segment_number, r.segment_label, r.tracking_uid, r.feature, r.concept.value,
             r.concept.scheme_designator, r.concept.meaning, r.unit.value,
             None if r.derivation is None else r.derivation.meaning, r.value, r.imputed,
             r.missing_reason) for r in result.rows]  # fmt: skip
    return {
        "seg": to_bytes(result.seg), "sr": to_bytes(result.sr),
        "seg_uid": str(result.seg.SOPInstanceUID), "sr_uid": str(result.sr.SOPInstanceUID),
        "seg_series": str(result.seg.SeriesInstanceUID),
        "sr_series": str(result.sr.SeriesInstanceUID),
        "rows": rows, "table": list(result.table), "parameter_hash": result.parameter_hash,
        "pyradiomics_version": result.pyradiomics_version,
    }  # fmt: skip


def _referencing(outlines: Sequence[Any], series_uid: str) -> list[Any]:
    """The SEG / RTSTRUCT objects that outline images of *series_uid*."""
    out = []
    for ds in outlines:
        refs = {str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])}
        for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
            for study in frame.get("RTReferencedStudySequence", []):
                refs |= {
                    str(s.SeriesInstanceUID) for s in study.get("RTReferencedSeriesSequence", [])
                }
        if series_uid in refs:
            out.append(ds)
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("radiogate")
    except PackageNotFoundError:  # pragma: no cover
        return "0"


def request_analysis(
    conn: Conn, audit: repo.AuditSink, study_uid: str, *, pipeline: str, node: str, user: str
) -> int:
    """``radiogate analyse``: run every analysis of the study again, or start *pipeline* on
    its CT series when none exists yet; returns how many were requested."""
    from dicom_nodes.state.jobs import defer_analyse

    with conn.transaction():
        rows = conn.execute(
            """SELECT analysis_id, state FROM series_analysis WHERE study_instance_uid = %s
               ORDER BY analysis_id FOR UPDATE""",
            (study_uid,),
        ).fetchall()
        if not rows:
            series = conn.execute(
                """SELECT series_instance_uid FROM series WHERE study_instance_uid = %s
                   AND modality = 'CT'""",
                (study_uid,),
            ).fetchall()
            repo.open_analyses(conn, [(str(s[0]), study_uid, node, pipeline) for s in series])
            count = len(series)
        else:
            again = [str(a) for a, state in rows if state in ("done", "failed")]
            repo.apply(
                conn, audit, ANALYSIS, AnalysisEvent.REQUESTED,
                [Change((a,), {"reason": "admin-request"}) for a in again], user=user,
            )  # fmt: skip
            count = len(again) + sum(1 for _a, state in rows if state == "waiting")
        if count:
            defer_analyse(conn, node)
    return count

"""Studies stored into the archive directly (not through the SCP): their jobs.

Orthanc's ``STABLE_STUDY`` change is only a hint: the plugin journals it, the recorder defers
one ``radiogate.archive_arrival`` job per study (:func:`defer_arrival`, in the transaction that
advances the journal), and the job queue is the record. The job (:func:`arrival_round`) reads
the study's series from the archive and, when ``pacs.archive_arrivals`` names a route, creates
what the later stages need, through the state repository and with their audit events:

* the ``study`` row (under its archive UID; ``study-rule`` completes it: ``archive-arrival``);
* one ``series`` row per series, complete at once (the archive says the study is stable);
* for each ``analyse:<pipeline>`` step of the route, a ``waiting`` analysis of each CT series,
  and the analysis job (:mod:`dicom_nodes.pipeline.analyse` reads the series from the
  archive, as it does for every study).

A study Radiogate already knows (it came through the SCP, or it is Radiogate's own results)
is left alone; so are series Radiogate wrote (SR, SEG, KO, or a description starting with
"Radiogate"). Model triage needs the received files (:mod:`dicom_nodes.pipeline.triage`
scores slices as they are routed), so a study stored directly keeps the routine lane.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from dicom_nodes.state import SERIES, STUDY, Change, SeriesEvent, StudyEvent
from dicom_nodes.state import repository as repo
from dicom_nodes.state.jobs import defer_analyse, defer_job

__all__ = ["ARRIVAL_PRIORITY", "ARRIVAL_TASK", "ArchiveStudy", "arrival_round", "defer_arrival"]

LOGGER = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]
ARRIVAL_TASK = "radiogate.archive_arrival"
ARRIVAL_PRIORITY = 20
_OWN_MODALITIES = frozenset({"SR", "SEG", "KO"})


def defer_arrival(conn: Conn, node: str, orthanc_id: str, steps: list[str]) -> bool:
    """The job of a study that became stable in the archive (at most one waiting per study);
    *steps* are the route's (the job's record of what to do)."""
    lock = f"arrival:{node}:{orthanc_id}"
    args = {"node": node, "study": orthanc_id, "steps": steps}
    return defer_job(conn, ARRIVAL_TASK, node, args, lock_key=lock, priority=ARRIVAL_PRIORITY)


@dataclass(frozen=True)
class ArchiveSeries:
    uid: str
    modality: str
    description: str
    instances: int


@dataclass(frozen=True)
class ArchiveStudy:
    uid: str
    series: tuple[ArchiveSeries, ...]

    @classmethod
    def read(cls, get_json: Any, orthanc_id: str) -> ArchiveStudy | None:
        """The study's UID and series from Orthanc's REST API (None: no longer there)."""
        study = get_json(f"/studies/{orthanc_id}")
        if study is None:
            return None
        series = get_json(f"/studies/{orthanc_id}/series") or []
        return cls(
            str(study["MainDicomTags"]["StudyInstanceUID"]),
            tuple(
                ArchiveSeries(
                    str(s["MainDicomTags"]["SeriesInstanceUID"]),
                    str(s["MainDicomTags"].get("Modality", "")),
                    str(s["MainDicomTags"].get("SeriesDescription", "")),
                    len(s.get("Instances", [])),
                )
                for s in series
            ),
        )


def arrival_round(
    conn: Conn, audit: repo.AuditSink, node: str, study: ArchiveStudy, steps: tuple[str, ...]
) -> str:
    """Create the rows and jobs of a study stored directly; returns what was done (a code)."""
    kept = [
        s for s in study.series
        if s.modality not in _OWN_MODALITIES and not s.description.startswith("Radiogate")
    ]  # fmt: skip
    if not kept:
        return "nothing-to-do"
    with conn.transaction():
        if not repo.open_archive_study(conn, study.uid):
            return "known"
        now = dt.datetime.now(dt.UTC)
        repo.touch_series(conn, audit, [
            repo.SeriesSeen(s.uid, study.uid, node, s.modality, s.instances, now) for s in kept
        ])  # fmt: skip
        repo.set_archive_uids(conn, studies={}, series={s.uid: s.uid for s in kept})
        reason = {"reason": "archive-arrival"}
        repo.apply(conn, audit, SERIES, SeriesEvent.COMPLETED,
                   [Change((s.uid,), reason) for s in kept],
                   values={"by": ["archive-arrival"] * len(kept)})  # fmt: skip
        repo.apply(conn, audit, STUDY, StudyEvent.STUDY_RULE, [Change((study.uid,), reason)],
                   values={"by": ["archive-arrival"]})  # fmt: skip
        pipelines = [st.partition(":")[2] for st in steps if st.startswith("analyse:")]
        rows = [(s.uid, study.uid, node, p) for p in pipelines for s in kept
                if s.modality == "CT"]  # fmt: skip
        repo.open_analyses(conn, rows)
        if rows:
            defer_analyse(conn, node)
    LOGGER.info("study %s stored directly into the archive: %d series, %d analyses",
                study.uid, len(kept), len(rows))  # fmt: skip
    return "opened"


def run_arrival(ctx: Any, orthanc_id: str, steps: list[str]) -> str:
    """The ``radiogate.archive_arrival`` task: read the study from the archive, open its rows.
    Raises when the archive cannot be read (procrastinate retries the job)."""
    import json
    import urllib.error
    import urllib.request

    from dicom_nodes.services.credentials import HttpCredentials

    a = ctx.analysis
    auth = HttpCredentials(a.user, a.password).authorization if a.user and a.password else None

    def get_json(path: str) -> Any:
        req = urllib.request.Request(a.archive_url + path)  # noqa: S310 - the configured archive
        if auth:
            req.add_header("Authorization", auth)
        try:
            with urllib.request.urlopen(req, timeout=30) as rsp:  # noqa: S310
                return json.loads(rsp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    study = ArchiveStudy.read(get_json, orthanc_id)
    if study is None:
        return "gone"
    with ctx.pool.connection() as conn:
        return arrival_round(conn, ctx.audit, ctx.node, study, tuple(steps))

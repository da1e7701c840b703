"""Studies stored into the archive directly (not through the SCP): their jobs.

Orthanc's ``STABLE_STUDY`` change is only a hint: the plugin journals it, the recorder defers
one ``radiogate.archive_arrival`` job per study (:func:`defer_arrival`, in the transaction that
advances the journal), and the job queue is the record. The job (:func:`arrival_round`) reads
the study's series from the archive and, when ``pacs.archive_arrivals`` names a route, creates
what the later stages need, through the state repository and with their audit events:

* the ``study`` row (under its archive UID; ``study-rule`` completes it: ``archive-arrival``)
  with the lane the route and the lane rules give (:func:`dicom_nodes.pipeline.routes.lane_for`
  on each series' first instance; no AE titles, as it did not come through the SCP);
* one ``series`` row per series, complete at once (the archive says the study is stable);
* for a ``triage`` step, the triage of each image series as for a received one
  (:mod:`dicom_nodes.pipeline.archive_triage`: its instances read from the archive and scored
  before the transaction; decided, alerted and its SR and KOS stored into the archive in it);
* for each ``analyse:<pipeline>`` step of the route, a ``waiting`` analysis of each CT series,
  and the analysis job (:mod:`dicom_nodes.pipeline.analyse` reads the series from the
  archive, as it does for every study).

A study Radiogate already knows (it came through the SCP, or it is Radiogate's own results)
is left alone; so are series Radiogate wrote (SR, SEG, KO, or a description starting with
"Radiogate").
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from dicom_nodes.pipeline.routes import Facts
from dicom_nodes.state import SERIES, STUDY, Change, Lane, SeriesEvent, StudyEvent
from dicom_nodes.state import repository as repo
from dicom_nodes.state.jobs import defer_analyse, defer_job

__all__ = [
    "ARRIVAL_PRIORITY",
    "ARRIVAL_TASK",
    "ArchiveStudy",
    "arrival_round",
    "defer_arrival",
    "kept_series",
]

LOGGER = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]
ARRIVAL_TASK = "radiogate.archive_arrival"
ARRIVAL_PRIORITY = 20
_OWN_MODALITIES = frozenset({"SR", "SEG", "KO"})


def defer_arrival(
    conn: Conn, node: str, orthanc_id: str, steps: list[str], route: str = ""
) -> bool:
    """The job of a study that became stable in the archive (at most one waiting per study);
    *route* and its *steps* are the job's record of what to do."""
    lock = f"arrival:{node}:{orthanc_id}"
    args = {"node": node, "study": orthanc_id, "steps": steps, "route": route}
    return defer_job(conn, ARRIVAL_TASK, node, args, lock_key=lock, priority=ARRIVAL_PRIORITY)


@dataclass(frozen=True)
class ArchiveSeries:
    uid: str
    modality: str
    description: str
    instances: int
    facts: Facts = field(default_factory=Facts)
    """What lane rules look at, from the series' first instance (no AE titles: it did not
    arrive over DICOM through Radiogate)."""


def _key(name: str) -> str:
    """Orthanc's ``gggg,eeee`` key of an attribute named by keyword or tag."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.tag import Tag

    text = name.strip().strip("()").replace(",", "")
    if len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text):
        tag = Tag(int(text[:4], 16), int(text[4:], 16))
    else:
        number = tag_for_keyword(name.strip())
        if number is None:
            return ""
        tag = Tag(number)
    return f"{tag.group:04x},{tag.element:04x}"


def _facts(tags: Mapping[str, Any], names: Sequence[str]) -> Facts:
    """Facts from Orthanc's ``/instances/{id}/tags?short`` (sequences are not matched)."""
    values: dict[str, str] = {}
    for name in names:
        value = tags.get(_key(name))
        if isinstance(value, str):
            values[name] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            values[name] = "\\".join(value)
    return Facts(modality=str(tags.get("0008,0060", "")),
                 sop_class_uid=str(tags.get("0008,0016", "")), tags=values)  # fmt: skip


@dataclass(frozen=True)
class ArchiveStudy:
    uid: str
    series: tuple[ArchiveSeries, ...]

    @classmethod
    def read(
        cls, get_json: Any, orthanc_id: str, tag_names: Sequence[str] = ()
    ) -> ArchiveStudy | None:
        """The study's UID and series from Orthanc's REST API (None: no longer there), with
        the facts of each series' first instance."""
        study = get_json(f"/studies/{orthanc_id}")
        if study is None:
            return None
        found = []
        for s in get_json(f"/studies/{orthanc_id}/series") or []:
            first = (s.get("Instances") or [None])[0]
            tags = get_json(f"/instances/{first}/tags?short") if first else None
            found.append(ArchiveSeries(
                str(s["MainDicomTags"]["SeriesInstanceUID"]),
                str(s["MainDicomTags"].get("Modality", "")),
                str(s["MainDicomTags"].get("SeriesDescription", "")),
                len(s.get("Instances", [])),
                _facts(tags or {}, tag_names),
            ))  # fmt: skip
        return cls(str(study["MainDicomTags"]["StudyInstanceUID"]), tuple(found))


def kept_series(study: ArchiveStudy) -> list[ArchiveSeries]:
    """The study's series Radiogate did not write itself."""
    return [
        s for s in study.series
        if s.modality not in _OWN_MODALITIES and not s.description.startswith("Radiogate")
    ]  # fmt: skip


def arrival_round(
    conn: Conn,
    audit: repo.AuditSink,
    node: str,
    study: ArchiveStudy,
    steps: tuple[str, ...],
    *,
    lane: Lane = Lane.ROUTINE,
    route: str = "",
    triage: Callable[[Conn], object] | None = None,
) -> str:
    """Create the rows and jobs of a study stored directly; returns what was done (a code).
    With a ``triage`` step its image series get ``series_triage`` rows, and *triage* decides
    them in the same transaction."""
    from dicom_nodes.pipeline.archive_triage import is_image

    kept = kept_series(study)
    if not kept:
        return "nothing-to-do"
    triaged = "triage" in steps and triage is not None
    triage_route = (route or "archive-arrivals") if triaged else ""
    with conn.transaction():
        if not repo.open_archive_study(conn, study.uid):
            return "known"
        now = dt.datetime.now(dt.UTC)
        repo.touch_series(conn, audit, [
            repo.SeriesSeen(s.uid, study.uid, node, s.modality, s.instances, now,
                            triage_route if is_image(s.modality) else "")
            for s in kept
        ])  # fmt: skip
        repo.set_archive_uids(conn, studies={}, series={s.uid: s.uid for s in kept})
        reason = {"reason": "archive-arrival"}
        repo.apply(conn, audit, SERIES, SeriesEvent.COMPLETED,
                   [Change((s.uid,), reason) for s in kept],
                   values={"by": ["archive-arrival"] * len(kept)})  # fmt: skip
        repo.apply(conn, audit, STUDY, StudyEvent.STUDY_RULE, [Change((study.uid,), reason)],
                   values={"by": ["archive-arrival"]})  # fmt: skip
        repo.promote_study_lanes(conn, {study.uid: (lane.value, lane.rank)})
        if triage is not None and triage_route:
            triage(conn)
        pipelines = [st.partition(":")[2] for st in steps if st.startswith("analyse:")]
        rows = [(s.uid, study.uid, node, p) for p in pipelines for s in kept
                if s.modality == "CT"]  # fmt: skip
        repo.open_analyses(conn, rows)
        if rows:
            defer_analyse(conn, node)
    LOGGER.info("study %s stored directly into the archive: %d series, %d analyses",
                study.uid, len(kept), len(rows))  # fmt: skip
    return "opened"


def run_arrival(ctx: Any, orthanc_id: str, steps: list[str], route: str = "") -> str:
    """The ``radiogate.archive_arrival`` task: read the study from the archive, give it the
    lane its route and the lane rules say (as for a received study: the most urgent of its
    series), open its rows. Raises when the archive cannot be read (procrastinate retries)."""
    import json
    import urllib.error
    import urllib.request

    from config.routes import RouteSettings
    from dicom_nodes.pipeline.routes import lane_for, tags_needed
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

    settings = next((r for r in ctx.routes if r.name == route), None)
    if settings is None:
        settings = RouteSettings(name=route or "archive-arrivals", steps=list(steps))
    study = ArchiveStudy.read(get_json, orthanc_id, tags_needed([settings], ctx.lane_rules))
    if study is None:
        return "gone"
    lanes = {s.uid: lane_for(settings, ctx.lane_rules, s.facts) for s in study.series}
    lane = Lane.most_urgent(*lanes.values())
    decide = None
    if "triage" in steps and not _known(ctx, study.uid):
        decide = _archive_triage(ctx, study, lanes)
    with ctx.pool.connection() as conn:
        return arrival_round(conn, ctx.audit, ctx.node, study, tuple(steps), lane=lane,
                             route=route, triage=decide)  # fmt: skip


def _known(ctx: Any, study_uid: str) -> bool:
    with ctx.pool.connection() as conn:
        row = conn.execute(
            "SELECT 1 FROM study WHERE study_instance_uid = %s OR archive_study_uid = %s",
            (study_uid, study_uid),
        ).fetchone()
    return row is not None


def _archive_triage(
    ctx: Any, study: ArchiveStudy, lanes: Mapping[str, Lane]
) -> Callable[[Conn], object] | None:
    """Read and score the study's image series now; what decides them in the transaction."""
    from dicom_nodes.archive import OrthancArchive
    from dicom_nodes.pipeline.archive_triage import decide_archived, is_image, read_series

    triage = getattr(ctx, "triage", None)
    if triage is None:
        LOGGER.warning("study %s: its route triages, but no triage is configured", study.uid)
        return None
    a = ctx.analysis
    archive = OrthancArchive(a.archive_url, a.user, a.password)
    read = [read_series(triage, archive, s.uid, lanes[s.uid])
            for s in kept_series(study) if is_image(s.modality)]  # fmt: skip
    return lambda conn: decide_archived(conn, ctx, archive, study.uid, read)

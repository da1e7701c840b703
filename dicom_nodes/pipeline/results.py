"""Triage results as DICOM in the archive: a Comprehensive 3D SR with the priority and a Key
Object Selection of the flagged images (:mod:`analysis.results`), made for every series decided
more urgent than routine or flagged.

They are built from the series' spooled originals (the instances wait for the decision), so
they carry the originals' patient, study and UIDs; written to the spool and recorded as
received from this node (:func:`dicom_nodes.state.repository.record_generated`) in the
decision's transaction, they are routed like any instance: the route's de-identification gives
them the same pseudonyms and UIDs as the images they reference, and they reach the archive in
the study's lane (critical before the backlog). A re-decision with the same result gives the
same UIDs (nothing new is stored); a changed result is a new instance in the same series.

A series stored into the archive directly (:mod:`dicom_nodes.pacs.arrivals`) has no spooled
original: its SR and KOS are built from the archived instances and stored into the archive
directly (:func:`store_archived_results`), with the archive's UIDs.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import psycopg
import pydicom
from pydicom.sr.coding import Code

from audit import Step
from dicom_nodes.archive import Archive
from dicom_nodes.spool.store import Spool
from dicom_nodes.state import Lane
from dicom_nodes.state import repository as repo
from dicom_nodes.state.repository import AuditEntry, AuditSink

__all__ = [
    "REASONS",
    "TriageOutcome",
    "store_archived_results",
    "triage_objects",
    "write_triage_results",
]

LOGGER = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]

SCHEME = "99RADIOGATE"
REASONS: Mapping[str, Code] = {
    "model": Code("MODEL-FINDING", SCHEME, "Finding scored by a triage model"),
    "rule": Code("PRIORITY-RULE", SCHEME, "Priority set by a routing rule"),
    "incomplete": Code("INCOMPLETE-SERIES", SCHEME, "Incomplete series"),
}
"""What decided a triage, as the SR's finding code (declared as a private scheme)."""
CATEGORY = {Lane.CRITICAL: 1, Lane.URGENT: 2}
"""ACR actionable finding category (CID 7035) of a lane; routine: not actionable."""


@dataclass(frozen=True)
class TriageOutcome:
    """One series' triage decision, as its SR and KOS report it."""

    series_uid: str
    lane: Lane
    score: float | None
    model: Mapping[str, Any] | None
    """The scoring model's card facts (name, version, blake3, demonstration); None: rules."""
    reasons: Sequence[str]
    flagged: Sequence[str]
    """SOP Instance UIDs of the slices the model flagged (the KOS lists them)."""
    rules_hash: str
    created: dt.datetime


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("radiogate")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def triage_objects(
    source: Sequence[pydicom.Dataset], outcome: TriageOutcome
) -> tuple[list[pydicom.Dataset], str]:
    """The SR (and the KOS when images of *source* are flagged) of one decided series, built
    from its instances' headers (they carry the patient, study and UIDs the objects get), and
    what decided it (``model``, ``rule``, ``incomplete``); none for a routine, unflagged
    series."""
    from analysis.results import (
        ActionableCategory,
        Algorithm,
        Provenance,
        TriageFinding,
        build_key_objects,
        build_triage_sr,
    )
    from analysis.results import Lane as ResultLane

    lane, model, reasons, score = outcome.lane, outcome.model, outcome.reasons, outcome.score
    present = {str(ds.SOPInstanceUID) for ds in source}
    flagged = [uid for uid in outcome.flagged if uid in present]
    if not source or (lane is Lane.ROUTINE and not flagged):
        return [], ""
    if model and model.get("blake3"):
        algorithm = Algorithm(
            str(model["name"]), str(model["version"]), model_hash=str(model["blake3"]),
            demonstration=str(model.get("demonstration", "")).lower() in ("true", "1"),
        )  # fmt: skip
    else:
        algorithm = Algorithm(
            "radiogate-triage-rules", _version(), parameter_hash=outcome.rules_hash
        )
    kind = "incomplete" if any(r.startswith(("missing", "duplicate", "uneven", "inconsistent",
                                             "pixel")) for r in reasons) else (
        "model" if any(r.startswith("model-") for r in reasons) else "rule")  # fmt: skip
    finding = TriageFinding(
        lane=ResultLane(lane.value),
        category=None if lane not in CATEGORY else ActionableCategory(CATEGORY[lane]),
        certainty=0.0 if score is None else round(100.0 * score, 1),
        reason=REASONS[kind],
        flagged=tuple(flagged),
        series_instance_uid=outcome.series_uid,
    )
    provenance = Provenance(software_version=_version())
    objects: list[pydicom.Dataset] = [
        build_triage_sr(source, finding, algorithm, provenance, created=outcome.created)
    ]
    if flagged:
        objects.append(
            build_key_objects(source, finding, algorithm, provenance, created=outcome.created)
        )
    return objects, kind


def _finish(
    conn: Conn,
    audit: AuditSink,
    outcome: TriageOutcome,
    objects: Sequence[pydicom.Dataset],
    *,
    kind: str,
    new: Sequence[bool],
) -> tuple[str | None, str | None]:
    """Audit the objects stored anew (*new*, per object) and note the series' SR and KOS."""
    for ds, stored in zip(objects, new, strict=True):
        if stored:
            audit(conn, [AuditEntry(Step.RESULTS_STORED, {
                "study_instance_uid": str(ds.StudyInstanceUID),
                "sop_instance_uid": str(ds.SOPInstanceUID),
                "sop_class_uid": str(ds.SOPClassUID), "reason": f"triage-{kind}"})])  # fmt: skip
    sr_uid = str(objects[0].SOPInstanceUID)
    kos_uid = str(objects[1].SOPInstanceUID) if len(objects) > 1 else None
    repo.set_triage_results(conn, outcome.series_uid, sr_uid, kos_uid)
    return sr_uid, kos_uid


def _spooled(conn: Conn, series_uid: str, among: Sequence[str]) -> list[Path]:
    """Spool files of the series' routed or held instances (of *among* only, in its order,
    when given)."""
    return [
        Path(str(r[0]))
        for r in conn.execute(
            """SELECT i.spool_path FROM triage_instance t JOIN ingest_instance i
                   USING (sop_instance_uid)
               WHERE t.series_instance_uid = %s AND i.state IN ('routed', 'held')
                 AND (cardinality(%s::text[]) = 0 OR t.sop_instance_uid = ANY(%s))
               ORDER BY array_position(%s::text[], t.sop_instance_uid)""",
            (series_uid, *[list(among)] * 3),
        ).fetchall()
    ]


def write_triage_results(
    conn: Conn,
    audit: AuditSink,
    spool: Spool,
    *,
    node: str,
    ae_title: str,
    outcome: TriageOutcome,
) -> tuple[str | None, str | None]:
    """Build, spool and record the SR (and the KOS when images are flagged) of one decided
    received series; returns their SOP Instance UIDs. Nothing is made for a routine, unflagged
    series."""
    from analysis.results import to_bytes

    if outcome.lane is Lane.ROUTINE and not outcome.flagged:
        return None, None
    # A model's finding references its flagged images only: their headers suffice (the
    # first carries the patient and study); a rule's references the whole series. When no
    # flagged slice is left in the spool (a re-decision after they were released), the
    # series' remaining slices stand in (the finding then lists the flagged ones present).
    paths = _spooled(conn, outcome.series_uid, outcome.flagged)
    if not paths and outcome.flagged:
        paths = _spooled(conn, outcome.series_uid, ())
    source = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths if p.exists()]
    if not source:
        LOGGER.warning("series %s: no spooled instance left to build its triage results",
                       outcome.series_uid)  # fmt: skip
        return None, None
    objects, kind = triage_objects(source, outcome)
    if not objects:
        return None, None
    datas = [to_bytes(ds) for ds in objects]
    temp = spool.root / ".results"
    temp.mkdir(exist_ok=True)
    spooled = spool.commit_bytes(datas, temp)
    new = []
    for ds, data, file in zip(objects, datas, spooled, strict=True):
        new.append(repo.record_generated(
            conn, node=node, ae_title=ae_title, sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID), study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID), modality=str(ds.Modality),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID), spool_path=str(file.path),
            size=len(data), blake3=blake3.blake3(data).digest(),
        ))  # fmt: skip
    return _finish(conn, audit, outcome, objects, kind=kind, new=new)


def store_archived_results(
    conn: Conn,
    audit: AuditSink,
    archive: Archive,
    source: Sequence[pydicom.Dataset],
    outcome: TriageOutcome,
) -> tuple[str | None, str | None]:
    """The SR and KOS of a series stored into the archive directly: built from the archived
    instances' headers (*source*), so they carry the archive's patient, study and UIDs, and
    stored into the archive at once — not routed, not de-identified again. Called in the
    decision's transaction (a failed store rolls it back; the objects' UIDs are the same when
    tried again). Returns their SOP Instance UIDs."""
    from analysis.results import to_bytes

    objects, kind = triage_objects(source, outcome)
    if not objects:
        return None, None
    for ds in objects:
        archive.store(to_bytes(ds))
    return _finish(conn, audit, outcome, objects, kind=kind, new=[True] * len(objects))

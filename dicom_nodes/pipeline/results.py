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
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import blake3
import psycopg
import pydicom
from pydicom.sr.coding import Code

from audit import Step
from dicom_nodes.spool.store import Spool
from dicom_nodes.state import Lane
from dicom_nodes.state import repository as repo
from dicom_nodes.state.repository import AuditEntry, AuditSink

__all__ = ["REASONS", "write_triage_results"]

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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("radiogate")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def write_triage_results(
    conn: Conn,
    audit: AuditSink,
    spool: Spool,
    *,
    node: str,
    ae_title: str,
    series_uid: str,
    lane: Lane,
    score: float | None,
    model: Mapping[str, Any] | None,
    reasons: Sequence[str],
    flagged: Sequence[str],
    rules_hash: str,
    created: dt.datetime,
) -> tuple[str | None, str | None]:
    """Build, spool and record the SR (and the KOS when images are flagged) of one decided
    series; returns their SOP Instance UIDs. Nothing is made for a routine, unflagged series."""
    from analysis.results import (
        ActionableCategory,
        Algorithm,
        Provenance,
        TriageFinding,
        build_key_objects,
        build_triage_sr,
        to_bytes,
    )
    from analysis.results import Lane as ResultLane

    if lane is Lane.ROUTINE and not flagged:
        return None, None
    paths = [
        Path(str(r[0]))
        for r in conn.execute(
            """SELECT i.spool_path FROM triage_instance t JOIN ingest_instance i
                   USING (sop_instance_uid)
               WHERE t.series_instance_uid = %s AND i.state IN ('routed', 'held')""",
            (series_uid,),
        ).fetchall()
    ]
    source = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths if p.exists()]
    present = {str(ds.SOPInstanceUID) for ds in source}
    flagged = [uid for uid in flagged if uid in present]
    if not source:
        LOGGER.warning("series %s: no spooled instance left to build its triage results",
                       series_uid)  # fmt: skip
        return None, None
    if model and model.get("blake3"):
        algorithm = Algorithm(
            str(model["name"]), str(model["version"]), model_hash=str(model["blake3"]),
            demonstration=str(model.get("demonstration", "")).lower() in ("true", "1"),
        )  # fmt: skip
    else:
        algorithm = Algorithm("radiogate-triage-rules", _version(), parameter_hash=rules_hash)
    kind = "incomplete" if any(r.startswith(("missing", "duplicate", "uneven", "inconsistent",
                                             "pixel")) for r in reasons) else (
        "model" if any(r.startswith("model-") for r in reasons) else "rule")  # fmt: skip
    finding = TriageFinding(
        lane=ResultLane(lane.value),
        category=None if lane not in CATEGORY else ActionableCategory(CATEGORY[lane]),
        certainty=0.0 if score is None else round(100.0 * score, 1),
        reason=REASONS[kind],
        flagged=tuple(flagged),
        series_instance_uid=series_uid,
    )
    provenance = Provenance(software_version=_version())
    objects: list[pydicom.Dataset] = [
        build_triage_sr(source, finding, algorithm, provenance, created=created)
    ]
    if flagged:
        objects.append(build_key_objects(source, finding, algorithm, provenance, created=created))
    datas = [to_bytes(ds) for ds in objects]
    temp = spool.root / ".results"
    temp.mkdir(exist_ok=True)
    spooled = spool.commit_bytes(datas, temp)
    uids: list[str] = []
    for ds, data, file in zip(objects, datas, spooled, strict=True):
        uid = str(ds.SOPInstanceUID)
        uids.append(uid)
        if repo.record_generated(
            conn, node=node, ae_title=ae_title, sop_instance_uid=uid,
            sop_class_uid=str(ds.SOPClassUID), study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID), modality=str(ds.Modality),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID), spool_path=str(file.path),
            size=len(data), blake3=blake3.blake3(data).digest(),
        ):  # fmt: skip
            audit(conn, [AuditEntry(Step.RESULTS_STORED, {
                "study_instance_uid": str(ds.StudyInstanceUID), "sop_instance_uid": uid,
                "sop_class_uid": str(ds.SOPClassUID), "reason": f"triage-{kind}"})])  # fmt: skip
    sr_uid, kos_uid = uids[0], (uids[1] if len(uids) > 1 else None)
    repo.set_triage_results(conn, series_uid, sr_uid, kos_uid)
    return sr_uid, kos_uid

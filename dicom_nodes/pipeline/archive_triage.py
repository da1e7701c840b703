"""Stage 2a for studies stored into the archive directly: triage of archived series.

A study stored into Orthanc directly (not through the SCP) whose arrival route
(``pacs.archive_arrivals``) has a ``triage`` step is triaged as a received study is, with the
archive's copy as the source (it has no spooled original and no ``ingest_instance`` rows):

1. before the arrival's transaction, :func:`read_series` reads each image series' instances
   from the archive (Part 10 bytes: :meth:`dicom_nodes.archive.Archive.series_files`) and
   scores them slice by slice with the configured models
   (:func:`dicom_nodes.pipeline.triage.score_slices`, as for a routed instance); their headers
   are kept, their pixel data dropped;
2. in the arrival's transaction (:func:`decide_archived`, after the ``series`` and
   ``series_triage`` rows are opened), the same data-quality checks
   (:func:`analysis.quality.series.check_series`, PS3.3 C.7.6.2 geometry), the model's series
   lane and the rules' lane combined by ``triage.policy``
   (:func:`dicom_nodes.pipeline.triage.decide`), the ``decided`` event, the study's lane and the
   alerts (:func:`dicom_nodes.pipeline.triage.effects`), and the triage SR and KOS built from
   the archived headers — they carry the archive's UIDs — stored into the archive directly
   (:func:`dicom_nodes.pipeline.results.store_archived_results`; never de-identified again).

The whole series is held in memory while it is scored (one series at a time).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import pydicom
from pydicom.errors import InvalidDicomError

from analysis.quality.series import check_series
from dicom_nodes.archive import Archive
from dicom_nodes.pipeline.results import TriageOutcome, store_archived_results
from dicom_nodes.pipeline.triage import (
    NOT_IMAGES,
    Captured,
    Decision,
    Triage,
    decide,
    effects,
    model_result,
    record_decisions,
    score_slices,
)
from dicom_nodes.state import Lane
from dicom_nodes.state import repository as repo

if TYPE_CHECKING:
    from dicom_nodes.pipeline.context import PipelineContext

__all__ = ["ArchivedSeries", "decide_archived", "is_image", "read_series"]

LOGGER = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]


def is_image(modality: str) -> bool:
    """Whether a series of *modality* is triaged (not an SR, KOS, SEG… — :data:`NOT_IMAGES`)."""
    return modality.upper() not in NOT_IMAGES


@dataclass(frozen=True)
class ArchivedSeries:
    """One archived series, read and scored, waiting for its decision."""

    series_uid: str
    rule_lane: Lane
    captured: tuple[tuple[str, Captured], ...]
    headers: tuple[pydicom.Dataset, ...]
    """The instances' headers (no pixel data): what the SR and KOS are built from."""

    @property
    def model(self) -> dict[str, Any] | None:
        """The model that scored the series (name, version, BLAKE3), None when none applied."""
        return next((dict(c.model) for _u, c in self.captured if c.model), None)


def read_series(
    triage: Triage, archive: Archive, series_uid: str, rule_lane: Lane
) -> ArchivedSeries:
    """Read *series_uid*'s instances from the archive and score them (no database work).
    Raises :class:`dicom_nodes.archive.ArchiveError` when the archive cannot be read."""
    headers: list[pydicom.Dataset] = []
    sources: list[tuple[str, bytes]] = []
    for data in archive.series_files(series_uid):
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            uid = str(ds.SOPInstanceUID)
        except (InvalidDicomError, ValueError, AttributeError, EOFError):
            LOGGER.warning("series %s: an archived instance cannot be read", series_uid)
            continue
        headers.append(ds)
        sources.append((uid, data))
    captured = score_slices(triage, sources)
    del sources
    return ArchivedSeries(series_uid, rule_lane, tuple(captured), tuple(headers))


def _decision(triage: Triage, series: ArchivedSeries) -> Decision:
    facts = [c.facts for _u, c in series.captured]
    verdict = check_series(facts)
    scores = {u: c.score for u, c in series.captured if c.score is not None}
    ordered = [(u, scores[u]) for u in verdict.ordered if u in scores]
    model_lane, score, flagged = model_result(triage, series.model, ordered)
    return decide(triage.settings.policy, series.rule_lane, model_lane, score=score,
                  verdict=verdict, flagged=flagged)  # fmt: skip


def decide_archived(
    conn: Conn,
    ctx: PipelineContext,
    archive: Archive,
    study_uid: str,
    series: Sequence[ArchivedSeries],
    *,
    created: dt.datetime | None = None,
) -> list[tuple[str, Decision]]:
    """Decide the archived *series* of *study_uid* in the caller's transaction (their
    ``series_triage`` rows are ``pending``): one ``decided`` event each, the study's lane and
    alerts, the SR and KOS stored into *archive*. Returns (series, decision)."""
    triage = ctx.triage
    if triage is None or not series:
        return []
    created = created or dt.datetime.now(dt.UTC)
    repo.note_series_facts(
        conn, expected={},
        models={s.series_uid: json.dumps(s.model) for s in series if s.model},
    )  # fmt: skip
    final = [(s.series_uid, study_uid, _decision(triage, s)) for s in series]
    record_decisions(conn, ctx.audit, final)
    for s, (_uid, _study, decision) in zip(series, final, strict=True):
        effects(conn, ctx, s.series_uid, study_uid, decision)
        store_archived_results(conn, ctx.audit, archive, s.headers, TriageOutcome(
            s.series_uid, decision.lane, decision.score, s.model, decision.reasons,
            decision.flagged, triage.rules_hash, created))  # fmt: skip
        LOGGER.info("archived series %s triaged: %s (%s)", s.series_uid, decision.lane.value,
                    ", ".join(decision.reasons) or "routine")  # fmt: skip
    return [(s, d) for s, _st, d in final]

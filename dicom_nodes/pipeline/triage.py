"""Stage 2a, triage: every series of a route with a ``triage`` step gets a lane, early.

When an instance is routed (:func:`capture`, in the routing round) its slice is read once:
the facts the data-quality checks need (:mod:`analysis.quality.series`) and, when a model's
card applies to it, the model's score of the slice (:mod:`analysis.triage`) are recorded in
``triage_instance``; the file is not needed again for the decision. Its spool copy is kept until
its series is decided (the SR and KOS are built from it).

A series is decided (:func:`triage_round`) as soon as it is complete (quiet period, expected
instance count, the sending association's release, MPPS; :func:`complete_series`) — or
earlier, as critical, when ``min_slices`` of its slices already score critical and
``triage.early`` is on. The decision combines the lane rules' lane (Requested Procedure
Priority = STAT…, AE titles, modalities) with the model's lane by ``triage.policy``, records
the data-quality verdict, and then in the same transaction:

* writes the triage SR and KOS of a series more urgent than routine
  (:mod:`dicom_nodes.pipeline.results`): they are routed and archived like any instance;
* moves every waiting forward item of the study to the decided lane when it is more urgent
  (critical overtakes the backlog; the forwarding jobs of that lane are deferred);
* raises an alert for a critical series (ACR category 1) and for an incomplete one
  (``triage.incomplete_category``), idempotent per study, finding and model version;
* and, once that is committed, releases the instances that waited for the decision.

A late instance re-opens the series and its decision (``late-arrival``, ``reopened``): it is
checked and decided again.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3
import numpy as np
import psycopg
import pydicom
from pydicom.errors import InvalidDicomError

from analysis.quality.series import InstanceFacts, Verdict, check_series
from config.alerts import AlertSettings
from config.triage import TriagePolicy, TriageSettings
from dicom_nodes.spool.store import Spool
from dicom_nodes.state import SERIES, TRIAGE, Change, Lane, SeriesEvent, TriageEvent
from dicom_nodes.state import repository as repo
from dicom_nodes.state.jobs import defer_forward

if TYPE_CHECKING:
    from analysis.triage.model import TriageModel
    from dicom_nodes.pipeline.claims import ReceivedInstance
    from dicom_nodes.pipeline.context import PipelineContext
    from dicom_nodes.pipeline.route import RoutePlan

__all__ = [
    "Captured",
    "Decision",
    "Triage",
    "capture",
    "complete_series",
    "decide",
    "effects",
    "model_result",
    "record_capture",
    "record_decisions",
    "score_slices",
    "settle_decided",
    "triage_round",
]

LOGGER = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]


@dataclass
class Triage:
    """What the triage stage runs with: the models and the settings."""

    settings: TriageSettings = field(default_factory=TriageSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    models: Sequence[TriageModel] = ()
    pseudonymiser: Any = None
    """Turns original UIDs into the de-identifier's (alerts name studies that way)."""
    spool: Spool | None = None
    """Where the triage SR and KOS are written (None: no results objects)."""
    ae_title: str = "RADIOGATE"
    rules_hash: str = "0" * 64
    """BLAKE3 of the lane rules: the parameter hash of rule-based decisions."""

    def model_for(self, modality: str, body_part: str | None) -> TriageModel | None:
        return next((m for m in self.models if m.applies_to(modality, body_part)), None)

    @classmethod
    def from_settings(cls, settings: Any) -> Triage:
        """Models from ``triage.models`` ('builtin': the shipped demonstration model)."""
        from analysis.triage import DEFAULT_CARD
        from analysis.triage.model import load_model
        from config import data_path, settings_to_dict

        t = settings.triage
        cards = [DEFAULT_CARD if m == "builtin" else data_path(settings, m) for m in t.models]
        models = [load_model(card, threads=t.threads) for card in cards]
        pseudonymiser = None
        try:
            from dicom_nodes.deid.pseudonyms import Pseudonymiser
            from dicom_nodes.deid.secrets import load_site_secret

            pseudonymiser = Pseudonymiser(load_site_secret(settings))
        except Exception as exc:  # alerts then carry no study UID at all, never an original
            LOGGER.warning("alerts will not name studies: site secret unavailable (%s)",
                           type(exc).__name__)  # fmt: skip
        from dicom_nodes.spool.store import Spool as SpoolStore

        spool = SpoolStore(data_path(settings, settings.spool.path), fsync=settings.spool.fsync)
        rules = json.dumps(settings_to_dict(settings)["lane_rules"], sort_keys=True)
        return cls(t, settings.alerts, models, pseudonymiser, spool, settings.scp.ae_title,
                   blake3.blake3(rules.encode()).hexdigest())  # fmt: skip


@dataclass(frozen=True)
class Captured:
    """What triage keeps of one routed instance."""

    series_uid: str
    facts: InstanceFacts
    score: float | None
    model: Mapping[str, Any] | None


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _int(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _read(source: Path | bytes) -> tuple[Any, np.ndarray | None, tuple[str, ...]]:
    """The dataset (a file, or Part 10 bytes), its first frame in HU (None when it has no
    usable pixels), and problems."""
    ds = pydicom.dcmread(source if isinstance(source, Path) else io.BytesIO(source))
    if "PixelData" not in ds:
        return ds, None, ()
    try:
        pixels = ds.pixel_array
    except ValueError as exc:
        if "length" in str(exc).lower() or "expected" in str(exc).lower():
            return ds, None, ("pixel-data-truncated",)
        return ds, None, ("pixel-data-undecodable",)
    except Exception:
        return ds, None, ("pixel-data-undecodable",)
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        return ds, None, ()
    frame = pixels[0] if pixels.ndim == 3 else pixels
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return ds, frame.astype(np.float32) * slope + intercept, ()


NOT_IMAGES = frozenset({"SR", "KO", "PR", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD",
                        "DOC", "REG", "FID", "AU", "ECG"})  # fmt: skip
"""Modalities of objects that are not images: a triage step leaves them (and their series)
alone, including the triage SR and KOS Radiogate writes itself."""


def triaged(inst: ReceivedInstance, plan: RoutePlan) -> bool:
    """Whether *inst* is triaged: its route has a triage step and it is an image."""
    return plan.triage and inst.modality.upper() not in NOT_IMAGES


def capture(
    triage: Triage, planned: Sequence[tuple[ReceivedInstance, RoutePlan]]
) -> list[tuple[str, Captured]]:
    """Read and score the slices of the planned instances whose route triages them; returns
    (SOP Instance UID, what was captured). Unreadable files are captured with their problem."""
    return score_slices(triage, [(inst.sop_instance_uid, inst.spool_path)
                                 for inst, plan in planned if triaged(inst, plan)])  # fmt: skip


def score_slices(
    triage: Triage, sources: Sequence[tuple[str, Path | bytes]]
) -> list[tuple[str, Captured]]:
    """Read and score (SOP Instance UID, file or Part 10 bytes) slices: the facts the
    data-quality checks need and, when a model's card applies, the model's score of each."""
    out: list[tuple[str, Captured]] = []
    batches: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for sop_uid, source in sources:
        try:
            ds, hu, problems = _read(source)
            series_uid = str(ds.SeriesInstanceUID)
        except Exception as exc:  # one unreadable slice must not fail its routing batch
            if not isinstance(exc, (OSError, ValueError, InvalidDicomError, AttributeError)):
                LOGGER.warning("slice %s could not be read for triage (%s)", sop_uid,
                               type(exc).__name__)  # fmt: skip
            out.append((sop_uid, Captured(
                "", InstanceFacts(sop_uid, problems=("pixel-data-undecodable",)),
                None, None)))  # fmt: skip
            continue
        facts = InstanceFacts(
            sop_uid,
            _int(ds.get("InstanceNumber")),
            _floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
            _floats(ds.get("ImageOrientationPatient"), 6),  # type: ignore[arg-type]
            _int(ds.get("Rows")),
            _int(ds.get("Columns")),
            _floats(ds.get("PixelSpacing"), 2),  # type: ignore[arg-type]
            _int(ds.get("ImagesInAcquisition")),
            problems,
        )
        model = triage.model_for(str(ds.get("Modality", "")), str(ds.get("BodyPartExamined", "")))
        out.append((sop_uid, Captured(series_uid, facts, None, None)))
        if model is not None and hu is not None:
            try:
                batches[id(model)].append((len(out) - 1, model.preprocess(hu, facts.pixel_spacing)))
            except (ValueError, TypeError, IndexError):
                LOGGER.warning("slice of %s cannot be preprocessed for %s",
                               sop_uid, model.identity.name)  # fmt: skip
    by_id = {id(m): m for m in triage.models}
    for key, items in batches.items():
        model = by_id[key]
        scores = model.score(np.stack([x for _i, x in items]))
        ident = model.identity
        described = {"name": ident.name, "version": ident.version, "blake3": ident.blake3,
                     "demonstration": ident.demonstration}  # fmt: skip
        for (index, _x), score in zip(items, scores, strict=True):
            uid, c = out[index]
            out[index] = (uid, Captured(c.series_uid, c.facts, float(score), described))
    return out


def record_capture(conn: Conn, captured: Sequence[tuple[str, Captured]]) -> None:
    """Store what :func:`capture` found (a re-routed instance replaces its row)."""
    rows = [
        (uid, c.series_uid, c.facts.instance_number, _arr(c.facts.position),
         _arr(c.facts.orientation), c.facts.rows, c.facts.columns, _arr(c.facts.pixel_spacing),
         c.facts.images_in_acquisition, list(c.facts.problems), c.score)
        for uid, c in captured if c.series_uid
    ]  # fmt: skip
    if not rows:
        return
    conn.cursor().executemany(
        """INSERT INTO triage_instance (sop_instance_uid, series_instance_uid, instance_number,
               position, orientation, rows, columns, pixel_spacing, images_in_acquisition,
               problems, score)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (sop_instance_uid) DO UPDATE SET score = EXCLUDED.score,
               problems = EXCLUDED.problems, captured_at = clock_timestamp()""",
        rows,
    )
    repo.note_series_facts(
        conn,
        expected={c.series_uid: c.facts.images_in_acquisition for _u, c in captured
                  if c.series_uid and c.facts.images_in_acquisition},
        models={c.series_uid: json.dumps(c.model) for _u, c in captured
                if c.series_uid and c.model},
    )  # fmt: skip


def _arr(value: Sequence[float] | None) -> list[float] | None:
    return None if value is None else list(value)


def complete_series(ctx: PipelineContext) -> list[tuple[str, str]]:
    """``completed`` for this node's series that a signal says are whole; returns
    (series, by). Signals, first that holds: the expected instance count (Images in
    Acquisition) arrived; an MPPS step naming the series was COMPLETED or DISCONTINUED; every
    association that sent the series was released ``triage.association_grace`` ago; the quiet
    period passed. A series with an instance received on this node but not routed yet is not
    complete whatever the signal (unless that instance waited longer than the quiet period):
    deciding it without that slice would only re-open it when the slice is routed, and decide
    (and write its SR) twice. Only the series completed are locked."""
    grace = ctx.triage.settings.association_grace if ctx.triage is not None else 1.0
    with ctx.pool.connection() as conn, conn.transaction():
        rows = conn.execute(
            """WITH c AS (
                 SELECT s.series_instance_uid AS uid, CASE
                   WHEN s.expected IS NOT NULL AND s.instances >= s.expected
                     THEN 'expected-count'
                   WHEN EXISTS (SELECT 1 FROM mpps m WHERE m.status <> 'IN PROGRESS'
                                AND m.series_uids @> ARRAY[s.series_instance_uid])
                     THEN 'mpps'
                   WHEN s.last_received_at < clock_timestamp() - make_interval(secs => %(grace)s)
                        AND NOT EXISTS (
                          SELECT 1 FROM ingest_instance i
                          WHERE i.series_instance_uid = s.series_instance_uid
                            AND NOT EXISTS (SELECT 1 FROM association_end a
                                            WHERE a.association_id = i.association_id
                                              AND a.released))
                     THEN 'association-released'
                   WHEN s.last_received_at < clock_timestamp() - make_interval(secs => %(quiet)s)
                     THEN 'quiet-period'
                 END AS by
                 FROM series s
                 WHERE s.node = %(node)s AND s.state = 'receiving'
                   AND NOT EXISTS (
                     SELECT 1 FROM ingest_instance r
                     WHERE r.series_instance_uid = s.series_instance_uid AND r.node = s.node
                       AND r.state = 'received'
                       -- one that waits longer than the quiet period does not hold it back
                       AND r.received_at > clock_timestamp() - make_interval(secs => %(quiet)s)))
               SELECT c.uid, c.by FROM c JOIN series s ON s.series_instance_uid = c.uid
               WHERE c.by IS NOT NULL AND s.state = 'receiving'
               ORDER BY c.uid FOR UPDATE OF s SKIP LOCKED""",
            {"grace": grace, "quiet": ctx.settings.quiet_period, "node": ctx.node},
        ).fetchall()
        done = [(str(uid), str(by)) for uid, by in rows]
        repo.apply(
            conn, ctx.audit, SERIES, SeriesEvent.COMPLETED,
            [Change((uid,), {"reason": by}) for uid, by in done],
            values={"by": [by for _uid, by in done]},
        )  # fmt: skip
        if done and ctx.triage is not None:
            defer_triage(conn, ctx.node)
    return done


def defer_triage(conn: Conn, node: str) -> bool:
    from dicom_nodes.state.jobs import defer_triage as defer

    return defer(conn, node)


@dataclass(frozen=True)
class Decision:
    lane: Lane
    rule_lane: Lane
    model_lane: Lane | None
    score: float | None
    verdict: Verdict | None
    flagged: tuple[str, ...]
    reasons: tuple[str, ...]
    early: bool


def decide(
    policy: TriagePolicy,
    rule_lane: Lane,
    model_lane: Lane | None,
    *,
    score: float | None = None,
    verdict: Verdict | None = None,
    flagged: Sequence[str] = (),
    early: bool = False,
) -> Decision:
    """The lane of a series by *policy* (pure): the most urgent of the rules' and the model's
    lane, one of them alone; reasons say what decided it."""
    if policy is TriagePolicy.RULES_ONLY:
        lane = rule_lane
    elif policy is TriagePolicy.MODEL_ONLY:
        lane = model_lane or Lane.ROUTINE
    else:
        lane = Lane.most_urgent(rule_lane, model_lane or Lane.ROUTINE)
    reasons = []
    if lane is not Lane.ROUTINE and lane == rule_lane and policy is not TriagePolicy.MODEL_ONLY:
        reasons.append(f"rule-{rule_lane.value}")
    if model_lane is not None and lane == model_lane and policy is not TriagePolicy.RULES_ONLY:
        reasons.append(f"model-{model_lane.value}")
    if verdict is not None and not verdict.complete:
        reasons.extend(verdict.reasons)
    return Decision(lane, rule_lane, model_lane, score, verdict, tuple(flagged),
                    tuple(reasons), early)  # fmt: skip


def _series_facts(
    conn: Conn, series_uid: str
) -> tuple[list[InstanceFacts], list[tuple[str, float]], Lane]:
    """The captured facts, (SOP Instance UID, score) in slice order, and the rules' lane."""
    rows = conn.execute(
        """SELECT t.sop_instance_uid, t.instance_number, t.position, t.orientation, t.rows,
                  t.columns, t.pixel_spacing, t.images_in_acquisition, t.problems, t.score,
                  i.lane
           FROM triage_instance t JOIN ingest_instance i USING (sop_instance_uid)
           WHERE t.series_instance_uid = %s""",
        (series_uid,),
    ).fetchall()
    facts = [
        InstanceFacts(
            str(r[0]), r[1], None if r[2] is None else tuple(r[2]),
            None if r[3] is None else tuple(r[3]), r[4], r[5],
            None if r[6] is None else tuple(r[6]), r[7], tuple(r[8] or ()),
        )
        for r in rows
    ]  # fmt: skip
    verdict_order = check_series(facts).ordered if facts else ()
    scores = {str(r[0]): float(r[9]) for r in rows if r[9] is not None}
    ordered = [(uid, scores[uid]) for uid in verdict_order if uid in scores]
    rule_lane = Lane.most_urgent(*(Lane(str(r[10])) for r in rows)) if rows else Lane.ROUTINE
    return facts, ordered, rule_lane


def model_result(
    triage: Triage, model_doc: Mapping[str, Any] | None, scores: Sequence[tuple[str, float]]
) -> tuple[Lane | None, float | None, tuple[str, ...]]:
    """The model's lane, the series score and the flagged SOP Instance UIDs."""
    if not model_doc or not scores:
        return None, None, ()
    from analysis.triage.series import aggregate

    model = next((m for m in triage.models if m.identity.blake3 == model_doc.get("blake3")), None)
    if model is None:
        LOGGER.warning("the model %s that scored a series is no longer loaded",
                       model_doc.get("name"))  # fmt: skip
        return None, None, ()
    result = aggregate([s for _u, s in scores], model.card.thresholds, model.card.min_slices,
                       model.identity)  # fmt: skip
    lane = None if result.lane is None else Lane(result.lane.value)
    hits = result.flagged.get(result.lane, ()) if result.lane is not None else ()
    return lane, float(result.score), tuple(scores[i][0] for i in hits)


def triage_round(
    ctx: PipelineContext,
    limit: int = 20,
    *,
    written: list[str] | None = None,
    decided: list[str] | None = None,
) -> int:
    """Decide the pending series that are complete, and the receiving ones that already score
    critical (``triage.early``); returns how many were looked at. The SOP Instance UIDs of
    the SR and KOS written for the decisions are appended to *written*. The instances of the
    decided series are released (:func:`settle_decided`) once the decisions are committed, or
    appended to *decided* for the caller to release."""
    triage = ctx.triage
    if triage is None:
        return 0
    with ctx.pool.connection() as conn, conn.transaction():
        rows = conn.execute(
            """SELECT st.series_instance_uid, st.study_instance_uid, s.state, st.model, st.early
               FROM series_triage st JOIN series s USING (series_instance_uid)
               WHERE st.node = %s AND st.state = 'pending'
                 AND (s.state = 'complete' OR (%s AND NOT st.early AND EXISTS (
                          SELECT 1 FROM triage_instance t
                          WHERE t.series_instance_uid = st.series_instance_uid
                            AND t.score >= %s)))
               ORDER BY s.state, st.created_at LIMIT %s
               FOR UPDATE OF st SKIP LOCKED""",
            (ctx.node, triage.settings.early, _lowest_critical(triage), limit),
        ).fetchall()
        final: list[tuple[str, str, Decision]] = []
        for series_uid, study_uid, series_state, model_doc, _early in rows:
            facts, scores, rule_lane = _series_facts(conn, str(series_uid))
            model_lane, score, flagged = model_result(triage, model_doc, scores)
            if series_state == "complete":
                verdict = check_series(facts)
                decision = decide(triage.settings.policy, rule_lane, model_lane, score=score,
                                  verdict=verdict, flagged=flagged)  # fmt: skip
                final.append((str(series_uid), str(study_uid), decision))
            elif model_lane is Lane.CRITICAL:
                decision = decide(triage.settings.policy, rule_lane, model_lane, score=score,
                                  flagged=flagged, early=True)  # fmt: skip
                if decision.lane is Lane.CRITICAL:
                    _early_critical(conn, ctx, str(series_uid), str(study_uid), decision)
        waited = _record(conn, ctx, final, written)
    if decided is not None:
        decided.extend(waited)
    else:
        settle_decided(ctx, waited)
    return len(rows)


def settle_decided(ctx: PipelineContext, uids: Sequence[str]) -> None:
    """Release the instances that waited for their series' decision, in a transaction of their
    own after the decision and its SR are committed (and routable). Should the worker die in
    between, housekeeping settles them (``release.settle_leftovers``)."""
    if not uids:
        return
    from dicom_nodes.pipeline import release

    with ctx.pool.connection() as conn, conn.transaction():
        release.settle(conn, ctx.audit, uids)


def _lowest_critical(triage: Triage) -> float:
    limits = [m.card.thresholds.by_lane.get(_critical(m)) for m in triage.models]
    found = [x for x in limits if x is not None]
    return min(found) if found else 2.0  # above any probability: no early decision


def _critical(model: TriageModel) -> Any:
    from analysis.triage.lanes import Lane as ModelLane

    return ModelLane.CRITICAL


def record_decisions(
    conn: Conn, audit: repo.AuditSink, final: Sequence[tuple[str, str, Decision]]
) -> None:
    """The ``decided`` events of final decisions (series, study, decision): one each."""
    repo.apply(
        conn, audit, TRIAGE, TriageEvent.DECIDED,
        [Change((s,), {"reason": (d.reasons or ("routine",))[0]}) for s, _st, d in final],
        values={
            "lane": [d.lane.value for *_x, d in final],
            "rule_lane": [d.rule_lane.value for *_x, d in final],
            "model_lane": [None if d.model_lane is None else d.model_lane.value
                           for *_x, d in final],
            "score": [d.score for *_x, d in final],
            "quality": ["complete" if d.verdict is None or d.verdict.complete else "incomplete"
                        for *_x, d in final],
            "reasons": [json.dumps(list(d.reasons)) for *_x, d in final],
            "flagged": [json.dumps(list(d.flagged)) for *_x, d in final],
            "early": [d.early for *_x, d in final],
        },
    )  # fmt: skip


def _record(
    conn: Conn,
    ctx: PipelineContext,
    final: Sequence[tuple[str, str, Decision]],
    written: list[str] | None = None,
) -> list[str]:
    """The ``decided`` events of final decisions, and what each decision causes (the SR and
    KOS written are appended to *written*); returns the SOP Instance UIDs of the decided
    series (they no longer wait for a decision)."""
    if not final:
        return []
    record_decisions(conn, ctx.audit, final)
    triage = ctx.triage
    assert triage is not None
    for series_uid, study_uid, decision in final:
        effects(conn, ctx, series_uid, study_uid, decision)
        if triage.spool is not None:
            from dicom_nodes.pipeline.results import TriageOutcome, write_triage_results

            model_doc = conn.execute(
                "SELECT model FROM series_triage WHERE series_instance_uid = %s", (series_uid,)
            ).fetchone()
            results = write_triage_results(
                conn, ctx.audit, triage.spool, node=ctx.node, ae_title=triage.ae_title,
                outcome=TriageOutcome(
                    series_uid, decision.lane, decision.score, (model_doc or [None])[0],
                    decision.reasons, decision.flagged, triage.rules_hash,
                    datetime.datetime.now(datetime.UTC)),
            )  # fmt: skip
            if written is not None:
                written.extend(uid for uid in results if uid)
        LOGGER.info("series %s triaged: %s (%s)", series_uid, decision.lane.value,
                    ", ".join(decision.reasons) or "routine")  # fmt: skip
    return [
        str(r[0])
        for r in conn.execute(
            "SELECT sop_instance_uid FROM triage_instance WHERE series_instance_uid = ANY(%s)",
            ([s for s, _st, _d in final],),
        ).fetchall()
    ]


def _early_critical(
    conn: Conn, ctx: PipelineContext, series_uid: str, study_uid: str, decision: Decision
) -> None:
    """Critical before the series is complete: move the study ahead and alert now; the final
    decision follows when the series is complete."""
    repo.mark_triage_early(conn, series_uid, decision.lane.value)
    from audit import Step
    from dicom_nodes.state.repository import AuditEntry

    ctx.audit(conn, [AuditEntry(Step.TRIAGED, {"study_instance_uid": study_uid,
                                               "reason": "early-critical"})])  # fmt: skip
    effects(conn, ctx, series_uid, study_uid, decision)
    LOGGER.warning("series %s scores critical before it is complete", series_uid)


def effects(
    conn: Conn, ctx: PipelineContext, series_uid: str, study_uid: str, decision: Decision
) -> None:
    """Move the study's waiting work to the decided lane; alert for critical or incomplete."""
    triage = ctx.triage
    assert triage is not None
    if decision.lane is not Lane.ROUTINE:
        repo.promote_study_lanes(conn, {study_uid: (decision.lane.value, decision.lane.rank)})
        if repo.promote_study_items(conn, [study_uid], decision.lane.rank):
            for destination in ctx.destinations:
                defer_forward(conn, ctx.node, destination, decision.lane)
    from dicom_nodes.alerts.model import AlertSpec
    from dicom_nodes.alerts.outbox import raise_alert

    pseudo = triage.pseudonymiser
    study_name = str(pseudo.uid(study_uid)) if pseudo else ""
    series_name = str(pseudo.uid(series_uid)) if pseudo else ""
    model_doc = conn.execute(
        "SELECT model FROM series_triage WHERE series_instance_uid = %s", (series_uid,)
    ).fetchone()
    model = {k: str(v) for k, v in ((model_doc or [None])[0] or {}).items()
             if k in ("name", "version", "blake3")}  # fmt: skip
    if decision.lane is Lane.CRITICAL:
        raise_alert(conn, ctx.audit, AlertSpec(
            node=ctx.node, study_uid=study_uid, series_uid=series_uid, category=1,
            kind="finding", finding="critical-finding", lane=decision.lane.value, model=model,
            certainty=None if decision.score is None else 100.0 * decision.score,
            reasons=decision.reasons, pseudonymous_study_uid=study_name,
            pseudonymous_series_uid=series_name), triage.alerts)  # fmt: skip
    category = triage.settings.incomplete_category
    if decision.verdict is not None and not decision.verdict.complete and category:
        raise_alert(conn, ctx.audit, AlertSpec(
            node=ctx.node, study_uid=study_uid, series_uid=series_uid, category=category,
            kind="incomplete-series", finding=decision.verdict.reasons[0],
            lane=decision.lane.value, reasons=decision.verdict.reasons,
            pseudonymous_study_uid=study_name, pseudonymous_series_uid=series_name),
            triage.alerts)  # fmt: skip

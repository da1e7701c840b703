"""What the routes read from PostgreSQL (read-only, except :func:`acknowledge`).

Studies are found by their UID in the archive (``study.archive_study_uid``, the de-identified
UID viewers see) or, for studies kept under their own UIDs, by ``study_instance_uid``. Answers
carry archive UIDs only: a study's UID as received never leaves the database through here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = ["WorklistFilter", "acknowledge", "find_study", "study_detail", "worklist"]

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class WorklistFilter:
    lane: str | None = None
    modality: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int = 500


_WORKLIST = """
WITH s AS (
    SELECT st.study_instance_uid AS uid,
           coalesce(st.archive_study_uid, st.study_instance_uid) AS archive_uid,
           st.lane, st.state, st.first_received_at, st.last_received_at,
           extract(epoch FROM clock_timestamp() - st.first_received_at) AS waited,
           CASE st.lane WHEN 'critical' THEN 0 WHEN 'urgent' THEN 1 ELSE 2 END AS rank
    FROM study st
    WHERE (%(lane)s::text IS NULL OR st.lane = %(lane)s)
      AND (%(since)s::timestamptz IS NULL OR st.first_received_at >= %(since)s)
      AND (%(until)s::timestamptz IS NULL OR st.first_received_at < %(until)s)
      AND (%(modality)s::text IS NULL OR EXISTS (
            SELECT 1 FROM series se WHERE se.study_instance_uid = st.study_instance_uid
              AND se.modality = %(modality)s))
)
SELECT s.archive_uid, s.lane, s.state, s.first_received_at, s.last_received_at, s.waited,
       s.waited > CASE s.lane WHEN 'urgent' THEN %(urgent_ceiling)s
                              ELSE %(routine_ceiling)s END AND s.rank > 0 AS overdue,
       (SELECT max(t.score) FROM series_triage t
         WHERE t.study_instance_uid = s.uid AND t.state = 'decided') AS certainty,
       (SELECT coalesce(array_agg(DISTINCT r ORDER BY r), '{}') FROM series_triage t,
               unnest(t.reasons) r WHERE t.study_instance_uid = s.uid) AS reasons,
       (SELECT CASE WHEN count(*) = 0 THEN 'unchecked'
                    WHEN bool_or(t.quality = 'incomplete') THEN 'incomplete'
                    WHEN bool_and(t.quality = 'complete') THEN 'complete'
                    ELSE 'unchecked' END
          FROM series_triage t WHERE t.study_instance_uid = s.uid) AS completeness,
       (SELECT coalesce(jsonb_object_agg(x.state, x.n), '{}') FROM (
            SELECT a.state, count(*) AS n FROM series_analysis a
            WHERE a.study_instance_uid = s.uid GROUP BY a.state) x) AS analysis,
       (SELECT coalesce(array_agg(DISTINCT se.modality ORDER BY se.modality), '{}')
          FROM series se WHERE se.study_instance_uid = s.uid AND se.modality <> '') AS modalities,
       extract(epoch FROM clock_timestamp() - s.last_received_at) AS since_last
FROM s
ORDER BY s.rank = 0 DESC, overdue DESC, s.rank, s.first_received_at
LIMIT %(limit)s
"""


def worklist(
    conn: Conn, flt: WorklistFilter, *, routine_ceiling: float, urgent_ceiling: float
) -> list[dict[str, Any]]:
    """The reading order: critical first; then studies past their lane's wait ceiling
    (seconds), most urgent lane first; then the rest by lane; each group by arrival."""
    rows = conn.execute(
        _WORKLIST,
        {
            "lane": flt.lane,
            "modality": flt.modality,
            "since": flt.since,
            "until": flt.until,
            "limit": flt.limit,
            "routine_ceiling": routine_ceiling,
            "urgent_ceiling": urgent_ceiling,
        },
    ).fetchall()
    return [
        {
            "study_uid": r[0],
            "lane": r[1],
            "state": r[2],
            "received_at": r[3].isoformat(),
            "last_image_at": r[4].isoformat(),
            "waiting_seconds": round(float(r[5]), 1),
            "overdue": bool(r[6]),
            "certainty": None if r[7] is None else round(float(r[7]), 4),
            "reasons": list(r[8]),
            "completeness": r[9],
            "analysis": dict(r[10]),
            "modalities": list(r[11]),
            "seconds_since_last_image": round(float(r[12]), 1),
        }
        for r in rows
    ]


def find_study(conn: Conn, uid: str) -> tuple[str, str] | None:
    """(received UID, archive UID) of the study an archive (or own) UID names."""
    row = conn.execute(
        """SELECT study_instance_uid, coalesce(archive_study_uid, study_instance_uid)
           FROM study WHERE archive_study_uid = %s OR study_instance_uid = %s
           ORDER BY archive_study_uid = %s DESC LIMIT 1""",
        (uid, uid, uid),
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


def study_detail(conn: Conn, uid: str, archive_uid: str) -> dict[str, Any]:
    """Triage, measures, model outputs, Radiogate's objects and alerts of a study (by its
    received *uid*); answered under *archive_uid*."""
    study = conn.execute(
        "SELECT lane, state, first_received_at, last_received_at FROM study "
        "WHERE study_instance_uid = %s",
        (uid,),
    ).fetchone()
    assert study is not None
    series = conn.execute(
        """SELECT coalesce(se.archive_series_uid, se.series_instance_uid), se.modality,
                  se.state, se.instances, t.state, t.lane, t.rule_lane, t.model_lane, t.score,
                  t.model, t.quality, t.reasons, cardinality(t.flagged), t.early, t.decided_at,
                  t.sr_sop_instance_uid, t.kos_sop_instance_uid
           FROM series se LEFT JOIN series_triage t USING (series_instance_uid)
           WHERE se.study_instance_uid = %s ORDER BY se.first_received_at""",
        (uid,),
    ).fetchall()
    analyses = conn.execute(
        """SELECT a.analysis_id, a.pipeline, a.state, a.error, a.runs, a.finished_at,
                  a.seg_series_uid, a.seg_sop_instance_uid, a.sr_series_uid,
                  a.sr_sop_instance_uid
           FROM series_analysis a WHERE a.study_instance_uid = %s ORDER BY a.created_at""",
        (uid,),
    ).fetchall()
    values = conn.execute(
        """SELECT f.analysis_id, f.segment_number, f.segment_label, f.feature, f.code_value,
                  f.code_scheme, f.code_meaning, f.unit, f.derivation, f.value, f.imputed,
                  f.missing_reason
           FROM feature_value f JOIN series_analysis a USING (analysis_id)
           WHERE f.study_instance_uid = %s AND f.run = a.runs
           ORDER BY f.analysis_id, f.segment_number, f.feature""",
        (uid,),
    ).fetchall()
    alerts = conn.execute(
        """SELECT a.alert_id, a.category, a.state, a.level, a.payload->>'kind',
                  a.payload->>'finding', a.created_at, nullif(a.acknowledged_by, ''),
                  a.acknowledged_at,
                  coalesce(array_agg(DISTINCT d.target) FILTER (WHERE d.state = 'delivered'),
                           '{}')
           FROM alert a LEFT JOIN alert_delivery d USING (alert_id)
           WHERE a.study_instance_uid = %s GROUP BY a.alert_id ORDER BY a.created_at""",
        (uid,),
    ).fetchall()
    objects: list[dict[str, Any]] = []
    triage = []
    for r in series:
        triage.append(
            {
                "series_uid": r[0],
                "modality": r[1],
                "series_state": r[2],
                "instances": r[3],
                "state": r[4],
                "lane": r[5],
                "rule_lane": r[6],
                "model_lane": r[7],
                "certainty": r[8],
                "model": r[9],
                "completeness": r[10],
                "reasons": list(r[11] or ()),
                "flagged_images": r[12],
                "early": r[13],
                "decided_at": _iso(r[14]),
            }
        )
        objects += [
            {"kind": k, "sop_instance_uid": v, "series_uid": None}
            for k, v in (("SR", r[15]), ("KOS", r[16]))
            if v
        ]
    analysis = []
    for r in analyses:
        analysis.append(
            {
                "analysis_id": r[0],
                "pipeline": r[1],
                "state": r[2],
                "error": r[3] or None,
                "runs": r[4],
                "finished_at": _iso(r[5]),
            }
        )
        objects += [
            {"kind": k, "series_uid": s, "sop_instance_uid": v}
            for k, s, v in (("SEG", r[6], r[7]), ("SR", r[8], r[9]))
            if v
        ]
    measures, outputs = [], []
    for r in values:
        item = {
            "analysis_id": r[0],
            "segment_number": r[1],
            "segment": r[2],
            "code": {"value": r[4], "scheme": r[5], "meaning": r[6]},
            "unit": r[7],
            "derivation": r[8],
            "value": r[9],
            "imputed": r[10],
            "missing_reason": r[11] or None,
        }
        if str(r[3]).startswith("model:"):
            outputs.append(item)
        else:
            item["feature"] = r[3]
            measures.append(item)
    return {
        "study_uid": archive_uid,
        "lane": study[0],
        "state": study[1],
        "received_at": _iso(study[2]),
        "last_image_at": _iso(study[3]),
        "triage": triage,
        "analysis": analysis,
        "measures": measures,
        "model_outputs": outputs,
        "objects": objects,
        "alerts": [
            {
                "alert_id": r[0],
                "category": r[1],
                "state": r[2],
                "level": r[3],
                "kind": r[4],
                "finding": r[5],
                "raised_at": _iso(r[6]),
                "acknowledged_by": r[7],
                "acknowledged_at": _iso(r[8]),
                "delivered_to": list(r[9]),
            }
            for r in alerts
        ],
    }


def acknowledge(conn: Conn, alert_id: str, user: str) -> tuple[str, str | None]:
    """(outcome, study UID) of acknowledging *alert_id* as *user*; the caller's transaction."""
    row = conn.execute(
        "SELECT outcome, study_instance_uid FROM radiogate_acknowledge_alert(%s, %s)",
        (alert_id, user),
    ).fetchone()
    assert row is not None
    return str(row[0]), row[1]

"""When each stage of a study happened: ``radiogate study show UID`` and the stage histograms.

Per series: last instance received, series complete (and by what), triage decided (lane,
score, data quality), the triage SR and KOS confirmed by the archive, the alert delivered and
acknowledged (by whom). All read from the rows the stages wrote; nothing here writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from prometheus_client.core import HistogramMetricFamily

__all__ = ["STAGES", "stage_histograms", "study_timeline"]

Conn = psycopg.Connection[Any]


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def study_timeline(conn: Conn, study_uid: str) -> dict[str, Any] | None:
    """The study's stages, series by series; None when the study is unknown."""
    study = conn.execute(
        """SELECT state, lane, first_received_at, last_received_at, completed_at, completed_by
           FROM study WHERE study_instance_uid = %s""",
        (study_uid,),
    ).fetchone()
    if study is None:
        return None
    instances = dict(
        conn.execute(
            """SELECT state, count(*) FROM ingest_instance WHERE study_instance_uid = %s
               GROUP BY state""",
            (study_uid,),
        ).fetchall()
    )
    series = []
    for row in conn.execute(
        """SELECT s.series_instance_uid, s.modality, s.state, s.instances, s.expected,
                  s.last_received_at, s.completed_at, s.completed_by,
                  t.state, t.lane, t.score, t.quality, t.reasons, t.decided_at, t.early,
                  t.model->>'name', t.model->>'version',
                  (SELECT max(f.confirmed_at) FROM forward_item f
                   WHERE f.sop_instance_uid IN (t.sr_sop_instance_uid, t.kos_sop_instance_uid)
                     AND f.state = 'confirmed')
           FROM series s LEFT JOIN series_triage t USING (series_instance_uid)
           WHERE s.study_instance_uid = %s ORDER BY s.first_received_at""",
        (study_uid,),
    ).fetchall():
        series.append({
            "series_instance_uid": row[0], "modality": row[1], "state": row[2],
            "instances": row[3], "expected": row[4],
            "last_instance_received": _iso(row[5]),
            "complete": _iso(row[6]), "completed_by": row[7] or None,
            "triage": None if row[8] is None else {
                "state": row[8], "lane": row[9], "score": row[10], "quality": row[11],
                "reasons": list(row[12] or ()), "decided": _iso(row[13]), "early": row[14],
                "model": None if row[15] is None else f"{row[15]} {row[16]}",
                "results_confirmed": _iso(row[17]),
            },
        })  # fmt: skip
    alerts = [
        {"alert": r[0], "category": r[1], "kind": r[2], "finding": r[3], "state": r[4],
         "level": r[5], "raised": _iso(r[6]), "delivered": _iso(r[7]),
         "acknowledged": _iso(r[8]), "acknowledged_by": r[9] or None}
        for r in conn.execute(
            """SELECT a.alert_id, a.category, a.payload->>'kind', a.payload->>'finding', a.state,
                      a.level, a.created_at,
                      (SELECT min(d.delivered_at) FROM alert_delivery d
                       WHERE d.alert_id = a.alert_id),
                      a.acknowledged_at, a.acknowledged_by
               FROM alert a WHERE a.study_instance_uid = %s ORDER BY a.created_at""",
            (study_uid,),
        ).fetchall()
    ]  # fmt: skip
    return {
        "study_instance_uid": study_uid,
        "state": study[0],
        "lane": study[1],
        "first_instance_received": _iso(study[2]),
        "last_instance_received": _iso(study[3]),
        "complete": _iso(study[4]),
        "completed_by": study[5] or None,
        "instances": instances,
        "series": series,
        "alerts": alerts,
    }


STAGES: Sequence[tuple[str, str, str]] = (
    ("received_to_series_complete", "s.last_received_at", "s.completed_at"),
    ("series_complete_to_triage_decided", "s.completed_at", "t.decided_at"),
    ("received_to_triage_decided", "s.last_received_at", "t.decided_at"),
    ("received_to_results_confirmed", "s.last_received_at", "r.confirmed_at"),
    ("triage_decided_to_alert_delivered", "t.decided_at", "a.delivered_at"),
    ("alert_delivered_to_acknowledged", "a.delivered_at", "a.acknowledged_at"),
)
"""(name, start, end) of each stage histogram (seconds)."""

BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


def stage_histograms(conn: Conn, node: str) -> Iterator[HistogramMetricFamily]:
    """``radiogate_stage_seconds{stage=…}``: how long each stage took, over every series of
    the node (cumulative: rows are never deleted)."""
    family = HistogramMetricFamily(
        "radiogate_stage_seconds",
        "Seconds from one stage of a series to the next (last instance received, series "
        "complete, triage decided, results confirmed in the archive, alert delivered and "
        "acknowledged)",
        labels=["node", "stage"],
    )
    cases = ", ".join(
        f"extract(epoch FROM {end} - {start}) AS {name}" for name, start, end in STAGES
    )
    buckets = ", ".join(
        f"count(*) FILTER (WHERE {name} <= {b})" for name, _s, _e in STAGES for b in BUCKETS
    )
    sums = ", ".join(f"coalesce(sum({name}), 0), count({name})" for name, _s, _e in STAGES)
    row = conn.execute(
        f"""WITH d AS (
                SELECT {cases}
                FROM series s
                LEFT JOIN series_triage t USING (series_instance_uid)
                LEFT JOIN LATERAL (
                    SELECT max(f.confirmed_at) AS confirmed_at FROM forward_item f
                    WHERE f.sop_instance_uid IN (t.sr_sop_instance_uid, t.kos_sop_instance_uid)
                ) r ON true
                LEFT JOIN LATERAL (
                    SELECT min(dl.delivered_at) AS delivered_at, min(al.acknowledged_at)
                           AS acknowledged_at
                    FROM alert al LEFT JOIN alert_delivery dl USING (alert_id)
                    WHERE al.series_instance_uid = s.series_instance_uid
                ) a ON true
                WHERE s.node = %s)
            SELECT {buckets}, {sums} FROM d""",  # noqa: S608 - names and buckets are constants
        (node,),
    ).fetchone()
    assert row is not None
    n = len(BUCKETS)
    for index, (name, _s, _e) in enumerate(STAGES):
        counts = row[index * n : (index + 1) * n]
        total_sum, total_count = row[len(STAGES) * n + 2 * index : len(STAGES) * n + 2 * index + 2]
        family.add_metric(
            [node, name],
            [(str(b), float(c)) for b, c in zip(BUCKETS, counts, strict=True)]
            + [("+Inf", float(total_count))],
            float(total_sum),
        )
    yield family

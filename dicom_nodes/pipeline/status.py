"""``radiogate status``: what a node's pipeline holds, read from PostgreSQL."""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["WAITING_INSTANCE_STATES", "status"]

WAITING_INSTANCE_STATES = ("received", "routed")
"""Instance states in which the pipeline still has automatic work to do."""


def status(conn: psycopg.Connection[Any], node: str) -> dict[str, Any]:
    """Counts per state, pending items per lane, items held for a person, and the age of the
    oldest instance the pipeline still works on (held, cancelled and unroutable ones wait for
    a person, not for the pipeline, and are counted separately)."""
    by_state = dict(
        conn.execute(
            "SELECT state, count(*) FROM ingest_instance WHERE node = %s GROUP BY state", (node,)
        ).fetchall()
    )
    lanes = dict(
        conn.execute(
            """SELECT CASE f.lane_rank WHEN 0 THEN 'critical' WHEN 1 THEN 'urgent'
                      ELSE 'routine' END, count(*)
               FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
               WHERE i.node = %s AND f.state IN ('pending', 'sent') GROUP BY 1""",
            (node,),
        ).fetchall()
    )
    forward = dict(
        conn.execute(
            """SELECT f.state, count(*) FROM forward_item f
               JOIN ingest_instance i USING (sop_instance_uid)
               WHERE i.node = %s GROUP BY f.state""",
            (node,),
        ).fetchall()
    )
    oldest = conn.execute(
        """SELECT extract(epoch FROM clock_timestamp() - min(received_at)) FROM ingest_instance
           WHERE node = %s AND state = ANY(%s)""",
        (node, list(WAITING_INSTANCE_STATES)),
    ).fetchone()
    studies = dict(conn.execute("SELECT state, count(*) FROM study GROUP BY state").fetchall())
    return {
        "node": node,
        "instances": by_state,
        "forward_items": forward,
        "queue_depth_by_lane": {
            lane: lanes.get(lane, 0) for lane in ("critical", "urgent", "routine")
        },
        "waiting_for_destination": forward.get("pending", 0) + forward.get("sent", 0),
        "held_for_a_person": forward.get("quarantined", 0) + forward.get("dead", 0),
        "unroutable": by_state.get("unroutable", 0),
        "oldest_unconfirmed_seconds": float(oldest[0]) if oldest and oldest[0] is not None else 0.0,
        "studies": studies,
    }

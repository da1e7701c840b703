"""Pipeline state in PostgreSQL: claiming work, recording outcomes, completing studies.

Work is claimed with ``FOR UPDATE SKIP LOCKED`` inside the transaction that also records its
outcome: a worker killed in the middle of a batch leaves no half-done state behind, its rows are
unlocked when PostgreSQL notices the dead connection, and another worker takes them (a
destination receiving an instance twice is harmless; forwarding is idempotent by SOP Instance
UID). Every state change goes through :mod:`dicom_nodes.pipeline.states`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from dicom_nodes.pipeline.lanes import Lane
from dicom_nodes.pipeline.states import InstanceState, check_instance

__all__ = [
    "ClaimedForward",
    "DeidOutput",
    "Delivery",
    "ReceivedInstance",
    "Routing",
    "claim_forwards",
    "claim_received",
    "complete_quiet_studies",
    "defer_job",
    "mark_routed",
    "record_deid_outputs",
]

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class ReceivedInstance:
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    spool_path: Path
    calling_ae: str
    called_ae: str


@dataclass(frozen=True)
class ClaimedForward:
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    spool_path: Path
    """The file to send: the instance as received, or its de-identified copy (``profile``)."""
    destination: str
    lane: Lane
    attempts: int
    profile: str = ""


def defer_job(
    conn: Conn,
    task: str,
    node: str,
    args: dict[str, Any],
    *,
    lock_key: str,
    priority: int = 0,
    schedule_at: dt.datetime | None = None,
) -> bool:
    """Defer a procrastinate job in the caller's transaction.

    *lock_key* is both procrastinate's queueing lock (at most one job waiting) and its lock (at
    most one running): one loop per key drains the work, and the others stay free. Returns
    False when an identical job is already waiting.
    """
    row = conn.execute(
        """INSERT INTO procrastinate_jobs
               (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT DO NOTHING RETURNING id""",
        (f"node:{node}", task, priority, lock_key, lock_key, Jsonb(args), schedule_at),
    ).fetchone()
    return row is not None


def claim_received(conn: Conn, node: str, limit: int) -> list[ReceivedInstance]:
    rows = conn.execute(
        """SELECT sop_instance_uid, sop_class_uid, study_instance_uid, transfer_syntax_uid,
                  spool_path, calling_ae, called_ae
           FROM ingest_instance
           WHERE node = %s AND state = 'received'
           ORDER BY received_at
           LIMIT %s FOR UPDATE SKIP LOCKED""",
        (node, limit),
    ).fetchall()
    return [ReceivedInstance(r[0], r[1], r[2], r[3], Path(r[4]), r[5], r[6]) for r in rows]


@dataclass(frozen=True)
class Delivery:
    """One destination of a routed instance: which version it gets, and whether it waits."""

    destination: str
    profile: str = ""
    """The de-identification profile applied before sending ('' = as received)."""
    quarantined: bool = False
    """Held back (burned-in text without a mask, or de-identification failed)."""


@dataclass(frozen=True)
class DeidOutput:
    """A de-identified copy written to the spool for (instance, profile)."""

    sop_instance_uid: str
    profile: str
    spool_path: Path
    transfer_syntax_uid: str
    size: int
    note: str = ""


@dataclass(frozen=True)
class Routing:
    """The routing decision for one received instance."""

    instance: ReceivedInstance
    route: str
    lane: Lane
    deliveries: tuple[Delivery, ...]

    @property
    def destinations(self) -> tuple[str, ...]:
        return tuple(d.destination for d in self.deliveries)


def mark_routed(conn: Conn, decisions: Sequence[Routing]) -> None:
    """received → routed for a batch (pipelined statements: one round trip per kind)."""
    check_instance(InstanceState.RECEIVED, InstanceState.ROUTED)
    cur = conn.cursor()
    cur.executemany(
        """UPDATE ingest_instance SET state = 'routed', route = %s, lane = %s,
               state_changed_at = clock_timestamp()
           WHERE sop_instance_uid = %s AND state = 'received'""",
        [(d.route, d.lane.value, d.instance.sop_instance_uid) for d in decisions],
    )
    items = [
        (
            d.instance.sop_instance_uid,
            delivery.destination,
            d.lane.rank,
            delivery.profile,
            "quarantined" if delivery.quarantined else "pending",
        )
        for d in decisions
        for delivery in d.deliveries
    ]
    if items:
        cur.executemany(
            """INSERT INTO forward_item (sop_instance_uid, destination, lane_rank, profile, state)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (sop_instance_uid, destination) DO UPDATE
                   SET state = EXCLUDED.state, profile = EXCLUDED.profile,
                       lane_rank = LEAST(forward_item.lane_rank, EXCLUDED.lane_rank),
                       next_attempt_at = clock_timestamp()""",
            items,
        )
    best: dict[str, Lane] = {}
    for d in decisions:
        uid = d.instance.study_instance_uid
        best[uid] = Lane.most_urgent(best[uid], d.lane) if uid in best else d.lane
    cur.executemany(
        """UPDATE study SET lane = %s
           WHERE study_instance_uid = %s
             AND %s < (CASE lane WHEN 'critical' THEN 0 WHEN 'urgent' THEN 1 ELSE 2 END)""",
        [(lane.value, uid, lane.rank) for uid, lane in best.items()],
    )


def record_deid_outputs(conn: Conn, outputs: Sequence[DeidOutput]) -> None:
    """Record de-identified copies already durable in the spool (re-routing replaces them)."""
    if not outputs:
        return
    conn.cursor().executemany(
        """INSERT INTO deid_output
               (sop_instance_uid, profile, spool_path, transfer_syntax_uid, size, note)
           VALUES (%s, %s, %s, %s, %s, %s)
           ON CONFLICT (sop_instance_uid, profile) DO UPDATE
               SET spool_path = EXCLUDED.spool_path, size = EXCLUDED.size,
                   transfer_syntax_uid = EXCLUDED.transfer_syntax_uid, note = EXCLUDED.note""",
        [
            (o.sop_instance_uid, o.profile, str(o.spool_path), o.transfer_syntax_uid, o.size,
             o.note)
            for o in outputs
        ],
    )  # fmt: skip


def claim_forwards(conn: Conn, node: str, destination: str, limit: int) -> list[ClaimedForward]:
    """Pending items for *destination* of the most urgent lane that has any, oldest first.

    A batch holds one lane only: a batch is sent and confirmed as a whole, so a critical
    item in a batch filled up with routine ones would wait for all of them."""
    ready = """FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
           LEFT JOIN deid_output d
                  ON d.sop_instance_uid = f.sop_instance_uid AND d.profile = f.profile
           WHERE f.destination = %s AND f.state = 'pending' AND i.node = %s
             AND f.next_attempt_at <= clock_timestamp()"""
    head = conn.execute(
        f"SELECT f.lane_rank {ready} ORDER BY f.lane_rank, f.created_at"
        " LIMIT 1 FOR UPDATE OF f SKIP LOCKED",
        (destination, node),
    ).fetchone()
    if head is None:
        return []
    rows = conn.execute(
        f"""SELECT f.sop_instance_uid, i.sop_class_uid, i.study_instance_uid,
                  coalesce(d.transfer_syntax_uid, i.transfer_syntax_uid),
                  coalesce(d.spool_path, i.spool_path), f.destination, f.lane_rank, f.attempts,
                  f.profile, f.profile <> '' AND d.spool_path IS NULL
           {ready} AND f.lane_rank = %s
           ORDER BY f.created_at
           LIMIT %s FOR UPDATE OF f SKIP LOCKED""",
        (destination, node, head[0], limit),
    ).fetchall()
    lanes = {lane.rank: lane for lane in Lane}
    out: list[ClaimedForward] = []
    for r in rows:
        if r[9]:  # a profile without its copy must never fall back to the original
            raise RuntimeError(f"de-identified copy of {r[0]} ({r[8]}) is not recorded")
        out.append(
            ClaimedForward(
                r[0], r[1], r[2], r[3], Path(r[4]), r[5], lanes[int(r[6])], int(r[7]), r[8]
            )
        )
    return out


def pending_counts(conn: Conn, node: str) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    return dict(
        cur.execute(
            """SELECT
                 (SELECT count(*) FROM ingest_instance WHERE node = %(n)s AND state = 'received')
                     AS received,
                 (SELECT count(*) FROM forward_item f
                  JOIN ingest_instance i USING (sop_instance_uid)
                  WHERE i.node = %(n)s AND f.state = 'pending') AS pending,
                 (SELECT min(f.next_attempt_at) FROM forward_item f
                  JOIN ingest_instance i USING (sop_instance_uid)
                  WHERE i.node = %(n)s AND f.state = 'pending') AS next_attempt_at""",
            {"n": node},
        ).fetchone()
        or {}
    )


def fail_stalled_jobs(conn: Conn, node: str, seconds_since_heartbeat: float) -> list[int]:
    """Mark jobs of dead workers failed (procrastinate keeps them 'doing' and their lock held).

    The work they held was claimed inside a transaction that died with them, so it is waiting
    again; :func:`dicom_nodes.pipeline.tasks.kick` defers fresh jobs for it.
    """
    rows = conn.execute(
        """SELECT job.id FROM procrastinate_jobs job
           LEFT JOIN procrastinate_workers w ON w.id = job.worker_id
           WHERE job.status = 'doing' AND job.queue_name = %s
             AND (job.worker_id IS NULL
                  OR w.last_heartbeat < clock_timestamp() - make_interval(secs => %s))""",
        (f"node:{node}", seconds_since_heartbeat),
    ).fetchall()
    ids = [int(r[0]) for r in rows]
    for job_id in ids:
        conn.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', false)", (job_id,))
    return ids


def complete_quiet_studies(conn: Conn, quiet_seconds: float) -> list[tuple[str, int]]:
    """receiving → complete for studies quiet for *quiet_seconds*; returns (uid, increment)."""
    rows = conn.execute(
        """UPDATE study SET state = 'complete', completed_at = clock_timestamp(),
               completed_by = 'quiet-period'
           WHERE state = 'receiving'
             AND last_received_at < clock_timestamp() - make_interval(secs => %s)
           RETURNING study_instance_uid, increments""",
        (quiet_seconds,),
    ).fetchall()
    return [(str(r[0]), int(r[1])) for r in rows]


def complete_study(conn: Conn, study_uid: str, by: str) -> bool:
    """Complete one study now (a rule or an admin); False if it was not receiving."""
    row = conn.execute(
        """UPDATE study SET state = 'complete', completed_at = clock_timestamp(), completed_by = %s
           WHERE study_instance_uid = %s AND state = 'receiving' RETURNING 1""",
        (by, study_uid),
    ).fetchone()
    return row is not None

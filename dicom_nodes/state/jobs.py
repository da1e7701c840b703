"""The pipeline's procrastinate jobs: task names, queues, priorities and locks, in one place.

Each node has two queues: ``node:<name>`` for every job but analysis, and
``node:<name>:analysis`` (:func:`analysis_queue`) for analysis, so that analysis can run in a
worker process of its own at a lower priority (:mod:`dicom_nodes.pipeline.pools`); only workers
of the node that holds the spool read them. A job is a loop that drains one kind of work and
stops when none is ready; its lock key makes sure at most one such loop waits and at most one
runs:

============================  =================================  ==========================
task                          lock (and queueing lock)           priority (higher first)
============================  =================================  ==========================
``radiogate.route_received``  ``route:<node>``                   100 (before any forward)
``radiogate.forward_pending`` ``forward:<node>:<dest>:<lane>``   lane: 100 / 50 / 0
``radiogate.confirm_sent``    ``confirm:<node>:<dest>``          10
``radiogate.triage_series``   ``triage:<node>``                  95
``radiogate.deliver_alerts``  ``alerts:<node>``                  90
``radiogate.analyse_series``  ``analyse:<node>``                 -10 (most urgent study first)
============================  =================================  ==========================

Jobs are deferred in the transaction of the state change that makes work ready (the receiver
defers routing in its ingest statement, :data:`dicom_nodes.state.repository.INGEST_SQL`), so
no work is ever waiting without a job; the worker's housekeeping re-defers jobs for waiting
work after a crash (:func:`dicom_nodes.pipeline.housekeeping.kick`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from dicom_nodes.state.lanes import Lane

__all__ = [
    "ALERT_PRIORITY",
    "ALERT_TASK",
    "ANALYSE_PRIORITY",
    "ANALYSE_TASK",
    "CONFIRM_PRIORITY",
    "CONFIRM_TASK",
    "FORWARD_TASK",
    "ROUTE_PRIORITY",
    "ROUTE_TASK",
    "STALLED_AFTER",
    "TRIAGE_PRIORITY",
    "TRIAGE_TASK",
    "analysis_queue",
    "defer_alerts",
    "defer_analyse",
    "defer_confirm",
    "defer_forward",
    "defer_job",
    "defer_route",
    "defer_triage",
    "fail_stalled_jobs",
    "queue_name",
    "route_lock",
]

Conn = psycopg.Connection[Any]

ROUTE_TASK = "radiogate.route_received"
FORWARD_TASK = "radiogate.forward_pending"
CONFIRM_TASK = "radiogate.confirm_sent"
ALERT_TASK = "radiogate.deliver_alerts"
TRIAGE_TASK = "radiogate.triage_series"
ANALYSE_TASK = "radiogate.analyse_series"
ROUTE_PRIORITY = 100
"""Routing decides the lanes, so it runs before any forwarding."""
CONFIRM_PRIORITY = 10
"""Confirming releases spool space; it runs before the routine lane's sending."""
TRIAGE_PRIORITY = 95
"""A critical series moves its study ahead: decided before any forwarding."""
ANALYSE_PRIORITY = -10
"""Analysis takes what is left: the receiver's work and forwarding come first."""
ALERT_PRIORITY = 90
"""Alerts go out before any forwarding but critical routing."""
STALLED_AFTER = 15.0
"""Seconds without a worker heartbeat after which its running jobs are considered dead."""


def queue_name(node: str) -> str:
    return f"node:{node}"


def analysis_queue(node: str) -> str:
    """The queue of *node*'s analysis jobs (``radiogate worker --jobs analysis``)."""
    return f"node:{node}:analysis"


def route_lock(node: str) -> str:
    return f"route:{node}"


def defer_job(
    conn: Conn,
    task: str,
    node: str,
    args: dict[str, Any],
    *,
    lock_key: str,
    priority: int = 0,
    schedule_at: dt.datetime | None = None,
    queue: str = "",
) -> bool:
    """Defer a procrastinate job in the caller's transaction, on *queue* (default: the node's
    :func:`queue_name`).

    *lock_key* is both procrastinate's queueing lock (at most one job waiting) and its lock (at
    most one running). Returns False when an identical job is already waiting.
    """
    row = conn.execute(
        """INSERT INTO procrastinate_jobs
               (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT DO NOTHING RETURNING id""",
        (queue or queue_name(node), task, priority, lock_key, lock_key, Jsonb(args), schedule_at),
    ).fetchone()
    return row is not None


def defer_route(conn: Conn, node: str, when: dt.datetime | None = None) -> bool:
    """The routing loop of *node* (same job as the receiver's ingest statement defers)."""
    return defer_job(
        conn, ROUTE_TASK, node, {"node": node}, lock_key=route_lock(node),
        priority=ROUTE_PRIORITY, schedule_at=when,
    )  # fmt: skip


def defer_forward(
    conn: Conn, node: str, destination: str, lane: Lane, when: dt.datetime | None = None
) -> bool:
    """The forwarding loop of (node, destination, lane)."""
    return defer_job(
        conn,
        FORWARD_TASK,
        node,
        {"node": node, "destination": destination},
        lock_key=f"forward:{node}:{destination}:{lane.value}",
        priority=lane.priority,
        schedule_at=when,
    )


def defer_confirm(conn: Conn, node: str, destination: str, when: dt.datetime | None) -> bool:
    """The loop that asks *destination* again about items sent but not yet confirmed."""
    return defer_job(
        conn,
        CONFIRM_TASK,
        node,
        {"node": node, "destination": destination},
        lock_key=f"confirm:{node}:{destination}",
        priority=CONFIRM_PRIORITY,
        schedule_at=when,
    )


def defer_alerts(conn: Conn, node: str, when: dt.datetime | None = None) -> bool:
    """The loop that delivers the node's pending alert deliveries."""
    return defer_job(
        conn, ALERT_TASK, node, {"node": node}, lock_key=f"alerts:{node}",
        priority=ALERT_PRIORITY, schedule_at=when,
    )  # fmt: skip


def defer_triage(conn: Conn, node: str, when: dt.datetime | None = None) -> bool:
    """The loop that decides the node's series waiting for triage."""
    return defer_job(
        conn, TRIAGE_TASK, node, {"node": node}, lock_key=f"triage:{node}",
        priority=TRIAGE_PRIORITY, schedule_at=when,
    )  # fmt: skip


def defer_analyse(conn: Conn, node: str, when: dt.datetime | None = None) -> bool:
    """The loop that runs the node's ready analyses, one at a time."""
    return defer_job(
        conn, ANALYSE_TASK, node, {"node": node}, lock_key=f"analyse:{node}",
        priority=ANALYSE_PRIORITY, schedule_at=when, queue=analysis_queue(node),
    )  # fmt: skip


def fail_stalled_jobs(conn: Conn, node: str, seconds_since_heartbeat: float) -> list[int]:
    """Mark jobs of dead workers failed (procrastinate keeps them 'doing' and their lock held).

    The work they held was claimed inside a transaction that died with them, so it is waiting
    again; the housekeeping defers fresh jobs for it."""
    rows = conn.execute(
        """SELECT job.id FROM procrastinate_jobs job
           LEFT JOIN procrastinate_workers w ON w.id = job.worker_id
           WHERE job.status = 'doing' AND job.queue_name IN (%s, %s)
             AND (job.worker_id IS NULL
                  OR w.last_heartbeat < clock_timestamp() - make_interval(secs => %s))""",
        (queue_name(node), analysis_queue(node), seconds_since_heartbeat),
    ).fetchall()
    ids = [int(r[0]) for r in rows]
    for job_id in ids:
        conn.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', false)", (job_id,))
    return ids

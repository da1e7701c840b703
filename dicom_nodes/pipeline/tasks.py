"""The pipeline's job bodies: route what was received, forward and confirm, complete studies.

They run in ``radiogate worker`` (procrastinate jobs on the node's queue ``node:<name>``, so
only workers of the node that holds the spool read it) and take their dependencies from a
:class:`PipelineContext`. Each round is one transaction: claim rows (SKIP LOCKED), do the work,
record outcomes and audit events, defer follow-up jobs — all or nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from config.routes import LaneRule, PipelineSettings, RouteSettings
from dicom_nodes.forward.model import Destination, OutgoingFile, SendResult
from dicom_nodes.pipeline import store
from dicom_nodes.pipeline.lanes import Lane
from dicom_nodes.pipeline.routes import (
    StepKind,
    facts_from_file,
    lane_for,
    parse_step,
    select_route,
    tags_needed,
)
from dicom_nodes.pipeline.states import InstanceState, check_instance

__all__ = [
    "FORWARD_TASK",
    "ROUTE_TASK",
    "AuditHook",
    "PipelineContext",
    "forward_round",
    "route_round",
]

LOGGER = logging.getLogger(__name__)
ROUTE_TASK = "radiogate.route_received"
FORWARD_TASK = "radiogate.forward_pending"
STALLED_AFTER = 15.0
"""Seconds without a worker heartbeat after which its running jobs are considered dead."""
ROUTE_PRIORITY = 100
"""Routing decides the lanes, so it runs before any forwarding (same value in db/ingest.py)."""

AuditHook = Callable[[psycopg.Connection[Any], str, Mapping[str, Any]], None]
"""Appends an audit event in the caller's transaction: (conn, step, details)."""


def _no_audit(_conn: psycopg.Connection[Any], _step: str, _details: Mapping[str, Any]) -> None:
    return None


@dataclass
class PipelineContext:
    node: str
    pool: ConnectionPool
    routes: Sequence[RouteSettings]
    lane_rules: Sequence[LaneRule]
    destinations: Mapping[str, Destination]
    settings: PipelineSettings = field(default_factory=PipelineSettings)
    audit: AuditHook = _no_audit
    _warned: set[str] = field(default_factory=set)

    def warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            LOGGER.warning("%s", message)


def route_round(ctx: PipelineContext) -> int:
    """Route one batch of received instances; return how many were routed."""
    needed = tags_needed(ctx.routes, ctx.lane_rules)
    with ctx.pool.connection() as conn, conn.transaction():
        batch = store.claim_received(conn, ctx.node, ctx.settings.batch_size)
        if not batch:
            return 0
        lanes_touched: dict[str, Lane] = {}
        decisions: list[store.Routing] = []
        completed: list[tuple[str, str]] = []
        for inst in batch:
            try:
                facts = facts_from_file(inst.spool_path, inst.calling_ae, inst.called_ae, needed)
            except (OSError, ValueError) as exc:
                LOGGER.error(
                    "cannot read spooled %s: %s", inst.sop_instance_uid, type(exc).__name__
                )
                continue
            route = select_route(ctx.routes, facts)
            if route is None:
                ctx.warn_once("an instance matched no route; add a catch-all route")
                continue
            lane = lane_for(route, ctx.lane_rules, facts)
            destinations: list[str] = []
            for text in route.steps:
                step = parse_step(text)
                if step.kind is StepKind.FORWARD:
                    if step.argument not in ctx.destinations:
                        ctx.warn_once(f"route {route.name}: unknown destination {step.argument!r}")
                        continue
                    destinations.append(step.argument)
                else:
                    ctx.warn_once(
                        f"route {route.name}: step {text!r} is not available in this version; "
                        "skipped"
                    )
            decisions.append(store.Routing(inst, route.name, lane, tuple(destinations)))
            if route.complete_immediately:
                completed.append((inst.study_instance_uid, route.name))
            for dest in destinations:
                previous = lanes_touched.get(dest)
                lanes_touched[dest] = lane if previous is None else Lane.most_urgent(previous, lane)
        store.mark_routed(conn, decisions)
        for d in decisions:
            ctx.audit(
                conn,
                "routed",
                {
                    "sop_instance_uid": d.instance.sop_instance_uid,
                    "sop_class_uid": d.instance.sop_class_uid,
                    "study_instance_uid": d.instance.study_instance_uid,
                    "route": d.route,
                    "lane": d.lane.value,
                },
            )
        for study_uid, route_name in dict(completed).items():
            if store.complete_study(conn, study_uid, f"rule:{route_name}"):
                ctx.audit(
                    conn,
                    "study-complete",
                    {"study_instance_uid": study_uid, "by": f"rule:{route_name}"},
                )
        for dest, lane in lanes_touched.items():
            store.defer_job(
                conn,
                FORWARD_TASK,
                ctx.node,
                {"node": ctx.node, "destination": dest},
                lock_key=f"forward:{ctx.node}:{dest}:{lane.value}",
                priority=lane.priority,
            )
        return len(batch)


def _backoff(settings: PipelineSettings, attempts: int) -> float:
    return float(min(settings.retry_max, settings.retry_initial * (2 ** max(0, attempts - 1))))


def forward_round(ctx: PipelineContext, destination: str) -> int:
    """Send one batch of pending items to *destination*, confirm, release; return the count."""
    dest = ctx.destinations[destination]
    with ctx.pool.connection() as conn, conn.transaction():
        batch = store.claim_forwards(conn, ctx.node, destination, ctx.settings.batch_size)
        if not batch:
            _schedule_retry(conn, ctx, destination)
            return 0
        files = [
            OutgoingFile(b.spool_path, b.sop_class_uid, b.sop_instance_uid, b.transfer_syntax_uid)
            for b in batch
        ]
        results = dest.send(files)
        by_uid: dict[str, SendResult] = {r.sop_instance_uid: r for r in results}
        sent = [b for b in batch if by_uid[b.sop_instance_uid].ok]
        confirmed: dict[str, bool] = {}
        if sent:
            try:
                confirmed = dest.confirm(sent)
            except Exception as exc:
                LOGGER.warning("confirmation from %s failed: %s", destination, type(exc).__name__)
        for item in batch:
            result = by_uid[item.sop_instance_uid]
            _record(conn, ctx, item, result, confirmed.get(item.sop_instance_uid, False))
        _advance_instances(conn, ctx, [b.sop_instance_uid for b in batch])
        # No follow-up job here: the calling job loops while work is ready, keeping one
        # forwarding loop per destination and lane so routing always finds a free slot.
    _release_confirmed(ctx, [b.sop_instance_uid for b in batch])
    return len(batch)


def _record(
    conn: psycopg.Connection[Any],
    ctx: PipelineContext,
    item: store.ClaimedForward,
    result: SendResult,
    confirmed: bool,
) -> None:
    details = {
        "sop_instance_uid": item.sop_instance_uid,
        "sop_class_uid": item.sop_class_uid,
        "study_instance_uid": item.study_instance_uid,
        "destination": item.destination,
        "status": result.status,
    }
    if result.ok:
        state = "confirmed" if confirmed else "sent"
        conn.execute(
            """UPDATE forward_item SET state = %s, attempts = attempts + 1,
                   last_status = %s, last_error = '', note = %s, sent_transfer_syntax = %s,
                   sent_at = clock_timestamp(),
                   confirmed_at = CASE WHEN %s THEN clock_timestamp() END
               WHERE sop_instance_uid = %s AND destination = %s""",
            (state, result.status, result.note, result.sent_transfer_syntax, confirmed,
             item.sop_instance_uid, item.destination),
        )  # fmt: skip
        ctx.audit(conn, "forwarded", details)
        if confirmed:
            ctx.audit(conn, "confirmed", details)
        else:
            # Sent but not confirmed: ask again after a back-off (re-sending is harmless).
            conn.execute(
                """UPDATE forward_item SET state = 'pending',
                       next_attempt_at = clock_timestamp() + make_interval(secs => %s)
                   WHERE sop_instance_uid = %s AND destination = %s""",
                (
                    _backoff(ctx.settings, item.attempts + 1),
                    item.sop_instance_uid,
                    item.destination,
                ),
            )
    elif result.retryable:
        delay = _backoff(ctx.settings, item.attempts + 1)
        conn.execute(
            """UPDATE forward_item SET attempts = attempts + 1, last_status = %s,
                   last_error = %s, next_attempt_at = clock_timestamp() + make_interval(secs => %s)
               WHERE sop_instance_uid = %s AND destination = %s""",
            (result.status, result.note[:500], delay, item.sop_instance_uid, item.destination),
        )
    else:
        conn.execute(
            """UPDATE forward_item SET state = 'dead', attempts = attempts + 1, last_status = %s,
                   last_error = %s
               WHERE sop_instance_uid = %s AND destination = %s""",
            (result.status, result.note[:500], item.sop_instance_uid, item.destination),
        )
        ctx.audit(conn, "forward-failed", details)
        LOGGER.error(
            "forwarding %s to %s failed permanently (status %s): %s; "
            "`radiogate job retry` re-queues it",
            item.sop_instance_uid, item.destination, result.status, result.note,
        )  # fmt: skip


def _advance_instances(
    conn: psycopg.Connection[Any], ctx: PipelineContext, uids: list[str]
) -> None:
    rows = conn.execute(
        """SELECT i.sop_instance_uid, i.state, array_agg(f.state)
           FROM ingest_instance i JOIN forward_item f USING (sop_instance_uid)
           WHERE i.sop_instance_uid = ANY(%s) GROUP BY i.sop_instance_uid, i.state""",
        (uids,),
    ).fetchall()
    for uid, state, item_states in rows:
        items = set(item_states)
        if items == {"confirmed"}:
            new = InstanceState.CONFIRMED
        elif items <= {"confirmed", "sent"} and state == InstanceState.ROUTED:
            new = InstanceState.FORWARDED
        else:
            continue
        if new == state:
            continue
        check_instance(state, new)
        conn.execute(
            """UPDATE ingest_instance SET state = %s, state_changed_at = clock_timestamp()
               WHERE sop_instance_uid = %s""",
            (new.value, uid),
        )


def _release_confirmed(ctx: PipelineContext, uids: list[str]) -> None:
    """confirmed → released: the spool copy is deleted only after every destination confirmed."""
    with ctx.pool.connection() as conn, conn.transaction():
        rows = conn.execute(
            """SELECT sop_instance_uid, spool_path, sop_class_uid, study_instance_uid
               FROM ingest_instance
               WHERE sop_instance_uid = ANY(%s) AND state = 'confirmed' FOR UPDATE SKIP LOCKED""",
            (uids,),
        ).fetchall()
        for uid, path, sop_class, study in rows:
            check_instance(InstanceState.CONFIRMED, InstanceState.RELEASED)
            conn.execute(
                """UPDATE ingest_instance
                   SET state = 'released', state_changed_at = clock_timestamp()
                   WHERE sop_instance_uid = %s""",
                (uid,),
            )
            ctx.audit(
                conn,
                "released",
                {"sop_instance_uid": uid, "sop_class_uid": sop_class, "study_instance_uid": study},
            )
            _unlink_if_unreferenced(conn, path)


def _unlink_if_unreferenced(conn: psycopg.Connection[Any], path: str) -> None:
    """Delete a spool file unless an unreleased instance or duplicate still points at it."""
    from pathlib import Path

    row = conn.execute(
        """SELECT EXISTS (SELECT 1 FROM ingest_instance WHERE spool_path = %s
                          AND state NOT IN ('released'))""",
        (path,),
    ).fetchone()
    if row is not None and not row[0]:
        Path(path).unlink(missing_ok=True)


def _schedule_retry(conn: psycopg.Connection[Any], ctx: PipelineContext, destination: str) -> None:
    """If items wait for a later attempt, defer a forwarding job for that moment."""
    row = conn.execute(
        """SELECT min(f.next_attempt_at), min(f.lane_rank)
           FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
           WHERE f.destination = %s AND f.state = 'pending' AND i.node = %s""",
        (destination, ctx.node),
    ).fetchone()
    if row is None or row[0] is None:
        return
    when: dt.datetime = row[0]
    lane = {lane.rank: lane for lane in Lane}[int(row[1])]
    store.defer_job(
        conn,
        FORWARD_TASK,
        ctx.node,
        {"node": ctx.node, "destination": destination},
        lock_key=f"forward:{ctx.node}:{destination}:{lane.value}",
        priority=lane.priority,
        schedule_at=when,
    )


def kick(ctx: PipelineContext) -> dict[str, int]:
    """Self-healing: make sure every kind of waiting work has a job (after crashes/restarts)."""
    deferred: dict[str, int] = defaultdict(int)
    with ctx.pool.connection() as conn, conn.transaction():
        stalled = store.fail_stalled_jobs(conn, ctx.node, STALLED_AFTER)
        if stalled:
            LOGGER.warning(
                "jobs %s of a dead worker marked failed; their work is re-queued", stalled
            )
            deferred["stalled"] += len(stalled)
    with ctx.pool.connection() as conn, conn.transaction():
        counts = store.pending_counts(conn, ctx.node)
        if counts.get("received") and store.defer_job(
            conn,
            ROUTE_TASK,
            ctx.node,
            {"node": ctx.node},
            lock_key=f"route:{ctx.node}",
            priority=ROUTE_PRIORITY,
        ):
            deferred["route"] += 1
        for destination in ctx.destinations:
            _schedule_retry(conn, ctx, destination)
        # Confirmed but not released: a worker died between the two transactions.
        leftover = [
            str(r[0])
            for r in conn.execute(
                """SELECT sop_instance_uid FROM ingest_instance
                   WHERE node = %s AND state = 'confirmed' LIMIT 1000""",
                (ctx.node,),
            ).fetchall()
        ]
    if leftover:
        _release_confirmed(ctx, leftover)
        deferred["released"] += len(leftover)
    return dict(deferred)

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import ConnectionPool

if TYPE_CHECKING:
    from dicom_nodes.deid.step import DeidStep
    from dicom_nodes.deid.vault import Vault

from config.routes import LaneRule, PipelineSettings, RouteSettings
from dicom_nodes.forward.model import Destination, Instance, OutgoingFile, SendResult
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

AuditEntry = tuple[str, Mapping[str, Any]]
"""One audit event to append: (step, details)."""

AuditHook = Callable[[psycopg.Connection[Any], Sequence[AuditEntry]], None]
"""Appends audit events, in order, in the caller's transaction: (conn, [(step, details)])."""


def _no_audit(_conn: psycopg.Connection[Any], _events: Sequence[AuditEntry]) -> None:
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
    deid: DeidStep | None = None
    """Runs ``deidentify:<profile>`` steps; without it such routes quarantine everything."""
    vault: Vault | None = None
    """Keeps the encrypted pseudonym → original map of de-identified instances."""
    _warned: set[str] = field(default_factory=set)

    def warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            LOGGER.warning("%s", message)


def route_round(ctx: PipelineContext) -> int:
    """Route one batch of received instances; return how many were routed.

    ``forward`` steps after a ``deidentify:<profile>`` step send that profile's copy, which is
    made here (:class:`dicom_nodes.deid.step.DeidStep`), durable in the spool before this
    round's transaction records it together with the vault entries and audit events."""
    needed = tags_needed(ctx.routes, ctx.lane_rules)
    with ctx.pool.connection() as conn, conn.transaction():
        batch = store.claim_received(conn, ctx.node, ctx.settings.batch_size)
        if not batch:
            return 0
        lanes_touched: dict[str, Lane] = {}
        decisions: list[store.Routing] = []
        completed: list[tuple[str, str]] = []
        acc = _Collected()
        plans: list[tuple[store.ReceivedInstance, RouteSettings, Lane]] = []
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
            plans.append((inst, route, lane_for(route, ctx.lane_rules, facts)))
        acc.copies = _deidentify_batch(ctx, plans)
        for inst, route, lane in plans:
            deliveries = _deliveries(ctx, route, inst, acc)
            decisions.append(store.Routing(inst, route.name, lane, tuple(deliveries)))
            if route.complete_immediately:
                completed.append((inst.study_instance_uid, route.name))
            for delivery in deliveries:
                if delivery.quarantined:
                    continue
                previous = lanes_touched.get(delivery.destination)
                lanes_touched[delivery.destination] = (
                    lane if previous is None else Lane.most_urgent(previous, lane)
                )
        store.record_deid_outputs(conn, acc.outputs)
        if acc.vault and ctx.vault is not None:
            ctx.vault.record(conn, acc.vault)
        events = acc.events
        store.mark_routed(conn, decisions)
        events[:0] = [
            (
                "routed",
                {
                    "sop_instance_uid": d.instance.sop_instance_uid,
                    "sop_class_uid": d.instance.sop_class_uid,
                    "study_instance_uid": d.instance.study_instance_uid,
                    "route": d.route,
                    "lane": d.lane.value,
                },
            )
            for d in decisions
        ]
        for study_uid, route_name in dict(completed).items():
            if store.complete_study(conn, study_uid, f"rule:{route_name}"):
                events.append(
                    (
                        "study-complete",
                        {"study_instance_uid": study_uid, "by": f"rule:{route_name}"},
                    )
                )
        if events:
            ctx.audit(conn, events)
        for dest, lane in lanes_touched.items():
            _defer_forward(conn, ctx, dest, lane)
        return len(batch)


def _defer_forward(
    conn: psycopg.Connection[Any],
    ctx: PipelineContext,
    destination: str,
    lane: Lane,
    when: dt.datetime | None = None,
) -> None:
    """The forwarding loop of (node, destination, lane), unless one is already waiting."""
    store.defer_job(
        conn,
        FORWARD_TASK,
        ctx.node,
        {"node": ctx.node, "destination": destination},
        lock_key=f"forward:{ctx.node}:{destination}:{lane.value}",
        priority=lane.priority,
        schedule_at=when,
    )


@dataclass
class _Collected:
    """What a routing round records besides the routing itself."""

    outputs: list[store.DeidOutput] = field(default_factory=list)
    vault: list[Any] = field(default_factory=list)
    events: list[AuditEntry] = field(default_factory=list)
    copies: Mapping[tuple[Path, str], Any] = field(default_factory=dict)
    """De-identification outcomes of this round by (spooled file, profile)."""


def _deidentify_batch(
    ctx: PipelineContext, plans: Sequence[tuple[store.ReceivedInstance, RouteSettings, Lane]]
) -> Mapping[tuple[Path, str], Any]:
    """Every (file, profile) copy the batch's routes need, made at once (in parallel when
    ``deid.processes`` allows): one copy per profile however many destinations get it."""
    if ctx.deid is None:
        return {}
    pairs: dict[tuple[Path, str], None] = {}
    for inst, route, _lane in plans:
        for text in route.steps:
            step = parse_step(text)
            if step.kind is StepKind.DEIDENTIFY and step.argument in ctx.deid.engines:
                pairs[(inst.spool_path, step.argument)] = None
    return ctx.deid.apply_many(list(pairs))


def _deliveries(
    ctx: PipelineContext, route: RouteSettings, inst: store.ReceivedInstance, acc: _Collected
) -> list[store.Delivery]:
    """The route's steps for one instance: destinations, each with the version it gets."""
    outputs, vault, events = acc.outputs, acc.vault, acc.events
    deliveries: list[store.Delivery] = []
    profile = ""
    held: dict[str, str] = {}  # profile -> quarantine reason
    done: set[str] = set()
    details = {
        "sop_instance_uid": inst.sop_instance_uid,
        "sop_class_uid": inst.sop_class_uid,
        "study_instance_uid": inst.study_instance_uid,
    }
    for text in route.steps:
        step = parse_step(text)
        if step.kind is StepKind.DEIDENTIFY:
            profile = step.argument
            if profile in done:
                continue
            done.add(profile)
            if ctx.deid is None or profile not in ctx.deid.engines:
                # Never forward identified data because de-identification is unavailable.
                held[profile] = "deid-unavailable"
                ctx.warn_once(f"route {route.name}: profile {profile!r} is not available")
            else:
                from dicom_nodes.deid.step import Quarantine

                outcome = acc.copies[(inst.spool_path, profile)]  # _deidentify_batch
                vault.extend(outcome.vault)
                if isinstance(outcome, Quarantine):
                    held[profile] = outcome.reason
                else:
                    outputs.append(
                        store.DeidOutput(
                            inst.sop_instance_uid, profile, outcome.spool_path,
                            outcome.transfer_syntax_uid, outcome.size, outcome.note,
                        )
                    )  # fmt: skip
                    events.append(("de-identified", {**details, "profile": profile}))
            if profile in held:
                events.append(
                    ("quarantined", {**details, "profile": profile, "reason": held[profile]})
                )
                LOGGER.warning(
                    "instance %s quarantined under profile %s: %s",
                    inst.sop_instance_uid, profile, held[profile],
                )  # fmt: skip
        elif step.kind is StepKind.FORWARD:
            if step.argument not in ctx.destinations:
                ctx.warn_once(f"route {route.name}: unknown destination {step.argument!r}")
                continue
            deliveries.append(store.Delivery(step.argument, profile, profile in held))
        else:
            ctx.warn_once(
                f"route {route.name}: step {text!r} is not available in this version; skipped"
            )
    return deliveries


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
        files = [_outgoing(b) for b in batch]
        # A de-identified copy carries new UIDs: results and confirmations come back under
        # those, and are mapped back to the instance they stand for.
        original = {
            f.sop_instance_uid: b.sop_instance_uid for f, b in zip(files, batch, strict=True)
        }
        results = dest.send(files)
        by_uid: dict[str, SendResult] = {original[r.sop_instance_uid]: r for r in results}
        sent = [f for f in files if by_uid[original[f.sop_instance_uid]].ok]
        confirmed: dict[str, bool] = {}
        if sent:
            try:
                answers = dest.confirm(
                    [Instance(f.sop_class_uid, f.sop_instance_uid) for f in sent]
                )
                confirmed = {original[uid]: ok for uid, ok in answers.items()}
            except Exception as exc:
                LOGGER.warning("confirmation from %s failed: %s", destination, type(exc).__name__)
        _record(conn, ctx, [(b, by_uid[b.sop_instance_uid]) for b in batch], confirmed)
        _advance_instances(conn, ctx, [b.sop_instance_uid for b in batch])
        # No follow-up job here: the calling job loops while work is ready, keeping one
        # forwarding loop per destination and lane so routing always finds a free slot.
    _release_confirmed(ctx, [b.sop_instance_uid for b in batch])
    return len(batch)


def _outgoing(item: store.ClaimedForward) -> OutgoingFile:
    """What to send for *item*: the original as recorded, or the copy as its header says."""
    if item.profile:
        return OutgoingFile.from_path(item.spool_path)
    return OutgoingFile(
        item.spool_path, item.sop_class_uid, item.sop_instance_uid, item.transfer_syntax_uid
    )


_RECORD_SQL = """
UPDATE forward_item f SET
    state = coalesce(v.state, f.state),
    attempts = f.attempts + 1,
    last_status = v.status,
    last_error = v.error,
    note = CASE WHEN v.ok THEN v.note ELSE f.note END,
    sent_transfer_syntax = CASE WHEN v.ok THEN v.syntax ELSE f.sent_transfer_syntax END,
    sent_at = CASE WHEN v.ok THEN clock_timestamp() ELSE f.sent_at END,
    confirmed_at = CASE WHEN v.ok THEN (CASE WHEN v.confirmed THEN clock_timestamp() END)
                        ELSE f.confirmed_at END,
    next_attempt_at = CASE WHEN v.delay IS NULL THEN f.next_attempt_at
                           ELSE clock_timestamp() + make_interval(secs => v.delay) END
FROM unnest(%s::text[], %s::text[], %s::text[], %s::integer[], %s::text[], %s::boolean[],
            %s::text[], %s::text[], %s::boolean[], %s::float8[])
     AS v(uid, destination, state, status, error, ok, note, syntax, confirmed, delay)
WHERE f.sop_instance_uid = v.uid AND f.destination = v.destination"""
"""Every outcome of a forwarding batch in one statement; per row (``state`` NULL: unchanged,
``delay`` NULL: ``next_attempt_at`` unchanged):

* sent and confirmed: ``confirmed``, ``sent_at`` and ``confirmed_at`` now;
* sent, not confirmed: back to ``pending`` after a back-off (re-sending is harmless),
  ``sent_at`` now, ``confirmed_at`` cleared;
* retryable failure: state unchanged, next attempt after a back-off;
* permanent failure: ``dead``."""


def _record(
    conn: psycopg.Connection[Any],
    ctx: PipelineContext,
    outcomes: Sequence[tuple[store.ClaimedForward, SendResult]],
    confirmed: Mapping[str, bool],
) -> None:
    """Record every item's outcome (one UPDATE) and its audit events (one call)."""
    columns: tuple[list[Any], ...] = tuple([] for _ in range(10))
    events: list[AuditEntry] = []
    for item, result in outcomes:
        is_confirmed = result.ok and confirmed.get(item.sop_instance_uid, False)
        details = {
            "sop_instance_uid": item.sop_instance_uid,
            "sop_class_uid": item.sop_class_uid,
            "study_instance_uid": item.study_instance_uid,
            "destination": item.destination,
            "status": result.status,
        }
        delay: float | None = _backoff(ctx.settings, item.attempts + 1)
        state: str | None
        if result.ok:
            state = "confirmed" if is_confirmed else "pending"
            error = ""
            if is_confirmed:
                delay = None
            events.append(("forwarded", details))
            if is_confirmed:
                events.append(("confirmed", details))
        elif result.retryable:
            state, error = None, result.note[:500]
        else:
            state, error, delay = "dead", result.note[:500], None
            events.append(("forward-failed", details))
            LOGGER.error(
                "forwarding %s to %s failed permanently (status %s): %s; "
                "`radiogate job retry` re-queues it",
                item.sop_instance_uid, item.destination, result.status, result.note,
            )  # fmt: skip
        row = (item.sop_instance_uid, item.destination, state, result.status, error, result.ok,
               result.note, result.sent_transfer_syntax, is_confirmed, delay)  # fmt: skip
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    if not outcomes:
        return
    conn.execute(_RECORD_SQL, columns)
    if events:
        ctx.audit(conn, events)


def _advance_instances(
    conn: psycopg.Connection[Any], ctx: PipelineContext, uids: list[str]
) -> None:
    rows = conn.execute(
        """SELECT i.sop_instance_uid, i.state, array_agg(f.state)
           FROM ingest_instance i JOIN forward_item f USING (sop_instance_uid)
           WHERE i.sop_instance_uid = ANY(%s) GROUP BY i.sop_instance_uid, i.state""",
        (uids,),
    ).fetchall()
    changed: list[str] = []
    new_states: list[str] = []
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
        changed.append(uid)
        new_states.append(new.value)
    if changed:
        conn.execute(
            """UPDATE ingest_instance i SET state = v.state, state_changed_at = clock_timestamp()
               FROM unnest(%s::text[], %s::text[]) AS v(uid, state)
               WHERE i.sop_instance_uid = v.uid""",
            (changed, new_states),
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
        if not rows:
            return
        check_instance(InstanceState.CONFIRMED, InstanceState.RELEASED)
        conn.execute(
            """UPDATE ingest_instance
               SET state = 'released', state_changed_at = clock_timestamp()
               WHERE sop_instance_uid = ANY(%s)""",
            ([uid for uid, _path, _cls, _study in rows],),
        )
        ctx.audit(
            conn,
            [
                (
                    "released",
                    {"sop_instance_uid": uid, "sop_class_uid": cls, "study_instance_uid": study},
                )
                for uid, _path, cls, study in rows
            ],
        )
        copies = conn.execute(
            "DELETE FROM deid_output WHERE sop_instance_uid = ANY(%s) RETURNING spool_path",
            ([uid for uid, _path, _cls, _study in rows],),
        ).fetchall()
        _unlink_unreferenced(conn, [str(path) for _uid, path, _cls, _study in rows])
        for (copy_path,) in copies:
            Path(copy_path).unlink(missing_ok=True)


def _unlink_unreferenced(conn: psycopg.Connection[Any], paths: list[str]) -> None:
    """Delete spool files unless an unreleased instance or duplicate still points at them."""
    unreferenced = conn.execute(
        """SELECT p FROM unnest(%s::text[]) AS p
           WHERE NOT EXISTS (SELECT 1 FROM ingest_instance WHERE spool_path = p
                             AND state NOT IN ('released'))""",
        (sorted(set(paths)),),
    ).fetchall()
    for (path,) in unreferenced:
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
    _defer_forward(conn, ctx, destination, lane, when)


def kick(ctx: PipelineContext) -> dict[str, int]:
    """Self-healing: make sure every kind of waiting work has a job (after crashes/restarts)."""
    deferred: dict[str, int] = defaultdict(int)
    if ctx.deid is not None and (swept := ctx.deid.sweep()):
        deferred["deid-temp-swept"] += swept
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

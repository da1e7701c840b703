"""The alert outbox: raise (idempotent), deliver with retries, escalate, acknowledge.

An alert is written in the transaction of the decision it announces, with one ``pending``
delivery per level-0 target, and the delivery job is deferred in that transaction too: a
decision is never announced before it is recorded, nor lost after. Deliveries are sent by
:func:`deliver_round` (a failed one waits a doubling back-off and is tried again, forever: a
target that is down gets the alert later). An alert still open at its escalation time is
escalated by :func:`escalate_due`: level 1 re-sends to the targets, level 2 and later go to the
escalation targets, each after the category's time again (``alerts.category<N>_minutes``).
Acknowledging cancels what was not sent yet. Every one of these is a state-model event with its
audit event (:data:`dicom_nodes.state.model.ALERT`, :data:`~dicom_nodes.state.model.DELIVERY`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from audit import Step
from config.alerts import AlertSettings
from dicom_nodes.alerts.model import AlertSpec
from dicom_nodes.alerts.targets import AlertTarget, DeliveryFailed
from dicom_nodes.state import Change
from dicom_nodes.state import repository as repo
from dicom_nodes.state.jobs import defer_alerts
from dicom_nodes.state.model import ALERT, DELIVERY, AlertEvent, DeliveryEvent
from dicom_nodes.state.repository import AuditEntry, AuditSink

__all__ = [
    "AlertContext",
    "acknowledge",
    "deliver_round",
    "escalate_due",
    "list_alerts",
    "raise_alert",
]

LOGGER = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]


def _minutes(settings: AlertSettings, category: int) -> float:
    return {1: settings.category1_minutes, 2: settings.category2_minutes,
            3: settings.category3_minutes}[category]  # fmt: skip


def _targets_for(settings: AlertSettings, level: int) -> list[str]:
    if level >= 2 and settings.escalation_targets:
        return list(settings.escalation_targets)
    return list(settings.targets)


def raise_alert(conn: Conn, audit: AuditSink, spec: AlertSpec, settings: AlertSettings) -> bool:
    """Record *spec* (in the caller's transaction) unless the same alert exists; True if new."""
    now = dt.datetime.now(dt.UTC)
    created = repo.create_alert(
        conn,
        alert_id=spec.alert_id,
        alert_key=spec.key,
        node=spec.node,
        study_uid=spec.study_uid,
        series_uid=spec.series_uid,
        category=spec.category,
        payload=spec.message(now),
        escalate_after=60.0 * _minutes(settings, spec.category),
    )
    if not created:
        return False
    audit(conn, [AuditEntry(Step.ALERT_RAISED, {
        "study_instance_uid": spec.study_uid, "reason": f"category-{spec.category}"})])  # fmt: skip
    if repo.create_deliveries(conn, spec.alert_id, 0, _targets_for(settings, 0)):
        defer_alerts(conn, spec.node)
    LOGGER.warning(
        "alert %s raised: category %d, %s %s", spec.alert_id, spec.category, spec.kind,
        spec.finding,
    )  # fmt: skip
    return True


@dataclass
class AlertContext:
    node: str
    pool: ConnectionPool
    settings: AlertSettings
    targets: Mapping[str, AlertTarget]
    audit: AuditSink

    def backoff(self, attempts: int) -> float:
        s = self.settings
        return float(min(s.retry_max, s.retry_initial * (2 ** max(0, attempts))))


def deliver_round(ctx: AlertContext, limit: int = 20) -> int:
    """Send one batch of due deliveries of this node's open alerts; returns the count."""
    with ctx.pool.connection() as conn, conn.transaction():
        rows = conn.execute(
            """SELECT d.delivery_id, d.target, d.level, d.attempts, a.payload
               FROM alert_delivery d JOIN alert a USING (alert_id)
               WHERE d.state = 'pending' AND d.next_attempt_at <= clock_timestamp()
                 AND a.node = %s AND a.state = 'open'
               ORDER BY a.category, d.created_at LIMIT %s FOR UPDATE OF d SKIP LOCKED""",
            (ctx.node, limit),
        ).fetchall()
        done: list[Change] = []
        failed: list[tuple[Change, str, float]] = []
        for delivery_id, target_name, level, attempts, payload in rows:
            target = ctx.targets.get(str(target_name))
            try:
                if target is None:
                    raise DeliveryFailed("unknown-target")
                target.send({**payload, "level": int(level)})
            except DeliveryFailed as exc:
                LOGGER.warning("alert delivery %s failed: %s", delivery_id, exc.reason)
                failed.append((Change((str(delivery_id),), {"reason": exc.reason}), exc.reason,
                               ctx.backoff(int(attempts))))  # fmt: skip
                continue
            done.append(Change((str(delivery_id),)))
        repo.apply(conn, ctx.audit, DELIVERY, DeliveryEvent.DELIVERED, done)
        repo.apply(
            conn, ctx.audit, DELIVERY, DeliveryEvent.DELIVERY_FAILED,
            [c for c, _e, _d in failed],
            values={"error": [e for _c, e, _d in failed], "delay": [d for _c, _e, d in failed]},
        )  # fmt: skip
        _schedule(conn, ctx.node)
    return len(rows)


def _schedule(conn: Conn, node: str) -> None:
    row = conn.execute(
        """SELECT min(d.next_attempt_at) FROM alert_delivery d JOIN alert a USING (alert_id)
           WHERE d.state = 'pending' AND a.node = %s AND a.state = 'open'""",
        (node,),
    ).fetchone()
    if row and row[0] is not None:
        defer_alerts(conn, node, row[0])


def escalate_due(ctx: AlertContext) -> int:
    """Escalate this node's open alerts whose time ran out; returns how many."""
    with ctx.pool.connection() as conn, conn.transaction():
        rows = conn.execute(
            """SELECT alert_id, level, category FROM alert
               WHERE node = %s AND state = 'open' AND escalate_at <= clock_timestamp()
               ORDER BY alert_id FOR UPDATE SKIP LOCKED""",
            (ctx.node,),
        ).fetchall()
        if not rows:
            return 0
        repo.apply(
            conn, ctx.audit, ALERT, AlertEvent.ESCALATED,
            [Change((str(a),), {"reason": f"unacknowledged-level-{int(lvl) + 1}"})
             for a, lvl, _c in rows],
            values={"delay": [60.0 * _minutes(ctx.settings, int(c)) for _a, _l, c in rows]},
        )  # fmt: skip
        created = 0
        for alert_id, level, _category in rows:
            created += repo.create_deliveries(
                conn, str(alert_id), int(level) + 1, _targets_for(ctx.settings, int(level) + 1)
            )
        if created:
            defer_alerts(conn, ctx.node)
    LOGGER.warning("%d unacknowledged alerts escalated", len(rows))
    return len(rows)


def acknowledge(conn: Conn, audit: AuditSink, alert_id: str, user: str) -> str:
    """Acknowledge an open alert as *user*; returns ``acknowledged``, ``already`` or
    ``unknown``. Deliveries not sent yet are cancelled."""
    try:
        with conn.transaction():
            repo.acknowledge_alert(conn, audit, alert_id, user)
    except repo.AlertNotOpen as exc:
        return "unknown" if exc.state is None else "already"
    return "acknowledged"


def list_alerts(conn: Conn, *, open_only: bool = True) -> Sequence[tuple[Any, ...]]:
    """(id, state, category, kind, finding, level, delivered to, raised, acknowledged by/at)."""
    return conn.execute(
        """SELECT a.alert_id, a.state, a.category, a.payload->>'kind', a.payload->>'finding',
                  a.level,
                  coalesce(string_agg(DISTINCT d.target, ',')
                           FILTER (WHERE d.state = 'delivered'), ''),
                  a.created_at, nullif(a.acknowledged_by, ''), a.acknowledged_at
           FROM alert a LEFT JOIN alert_delivery d USING (alert_id)
           WHERE NOT %s OR a.state = 'open'
           GROUP BY a.alert_id ORDER BY a.category, a.created_at LIMIT 1000""",
        (open_only,),
    ).fetchall()

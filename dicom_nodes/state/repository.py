"""The one writer of the pipeline's state: ``ingest_instance``, ``forward_item``, ``study``,
``alert``, ``alert_delivery``.

Every state change is an event of :mod:`dicom_nodes.state.model` applied by :func:`apply` as
one statement per batch::

    UPDATE <table> SET state = <target> … WHERE <key> = ANY(…) AND state = ANY(<sources>)

and when fewer rows change than were named, :class:`~dicom_nodes.state.model.InvalidTransition`
is raised (the caller's transaction rolls back: nothing of the batch happened). Each changed row
appends exactly one audit event, of the step the transition names, in the same transaction.
Callers lock the rows they change first (``FOR UPDATE [SKIP LOCKED]`` in their claim), so a
mismatch means a bug or an admin's concurrent change, never a race the caller should ignore.

No other module writes these three tables (``tests/unit/test_state_owner.py`` checks the
source); rows are created here too: instances by :data:`INGEST_SQL` (in the receiver's
transaction, state ``received``), forward items by :func:`create_forward_items` (``pending``,
or ``quarantined`` when de-identification held the copy back), studies on first receipt
(``receiving``; a receipt for a complete study is the ``late-arrival`` event), alerts and
their deliveries by :func:`create_alert` and :func:`create_deliveries` (``open``, ``pending``).
One transition pair is made by a SQL function instead of :func:`apply`: acknowledging an alert
(:func:`acknowledge_alert`, ``radiogate_acknowledge_alert()``), so that the archive plugin,
which cannot import this package, changes the same rows by the same rules.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql

import audit
from audit import EventOutcome, Step
from dicom_nodes.state.model import (
    ALERT,
    ANALYSIS,
    DELIVERY,
    FORWARD,
    INSTANCE,
    SERIES,
    STUDY,
    TRIAGE,
    AlertEvent,
    AnalysisEvent,
    DeliveryEvent,
    ForwardEvent,
    ForwardState,
    InstanceEvent,
    InstanceState,
    InvalidTransition,
    Machine,
    SeriesEvent,
    StudyEvent,
    TriageEvent,
)

__all__ = [
    "ACKNOWLEDGE_SQL",
    "FILE_MISSING_CANCEL",
    "INGEST_NEW_SQL",
    "INGEST_SQL",
    "REPLACE_UNROUTED_SQL",
    "RESTORED_NOTE",
    "AlertNotOpen",
    "ArchivedCopyDecision",
    "AuditEntry",
    "AuditSink",
    "Change",
    "NewForwardItem",
    "SeriesSeen",
    "acknowledge_alert",
    "acknowledgement_entries",
    "apply",
    "create_alert",
    "create_deliveries",
    "create_forward_items",
    "defer_attempts",
    "generated_association",
    "mark_triage_early",
    "no_audit",
    "note_series_facts",
    "open_analyses",
    "promote_study_items",
    "promote_study_lanes",
    "record_generated",
    "renew_forward_items",
    "resend_archived",
    "restore_missing",
    "set_analysis_results",
    "set_archive_uids",
    "set_triage_results",
    "touch_series",
    "value_names",
]

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class AuditEntry:
    """One audit event to append: the step, what it is about (UIDs, destination, codes), who
    caused it when a person did, and its outcome."""

    step: Step
    details: Mapping[str, Any] = field(default_factory=dict)
    user: str | None = None
    outcome: EventOutcome = EventOutcome.SUCCESS


AuditSink = Callable[[Conn, Sequence[AuditEntry]], None]
"""Appends audit events, in order, in the caller's transaction."""


def no_audit(_conn: Conn, _entries: Sequence[AuditEntry]) -> None:
    """An :data:`AuditSink` that records nothing (unit tests of stage logic only)."""
    return None


@dataclass(frozen=True)
class Change:
    """One row an event applies to: its key, and what its audit event should say besides the
    row's own UIDs (reason, status, route, lane, profile…)."""

    key: tuple[str, ...]
    details: Mapping[str, Any] = field(default_factory=dict)


_COLUMN_TYPES: dict[str, str] = {
    "route": "text",
    "lane": "text",
    "status": "integer",
    "error": "text",
    "note": "text",
    "syntax": "text",
    "delay": "float8",
    "reason": "text",
    "by": "text",
    "rule_lane": "text",
    "model_lane": "text",
    "score": "float8",
    "model": "jsonb",
    "quality": "text",
    "reasons": "jsonb",
    "flagged": "jsonb",
    "early": "boolean",
    "rank": "integer",
    "profile": "text",
}
"""SQL types of the per-row values :func:`apply` may be given (``v.<name>`` in *assign*)."""

_ASSIGN: dict[tuple[str, str], str] = {
    (INSTANCE.name, InstanceEvent.ROUTED): "route = v.route, lane = v.lane",
    (FORWARD.name, ForwardEvent.SENT): (
        "attempts = t.attempts + 1, last_status = v.status, last_error = '', note = v.note,"
        " sent_transfer_syntax = v.syntax, sent_at = clock_timestamp(), confirmed_at = NULL,"
        " next_attempt_at = clock_timestamp() + make_interval(secs => v.delay)"
    ),
    (FORWARD.name, ForwardEvent.CONFIRMED): "confirmed_at = clock_timestamp()",
    (FORWARD.name, ForwardEvent.NOT_CONFIRMED): (
        "next_attempt_at = clock_timestamp() + make_interval(secs => v.delay)"
    ),
    (FORWARD.name, ForwardEvent.RETRYABLE_FAILURE): (
        "attempts = t.attempts + 1, last_status = v.status, last_error = v.error,"
        " next_attempt_at = clock_timestamp() + make_interval(secs => v.delay)"
    ),
    (FORWARD.name, ForwardEvent.PERMANENT_FAILURE): (
        "attempts = t.attempts + 1, last_status = v.status, last_error = v.error,"
        " hold_reason = v.reason"
    ),
    (FORWARD.name, ForwardEvent.CANCELLED): "cancel_reason = v.reason",
    (FORWARD.name, ForwardEvent.RETRIED): (
        "next_attempt_at = clock_timestamp(), hold_reason = '', last_error = '', cancel_reason = ''"
    ),
    (FORWARD.name, ForwardEvent.RETRIED_HELD): "cancel_reason = ''",
    (FORWARD.name, ForwardEvent.RELEASED_BY_REVIEW): "next_attempt_at = clock_timestamp()",
    (FORWARD.name, ForwardEvent.RESENT): (
        "lane_rank = v.rank, profile = v.profile, hold_reason = '', last_error = '',"
        " cancel_reason = '', confirmed_at = NULL, next_attempt_at = clock_timestamp()"
    ),
    (FORWARD.name, ForwardEvent.RESENT_HELD): (
        "lane_rank = v.rank, profile = v.profile, hold_reason = v.reason, last_error = '',"
        " cancel_reason = '', confirmed_at = NULL, next_attempt_at = clock_timestamp()"
    ),
    (SERIES.name, SeriesEvent.COMPLETED): "completed_at = clock_timestamp(), completed_by = v.by",
    (SERIES.name, SeriesEvent.LATE_ARRIVAL): "increments = t.increments + 1",
    (TRIAGE.name, TriageEvent.DECIDED): (
        "lane = v.lane, rule_lane = v.rule_lane, model_lane = v.model_lane, score = v.score,"
        " quality = v.quality,"
        " reasons = ARRAY(SELECT jsonb_array_elements_text(v.reasons)),"
        " flagged = ARRAY(SELECT jsonb_array_elements_text(v.flagged)),"
        " early = v.early, decisions = t.decisions + 1, decided_at = clock_timestamp()"
    ),
    (ANALYSIS.name, AnalysisEvent.STARTED): (
        "runs = t.runs + 1, started_at = clock_timestamp(), finished_at = NULL, error = ''"
    ),
    (ANALYSIS.name, AnalysisEvent.FINISHED): "finished_at = clock_timestamp()",
    (ANALYSIS.name, AnalysisEvent.FAILED): "finished_at = clock_timestamp(), error = v.error",
    (ANALYSIS.name, AnalysisEvent.LOST): "error = v.error",
    (ALERT.name, AlertEvent.ESCALATED): (
        "level = t.level + 1, escalate_at = clock_timestamp() + make_interval(secs => v.delay)"
    ),
    (DELIVERY.name, DeliveryEvent.DELIVERED): (
        "attempts = t.attempts + 1, delivered_at = clock_timestamp(), last_error = ''"
    ),
    (DELIVERY.name, DeliveryEvent.DELIVERY_FAILED): (
        "attempts = t.attempts + 1, last_error = v.error,"
        " next_attempt_at = clock_timestamp() + make_interval(secs => v.delay)"
    ),
    (STUDY.name, StudyEvent.STUDY_QUIET): "completed_at = clock_timestamp(), completed_by = v.by",
    (STUDY.name, StudyEvent.STUDY_RULE): "completed_at = clock_timestamp(), completed_by = v.by",
    (STUDY.name, StudyEvent.STUDY_FORCED): "completed_at = clock_timestamp(), completed_by = v.by",
}
"""What else an event changes besides the state, using ``v.<name>`` per-row values."""

_BY_FUNCTION: dict[tuple[str, str], str] = {
    (ALERT.name, AlertEvent.ACKNOWLEDGED): "acknowledge_alert()",
    (DELIVERY.name, DeliveryEvent.CANCELLED): "acknowledge_alert()",
}
"""Transitions made by a SQL function (shared with the archive plugin), not by :func:`apply`."""

_STUDY_PATIENT = (
    "(SELECT p.patient_pseudonym FROM study p WHERE p.study_instance_uid = {}.study_instance_uid)"
)
_SOURCE_ROWS: dict[str, tuple[str, str, str]] = {
    # machine name: (extra FROM, extra WHERE,
    #                RETURNING columns → class, study, destination, patient pseudonym)
    "instance": ("", "", "t.sop_class_uid, t.study_instance_uid, '', t.patient_pseudonym"),
    "forward item": (
        ", ingest_instance i",
        " AND i.sop_instance_uid = t.sop_instance_uid",
        "i.sop_class_uid, i.study_instance_uid, t.destination, i.patient_pseudonym",
    ),
    "study": ("", "", "'', t.study_instance_uid, '', t.patient_pseudonym"),
    "series": ("", "", "'', t.study_instance_uid, '', " + _STUDY_PATIENT.format("t")),
    "triage": ("", "", "'', t.study_instance_uid, '', " + _STUDY_PATIENT.format("t")),
    "analysis": ("", "", "'', t.study_instance_uid, '', " + _STUDY_PATIENT.format("t")),
    "alert": ("", "", "'', t.study_instance_uid, '', " + _STUDY_PATIENT.format("t")),
    "alert delivery": (
        ", alert a",
        " AND a.alert_id = t.alert_id",
        "'', a.study_instance_uid, t.target, " + _STUDY_PATIENT.format("a"),
    ),
}


def value_names(machine: Machine[Any, Any], event: Any) -> set[str]:
    """The per-row values (``v.<name>``) *event* of *machine* needs."""
    return set(re.findall(r"\bv\.(\w+)", _ASSIGN.get((machine.name, str(event)), "")))


def apply(
    conn: Conn,
    audit: AuditSink,
    machine: Machine[Any, Any],
    event: Any,
    changes: Sequence[Change],
    *,
    values: Mapping[str, Sequence[Any]] | None = None,
    user: str | None = None,
) -> int:
    """Apply *event* to every row of *changes*; one audit event per row; returns the count.

    *values* are the per-row values the event's other assignments use (:data:`_ASSIGN`: one
    sequence per name, aligned with *changes*; a name not given is taken from each change's
    details when all have it); *user* is the person who caused it. Raises
    :class:`~dicom_nodes.state.model.InvalidTransition` when a row is not in a state the
    event may leave (or does not exist)."""
    if not changes:
        return 0
    if (by := _BY_FUNCTION.get((machine.name, str(event)))) is not None:
        raise ValueError(f"{machine.name} {event} is made by {by}")
    rule = machine.transition(event)
    assign = _ASSIGN.get((machine.name, str(event)), "")
    values = dict(values or {})
    for name in value_names(machine, event) - set(values):
        if all(name in c.details for c in changes):  # e.g. the reason the audit event names
            values[name] = [c.details[name] for c in changes]
    missing = value_names(machine, event) - set(values)
    if missing:
        raise ValueError(f"{machine.name} {event} needs values {sorted(missing)}")
    seen: set[tuple[str, ...]] = set()
    for change in changes:
        if len(change.key) != len(machine.keys):
            raise ValueError(f"{machine.name} key must be {machine.keys}, got {change.key}")
        if change.key in seen:
            raise ValueError(f"{machine.name} {change.key} named twice in one {event} batch")
        seen.add(change.key)
    columns = [*machine.keys, *values]
    arrays: list[Sequence[Any]] = [[c.key[i] for c in changes] for i in range(len(machine.keys))]
    casts = ["text[]"] * len(machine.keys)
    for name, column in values.items():
        if len(column) != len(changes):
            raise ValueError(f"values[{name!r}] has {len(column)} entries for {len(changes)} rows")
        arrays.append(list(column))
        casts.append(f"{_COLUMN_TYPES[name]}[]")
    extra_from, extra_where, returning = _SOURCE_ROWS[machine.name]
    query = sql.SQL(
        "UPDATE {table} t SET state = %s, state_changed_at = clock_timestamp(){assign}"
        " FROM unnest({arrays}) AS v({columns}){extra_from}"
        " WHERE {match} AND t.state = ANY(%s){extra_where}"
        " RETURNING {keys}, {returning}"
    ).format(
        table=sql.Identifier(machine.table),
        assign=sql.SQL(", " + assign if assign else ""),
        arrays=sql.SQL(", ").join(sql.SQL("%s::" + cast) for cast in casts),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        extra_from=sql.SQL(extra_from),
        match=sql.SQL(" AND ").join(
            sql.SQL("t.{k} = v.{k}").format(k=sql.Identifier(k)) for k in machine.keys
        ),
        extra_where=sql.SQL(extra_where),
        keys=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in machine.keys),
        returning=sql.SQL(returning),
    )
    params = [rule.target.value, *arrays, [s.value for s in rule.sources]]
    rows = conn.execute(query, params).fetchall()
    if len(rows) != len(changes):
        changed = {tuple(str(v) for v in r[: len(machine.keys)]) for r in rows}
        _raise_mismatch(conn, machine, event, changes, changed)
    by_key = {tuple(str(v) for v in row[: len(machine.keys)]): row for row in rows}
    entries: list[AuditEntry] = []
    for change in changes:  # audit events in the order the caller named the rows
        sop_class, study, destination, patient = by_key[change.key][len(machine.keys) :]
        details: dict[str, Any] = {"study_instance_uid": study}
        if patient:
            details["patient"] = patient
        if machine.keys[0] == "sop_instance_uid":
            details["sop_instance_uid"] = change.key[0]
            details["sop_class_uid"] = sop_class
        if destination:
            details["destination"] = destination
        details.update(change.details)
        entries.append(AuditEntry(rule.step, details, user, rule.outcome))
    audit(conn, entries)
    return len(rows)


def _raise_mismatch(
    conn: Conn,
    machine: Machine[Any, Any],
    event: Any,
    changes: Sequence[Change],
    changed: set[tuple[Any, ...]],
) -> None:
    missed = [c.key for c in changes if c.key not in changed][:3]
    found: list[str] = []
    for key in missed:
        query = sql.SQL("SELECT state FROM {table} WHERE {where}").format(
            table=sql.Identifier(machine.table),
            where=sql.SQL(" AND ").join(
                sql.SQL("{} = %s").format(sql.Identifier(k)) for k in machine.keys
            ),
        )
        row = conn.execute(query, key).fetchone()
        found.append(f"{'/'.join(key)} is {row[0] if row else 'absent'}")
    raise InvalidTransition(
        f"{machine.name}: {event} applies to {len(changes)} rows, "
        f"{len(changes) - len(changed)} not in {sorted(machine.transition(event).sources)}: "
        + "; ".join(found)
    )


REPLACE_UNROUTED_SQL = """
WITH first AS (
    SELECT sop_instance_uid, spool_path FROM ingest_instance
    WHERE sop_instance_uid = %(sop)s AND state = 'received'
      AND study_instance_uid = %(study)s AND series_instance_uid = %(series)s
    FOR UPDATE SKIP LOCKED
), upd AS (
    UPDATE ingest_instance i
    SET sop_class_uid = %(cls)s, modality = %(modality)s, transfer_syntax_uid = %(ts)s,
        size_bytes = %(size)s, blake3 = %(b3)s, spool_path = %(path)s, calling_ae = %(calling)s,
        called_ae = %(called)s, peer_address = %(addr)s, peer_port = %(port)s,
        association_id = %(assoc)s, patient_pseudonym = %(patient)s
    FROM first WHERE i.sop_instance_uid = first.sop_instance_uid
    RETURNING 1
)
SELECT first.spool_path FROM first, upd
"""
"""Replace an unrouted first copy by different bytes (content columns only: the instance
stays ``received``; a row the router holds is skipped, it is being routed). Returns the first
copy's spool path when it replaced it."""


class ArchivedCopyDecision(StrEnum):
    """What routing does with a re-send whose first copy was archived (recorded as the
    ``note`` of the re-send's ``ingest_duplicate`` row, and as the audit events' reason)."""

    REPLACE_IN_ARCHIVE = "replace-in-archive"
    """Forward it again: it overwrites the destinations' copies."""
    QUARANTINE = "archived-copy-differs"
    """Hold its forward items (``quarantined`` with this reason) for a person."""


_CARRY_RESEND_SQL = """
WITH upd AS (
    UPDATE ingest_instance i
    SET sop_class_uid = %(cls)s, modality = %(modality)s, transfer_syntax_uid = %(ts)s,
        size_bytes = %(size)s, blake3 = %(b3)s, spool_path = %(path)s, calling_ae = %(calling)s,
        called_ae = %(called)s, peer_address = %(addr)s, peer_port = %(port)s,
        association_id = %(assoc)s, patient_pseudonym = %(patient)s,
        received_at = clock_timestamp()
    WHERE i.sop_instance_uid = %(sop)s AND i.state = 'received'
    RETURNING 1
), dup AS (
    UPDATE ingest_duplicate SET note = %(decision)s
    WHERE sop_instance_uid = %(sop)s AND association_id = %(assoc)s AND blake3 = %(b3)s
    RETURNING 1
), job AS (
    INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock, queueing_lock, args)
    SELECT %(queue)s, %(task)s, %(priority)s, %(qlock)s, %(qlock)s,
           jsonb_build_object('node', %(node)s::text)
    WHERE EXISTS (SELECT 1 FROM upd)
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM dup)
"""


def resend_archived(
    conn: Conn,
    audit: AuditSink,
    params: Mapping[str, Any],
    decision: ArchivedCopyDecision,
) -> bool:
    """Carry a re-send with different bytes in place of an archived (``released``) first copy
    of the same study and series: the instance's ``archived-copy-differs`` event (back to
    ``received``, its audit event naming *decision*), its content columns naming the new copy,
    the decision on the re-send's duplicate row, and a routing job. False (nothing changed)
    when the first copy is not released. *params* are the receiver's (:data:`INGEST_SQL`)."""
    return _carry_resend(
        conn, audit, params, state=InstanceState.RELEASED,
        event=InstanceEvent.ARCHIVED_COPY_DIFFERS, note=decision.value,
    )  # fmt: skip


RESTORED_NOTE = "restores-missing-copy"
"""The note of a re-send's duplicate row that brought back a ``missing`` instance's file."""

FILE_MISSING_CANCEL = "spool-file-missing"
"""The ``cancel_reason`` of a forward item cancelled because its instance's spool file was lost
(the only cancellation a re-send of the instance undoes, :func:`renew_forward_items`)."""


def restore_missing(conn: Conn, audit: AuditSink, params: Mapping[str, Any]) -> bool:
    """Carry a re-send of a ``missing`` instance (its spool file was lost) of the same study
    and series as its new copy: the instance's ``file-restored`` event (back to ``received``),
    its content columns naming the re-send's file, the note on the re-send's duplicate row,
    and a routing job. Routing then renews its forward items (:func:`renew_forward_items`).
    False (nothing changed) when the instance is not ``missing``. *params* are the
    receiver's (:data:`INGEST_SQL`)."""
    return _carry_resend(
        conn, audit, params, state=InstanceState.MISSING, event=InstanceEvent.FILE_RESTORED,
        note=RESTORED_NOTE,
    )  # fmt: skip


def _carry_resend(
    conn: Conn,
    audit: AuditSink,
    params: Mapping[str, Any],
    *,
    state: InstanceState,
    event: InstanceEvent,
    note: str,
) -> bool:
    """If the instance of the same study and series is in *state*: apply *event* (audited with
    reason *note*), point its content columns at the re-send's copy, put *note* on the
    re-send's duplicate row and defer routing. False (nothing changed) otherwise."""
    row = conn.execute(
        """SELECT state FROM ingest_instance WHERE sop_instance_uid = %(sop)s
               AND study_instance_uid = %(study)s AND series_instance_uid = %(series)s
           FOR UPDATE""",
        params,
    ).fetchone()
    if row is None or row[0] != state:
        return False
    apply(conn, audit, INSTANCE, event, [Change((str(params["sop"]),), {"reason": note})])
    changed = conn.execute(_CARRY_RESEND_SQL, {**params, "decision": note}).fetchone()
    assert changed is not None and changed[0] == 1
    return True


def renew_forward_items(
    conn: Conn, audit: AuditSink, items: Sequence[NewForwardItem]
) -> list[NewForwardItem]:
    """Create routing's forward items, or renew those of an instance routed again: after a
    re-send over its archived copy (:func:`resend_archived`) a ``confirmed`` item is
    ``resent`` (``pending``), or ``resent-held`` (``quarantined``) when de-identification held
    the copy back or the re-send's decision is :attr:`ArchivedCopyDecision.QUARANTINE`; after
    a re-send that brought back a lost file (:func:`restore_missing`) its ``dead`` items and
    the ``cancelled`` ones the loss cancelled (``cancel_reason`` :data:`FILE_MISSING_CANCEL`)
    are renewed the same way; an item cancelled for another reason (by an administrator, at
    the end of retention) stays cancelled. Returns the items as they now are (hold reasons
    included; the items left cancelled are not among them)."""
    if not items:
        return []
    uids = sorted({i.sop_instance_uid for i in items})
    rows = conn.execute(
        """SELECT sop_instance_uid, destination, state, cancel_reason FROM forward_item
           WHERE sop_instance_uid = ANY(%s) ORDER BY 1, 2 FOR UPDATE""",
        (uids,),
    ).fetchall()
    if not rows:
        create_forward_items(conn, items)
        return list(items)
    existing = {(str(r[0]), str(r[1])) for r in rows}
    # An item cancelled for any reason but the lost file (an administrator's decision, the
    # retention period) stays cancelled: a re-send is not a reason to send it after all.
    kept = {
        (str(r[0]), str(r[1]))
        for r in rows
        if r[2] == ForwardState.CANCELLED and r[3] != FILE_MISSING_CANCEL
    }
    items = [i for i in items if (i.sop_instance_uid, i.destination) not in kept]
    decisions = {
        str(r[0]): str(r[1])
        for r in conn.execute(
            """SELECT i.sop_instance_uid, d.note FROM ingest_instance i
               JOIN ingest_duplicate d ON d.sop_instance_uid = i.sop_instance_uid
                                      AND d.spool_path = i.spool_path AND d.blake3 = i.blake3
               WHERE i.sop_instance_uid = ANY(%s)""",
            (sorted({u for u, _ in existing}),),
        ).fetchall()
    }
    out: list[NewForwardItem] = []
    for item in items:
        renewing = (item.sop_instance_uid, item.destination) in existing
        held = decisions.get(item.sop_instance_uid) == ArchivedCopyDecision.QUARANTINE
        if renewing and held and not item.hold_reason:
            hold = ArchivedCopyDecision.QUARANTINE.value
            out.append(dataclasses.replace(item, hold_reason=hold))
        else:
            out.append(item)
    renewed = [i for i in out if (i.sop_instance_uid, i.destination) in existing]
    create_forward_items(conn, [i for i in out if i not in renewed])
    for event, group in (
        (ForwardEvent.RESENT, [i for i in renewed if not i.hold_reason]),
        (ForwardEvent.RESENT_HELD, [i for i in renewed if i.hold_reason]),
    ):
        values: dict[str, list[Any]] = {
            "rank": [i.lane_rank for i in group],
            "profile": [i.profile for i in group],
        }
        if event is ForwardEvent.RESENT_HELD:
            values["reason"] = [i.hold_reason for i in group]
        default = ArchivedCopyDecision.REPLACE_IN_ARCHIVE.value
        apply(conn, audit, FORWARD, event,
              [Change((i.sop_instance_uid, i.destination),
                      {"reason": i.hold_reason or decisions.get(i.sop_instance_uid, default)})
               for i in group],
              values=values)  # fmt: skip
    return out


_INSTANCE_COLUMNS = """
    INSERT INTO ingest_instance (
        sop_instance_uid, sop_class_uid, study_instance_uid, series_instance_uid, modality,
        transfer_syntax_uid, size_bytes, blake3, spool_path, calling_ae, called_ae,
        peer_address, peer_port, node, association_id, patient_pseudonym)
    SELECT %(sop)s, %(cls)s, %(study)s, %(series)s, %(modality)s, %(ts)s, %(size)s, %(b3)s,
           %(path)s, %(calling)s, %(called)s, %(addr)s, %(port)s, %(node)s, %(assoc)s,
           %(patient)s
"""

_STUDY_AND_JOB = """
), new_study AS (
    -- First receipt: the study starts 'receiving'.
    INSERT INTO study (study_instance_uid, patient_pseudonym)
    SELECT %(study)s, %(patient)s
    WHERE EXISTS (SELECT 1 FROM ins) AND NOT EXISTS (SELECT 1 FROM prior_study)
    ON CONFLICT (study_instance_uid) DO NOTHING
    RETURNING increments
), study_row AS (
    -- Later receipts write the study row only when something changes, so that concurrent
    -- receipts of one study do not queue on its row lock until each commits: a receipt for a
    -- complete study is the 'late-arrival' event (complete -> receiving, model.STUDY; the
    -- receiver appends its audit event, study-reopened, in this transaction); otherwise
    -- last_received_at moves when it is older than the touch parameter (seconds, see
    -- study_touch_interval), and a missing patient pseudonym is filled in.
    UPDATE study AS s
    SET last_received_at = clock_timestamp(),
        patient_pseudonym = coalesce(s.patient_pseudonym, %(patient)s),
        state = 'receiving',
        state_changed_at = CASE WHEN s.state = 'complete' THEN clock_timestamp()
                                ELSE s.state_changed_at END,
        increments = s.increments + (s.state = 'complete')::int
    WHERE s.study_instance_uid = %(study)s AND EXISTS (SELECT 1 FROM ins)
      AND (s.state = 'complete'
           OR s.last_received_at < clock_timestamp() - make_interval(secs => %(touch)s)
           OR (s.patient_pseudonym IS NULL AND %(patient)s::text IS NOT NULL))
    RETURNING increments
), job AS (
    -- The job that routes what this node received: deferred in this same transaction, at most
    -- one waiting per node (procrastinate's queueing lock; a conflict means one is waiting).
    INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock, queueing_lock, args)
    SELECT %(queue)s, %(task)s, %(priority)s, %(qlock)s, %(qlock)s,
           jsonb_build_object('node', %(node)s::text)
    WHERE EXISTS (SELECT 1 FROM ins)
    ON CONFLICT DO NOTHING
    RETURNING id
)
"""
"""The study row and the routing job of a new instance row (``ins``): CTEs that follow
``prior_study`` (the study's state in the statement's snapshot)."""

INGEST_SQL = "".join((
    """
WITH existing AS (
    SELECT blake3 FROM ingest_instance WHERE sop_instance_uid = %(sop)s
), ins AS (
""", _INSTANCE_COLUMNS, """    WHERE NOT EXISTS (SELECT 1 FROM existing)
    ON CONFLICT (sop_instance_uid) DO NOTHING
    RETURNING 1
), dup AS (
    INSERT INTO ingest_duplicate (
        sop_instance_uid, bytes_differ, blake3, size_bytes, spool_path, calling_ae, called_ae,
        peer_address, peer_port, node, association_id, note)
    SELECT %(sop)s, existing.blake3 <> %(b3)s, %(b3)s, %(size)s, %(path)s, %(calling)s,
           %(called)s, %(addr)s, %(port)s, %(node)s, %(assoc)s,
           CASE WHEN existing.blake3 <> %(b3)s
                THEN 're-sent with different bytes; kept as ' || %(path)s
                ELSE 're-sent with identical bytes' END
    FROM existing
    RETURNING bytes_differ
), prior_study AS (
    SELECT state FROM study WHERE study_instance_uid = %(study)s
""", _STUDY_AND_JOB, """
SELECT (SELECT count(*) FROM ins), (SELECT bytes_differ FROM dup),
       (SELECT count(*) FROM new_study) + (SELECT count(*) FROM study_row),
       (SELECT count(*) FROM job),
       coalesce((SELECT state = 'complete' FROM prior_study), false)
"""))  # fmt: skip
"""The receiver's one statement per instance (PS3.4 B.2.2 success is answered after it
commits): a new instance row (``received``), or a duplicate row for a re-send; the study row;
the routing job. Parameters: see :class:`dicom_nodes.db.ingest.PostgresIngest`."""

INGEST_NEW_SQL = "".join((
    """
WITH prior_study AS (
    SELECT state FROM study WHERE study_instance_uid = %(study)s
), ins AS (
""", _INSTANCE_COLUMNS, """
    WHERE NOT EXISTS (SELECT 1 FROM ingest_instance WHERE sop_instance_uid = %(sop)s)
      AND NOT EXISTS (SELECT 1 FROM prior_study WHERE state = 'complete')
    ON CONFLICT (sop_instance_uid) DO NOTHING
    RETURNING 1
""", _STUDY_AND_JOB, """, received AS (
""", audit.ENQUEUE_SELECT_SQL, """
    WHERE EXISTS (SELECT 1 FROM ins)
)
SELECT (SELECT count(*) FROM ins)
"""))  # fmt: skip
"""The common case of :data:`INGEST_SQL` as one statement that also appends the instance's
``received`` audit event (reason none; :func:`audit.enqueue_params` among the parameters), so
that in autocommit it is the whole receive transaction in one round trip: a new SOP Instance
UID of a study that is not complete. In any other case (a re-send, a late arrival, a
concurrent first insert) it writes nothing and returns 0: the caller then runs
:data:`INGEST_SQL` in a transaction of its own."""

assert StudyEvent.LATE_ARRIVAL in STUDY.transitions  # the study_row update above

STUDY_TOUCH_MAX = 1.0
"""Longest a receiving study's ``last_received_at`` may lag its last receipt (seconds)."""


def study_touch_interval(quiet_period: float) -> float:
    """How stale a receiving study's ``last_received_at`` may get before a receipt moves it
    (the ``touch`` parameter of :data:`INGEST_SQL`): at most :data:`STUDY_TOUCH_MAX` and a
    quarter of the quiet period (0: every receipt moves it). Quiet-period completion waits
    this much longer, so it is never early, and a receipt that skipped the update (its
    snapshot showed a touch within the interval) cannot meet a study completed for being
    quiet while it commits."""
    return max(0.0, min(STUDY_TOUCH_MAX, quiet_period / 4))


@dataclass(frozen=True)
class NewForwardItem:
    """A forward item created by routing: ``pending``, or ``quarantined`` with the reason."""

    sop_instance_uid: str
    destination: str
    lane_rank: int
    profile: str = ""
    hold_reason: str = ""

    @property
    def state(self) -> ForwardState:
        return ForwardState.QUARANTINED if self.hold_reason else ForwardState.PENDING


def create_forward_items(conn: Conn, items: Sequence[NewForwardItem]) -> None:
    """Create routing's forward items (their initial state; the instance's ``routed`` event
    and any ``quarantined`` event are appended by the caller in the same transaction)."""
    if not items:
        return
    # One statement for the whole batch (rows inserted in the order given).
    conn.execute(
        """INSERT INTO forward_item
               (sop_instance_uid, destination, lane_rank, profile, state, hold_reason)
           SELECT * FROM unnest(%s::text[], %s::text[], %s::smallint[], %s::text[], %s::text[],
                                %s::text[])""",
        (
            [i.sop_instance_uid for i in items], [i.destination for i in items],
            [i.lane_rank for i in items], [i.profile for i in items],
            [i.state.value for i in items], [i.hold_reason for i in items],
        ),
    )  # fmt: skip


def promote_study_lanes(conn: Conn, lanes: Mapping[str, tuple[str, int]]) -> None:
    """Raise each study's lane to (name, rank) when that is more urgent than its current one."""
    if not lanes:
        return
    conn.cursor().executemany(
        """UPDATE study SET lane = %s
           WHERE study_instance_uid = %s
             AND %s < (CASE lane WHEN 'critical' THEN 0 WHEN 'urgent' THEN 1 ELSE 2 END)""",
        [(lanes[uid][0], uid, lanes[uid][1]) for uid in sorted(lanes)],  # rows locked in UID order
    )


def defer_attempts(
    conn: Conn, keys: Sequence[tuple[str, str]], delay: float, *, error: str = ""
) -> None:
    """Move the next attempt of forward items (no state change: a confirmation that could not
    be asked, a destination that could not be reached before anything was sent)."""
    if not keys:
        return
    conn.execute(
        """UPDATE forward_item f SET
               next_attempt_at = clock_timestamp() + make_interval(secs => %s),
               last_error = CASE WHEN %s = '' THEN f.last_error ELSE %s END
           FROM unnest(%s::text[], %s::text[]) AS v(uid, destination)
           WHERE f.sop_instance_uid = v.uid AND f.destination = v.destination""",
        (delay, error, error, [k[0] for k in keys], [k[1] for k in keys]),
    )


def create_alert(
    conn: Conn,
    *,
    alert_id: str,
    alert_key: str,
    node: str,
    study_uid: str,
    series_uid: str,
    category: int,
    payload: Mapping[str, Any],
    escalate_after: float,
) -> bool:
    """Create an alert (``open``); False when one with the same key exists (idempotent)."""
    from psycopg.types.json import Jsonb

    row = conn.execute(
        """INSERT INTO alert (alert_id, alert_key, node, study_instance_uid,
                              series_instance_uid, category, payload, escalate_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s,
                   clock_timestamp() + make_interval(secs => %s))
           ON CONFLICT DO NOTHING RETURNING 1""",
        (alert_id, alert_key, node, study_uid, series_uid, category, Jsonb(dict(payload)),
         escalate_after),
    ).fetchone()  # fmt: skip
    return row is not None


ACKNOWLEDGE_SQL = """SELECT changed, prior_state, study_instance_uid, patient_pseudonym,
                            cancelled FROM radiogate_acknowledge_alert(%s, %s)"""
"""The one statement that acknowledges an alert (migration 0019): ALERT ``acknowledged`` from
``open`` and DELIVERY ``cancelled`` from ``pending`` for its deliveries not sent yet; returns
(changed, prior state, study UID, patient pseudonym, cancelled delivery targets). The archive
plugin runs the same statement and appends the same :func:`acknowledgement_entries`."""


class AlertNotOpen(InvalidTransition):
    """Acknowledging an alert that is not ``open``: *state* is where it is, None if absent."""

    def __init__(self, alert_id: str, state: str | None) -> None:
        sources = sorted(ALERT.transition(AlertEvent.ACKNOWLEDGED).sources)
        super().__init__(
            f"alert: {AlertEvent.ACKNOWLEDGED} applies to 1 rows, 1 not in {sources}: "
            f"{alert_id} is {state or 'absent'}"
        )
        self.state = state


def acknowledgement_entries(
    study_uid: str, patient: str | None, cancelled: Sequence[str], user: str
) -> list[AuditEntry]:
    """The audit events of one acknowledgement, in order: one per cancelled delivery (to its
    target), then the alert's own — the steps the ALERT and DELIVERY tables name."""
    base: dict[str, Any] = {"study_instance_uid": study_uid}
    if patient:
        base["patient"] = patient
    cancel = DELIVERY.transition(DeliveryEvent.CANCELLED)
    ack = ALERT.transition(AlertEvent.ACKNOWLEDGED)
    return [
        *(
            AuditEntry(
                cancel.step,
                {**base, "destination": target, "reason": "acknowledged"},
                user,
                cancel.outcome,
            )
            for target in cancelled
        ),
        AuditEntry(ack.step, dict(base), user, ack.outcome),
    ]


def acknowledge_alert(conn: Conn, audit: AuditSink, alert_id: str, user: str) -> int:
    """Acknowledge *alert_id* as *user* (:data:`ACKNOWLEDGE_SQL`) and append its audit events
    in the caller's transaction; returns how many deliveries were cancelled. Raises
    :class:`AlertNotOpen` when the alert is absent or not ``open`` (nothing changed)."""
    row = conn.execute(ACKNOWLEDGE_SQL, (alert_id, user)).fetchone()
    assert row is not None
    changed, prior, study, patient, cancelled = row
    if not changed:
        raise AlertNotOpen(alert_id, prior)
    audit(conn, acknowledgement_entries(str(study), patient, list(cancelled), user))
    return len(cancelled)


def create_deliveries(conn: Conn, alert_id: str, level: int, targets: Sequence[str]) -> int:
    """Create ``pending`` deliveries of *alert_id* to *targets* at *level* (once each)."""
    if not targets:
        return 0
    rows = conn.execute(
        """INSERT INTO alert_delivery (delivery_id, alert_id, target, level)
           SELECT %s || ':' || %s || ':' || t, %s, t, %s FROM unnest(%s::text[]) AS t
           ON CONFLICT DO NOTHING RETURNING 1""",
        (alert_id, level, alert_id, level, list(targets)),
    ).fetchall()
    return len(rows)


@dataclass(frozen=True)
class SeriesSeen:
    """Instances of one series routed in one batch (for the ``series`` row)."""

    series_uid: str
    study_uid: str
    node: str
    modality: str
    count: int
    last_received_at: Any
    triage_route: str = ""
    """The route that triages this series ('' when none does)."""


def touch_series(conn: Conn, audit: AuditSink, seen: Sequence[SeriesSeen]) -> None:
    """Count routed instances into their ``series`` rows (created ``receiving``). A complete
    series that gets an instance is re-opened (``late-arrival``), and its decided triage too
    (``reopened``): it is decided again with the late instance."""
    if not seen:
        return
    uids = sorted({s.series_uid for s in seen})
    conn.execute(  # lock the rows that exist, in UID order (concurrent rounds wait)
        """SELECT 1 FROM series WHERE series_instance_uid = ANY(%s)
           ORDER BY series_instance_uid FOR UPDATE""",
        (uids,),
    )
    conn.cursor().executemany(
        """INSERT INTO series AS s (series_instance_uid, study_instance_uid, node, modality,
                                    instances, first_received_at, last_received_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (series_instance_uid) DO UPDATE
               SET instances = s.instances + EXCLUDED.instances,
                   last_received_at = greatest(s.last_received_at, EXCLUDED.last_received_at)""",
        [(s.series_uid, s.study_uid, s.node, s.modality, s.count, s.last_received_at,
          s.last_received_at) for s in seen],
    )  # fmt: skip
    reopened = [
        str(r[0])
        for r in conn.execute(
            """SELECT series_instance_uid FROM series
               WHERE series_instance_uid = ANY(%s) AND state = 'complete'""",
            (uids,),
        ).fetchall()
    ]
    apply(conn, audit, SERIES, SeriesEvent.LATE_ARRIVAL,
          [Change((uid,), {"reason": "late-arrival"}) for uid in reopened])  # fmt: skip
    triaged = [s for s in seen if s.triage_route]
    if not triaged:
        return
    conn.cursor().executemany(
        """INSERT INTO series_triage (series_instance_uid, study_instance_uid, node, route)
           VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING""",
        [(s.series_uid, s.study_uid, s.node, s.triage_route) for s in triaged],
    )
    decided = [
        str(r[0])
        for r in conn.execute(
            """SELECT series_instance_uid FROM series_triage
               WHERE series_instance_uid = ANY(%s) AND state = 'decided'
               ORDER BY series_instance_uid FOR UPDATE""",
            (sorted({s.series_uid for s in triaged}),),
        ).fetchall()
    ]
    apply(conn, audit, TRIAGE, TriageEvent.REOPENED,
          [Change((uid,), {"reason": "late-arrival"}) for uid in decided])  # fmt: skip


def promote_study_items(conn: Conn, study_uids: Sequence[str], rank: int) -> int:
    """Move every waiting forward item of these studies' instances to lane *rank* (or keep a
    more urgent one); returns how many moved."""
    if not study_uids:
        return 0
    rows = conn.execute(
        """UPDATE forward_item f SET lane_rank = %s
           FROM ingest_instance i
           WHERE i.sop_instance_uid = f.sop_instance_uid AND i.study_instance_uid = ANY(%s)
             AND f.state IN ('pending', 'sent') AND f.lane_rank > %s
           RETURNING 1""",
        (rank, list(study_uids), rank),
    ).fetchall()
    return len(rows)


def note_series_facts(
    conn: Conn, *, expected: Mapping[str, int], models: Mapping[str, str]
) -> None:
    """Record what a series' headers say (its expected instance count, Images in Acquisition)
    and which model scores it (JSON), as routing learns them."""
    if expected:
        conn.cursor().executemany(
            "UPDATE series SET expected = %s WHERE series_instance_uid = %s",
            [(n, uid) for uid, n in expected.items()],
        )
    if models:
        conn.cursor().executemany(
            """UPDATE series_triage SET model = %s::jsonb
               WHERE series_instance_uid = %s AND model IS NULL""",
            [(m, uid) for uid, m in models.items()],
        )


def mark_triage_early(conn: Conn, series_uid: str, lane: str) -> None:
    """Note that a pending series was found critical before it was complete (its lane holds
    until the final decision)."""
    conn.execute(
        "UPDATE series_triage SET early = true, lane = %s WHERE series_instance_uid = %s",
        (lane, series_uid),
    )


def record_generated(
    conn: Conn,
    *,
    node: str,
    ae_title: str,
    sop_instance_uid: str,
    sop_class_uid: str,
    study_uid: str,
    series_uid: str,
    modality: str,
    transfer_syntax_uid: str,
    spool_path: str,
    size: int,
    blake3: bytes,
) -> bool:
    """Record an object this node made (a triage SR, a KOS) as ``received`` from itself, so
    that it is routed, de-identified and forwarded like any instance; False when it exists."""
    from dicom_nodes.state.jobs import ROUTE_PRIORITY, ROUTE_TASK, queue_name, route_lock

    patient = conn.execute(
        "SELECT patient_pseudonym FROM study WHERE study_instance_uid = %s", (study_uid,)
    ).fetchone()  # the study's patient, as its received instances named it
    row = conn.execute(
        INGEST_SQL,
        {
            "patient": patient[0] if patient else None,
            "sop": sop_instance_uid, "cls": sop_class_uid, "study": study_uid,
            "series": series_uid, "modality": modality, "ts": transfer_syntax_uid,
            "size": size, "b3": blake3, "path": spool_path, "calling": ae_title,
            "called": ae_title, "addr": "127.0.0.1", "port": 0, "node": node,
            "assoc": generated_association(node),
            "queue": queue_name(node), "qlock": route_lock(node), "task": ROUTE_TASK,
            "priority": ROUTE_PRIORITY, "touch": 0.0,
        },
    ).fetchone()  # fmt: skip
    return bool(row and row[0])


def generated_association(node: str) -> uuid.UUID:
    """The association id under which the objects *node* makes itself (triage SR, KOS…) are
    recorded."""
    return uuid.uuid5(uuid.NAMESPACE_OID, f"radiogate:{node}:generated")


def set_triage_results(
    conn: Conn, series_uid: str, sr_uid: str | None, kos_uid: str | None
) -> None:
    """Name the triage SR and KOS made for a series' decision."""
    conn.execute(
        """UPDATE series_triage SET sr_sop_instance_uid = %s, kos_sop_instance_uid = %s
           WHERE series_instance_uid = %s""",
        (sr_uid, kos_uid, series_uid),
    )


def set_archive_uids(conn: Conn, *, studies: Mapping[str, str], series: Mapping[str, str]) -> None:
    """Record the UIDs studies and series have in the archive (original → archived)."""
    if studies:
        conn.cursor().executemany(
            """UPDATE study SET archive_study_uid = %s
               WHERE study_instance_uid = %s AND archive_study_uid IS DISTINCT FROM %s""",
            [(studies[o], o, studies[o]) for o in sorted(studies)],  # rows locked in UID order
        )
    if series:
        conn.cursor().executemany(
            """UPDATE series SET archive_series_uid = %s
               WHERE series_instance_uid = %s AND archive_series_uid IS DISTINCT FROM %s""",
            [(series[o], o, series[o]) for o in sorted(series)],
        )


def open_analyses(conn: Conn, rows: Sequence[tuple[str, str, str, str]]) -> None:
    """Create ``waiting`` analyses of (series, study, node, pipeline) unless they exist."""
    if rows:
        conn.cursor().executemany(
            """INSERT INTO series_analysis (analysis_id, series_instance_uid,
                   study_instance_uid, node, pipeline)
               VALUES (%s || ':' || %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
            [(series, pipeline, series, study, node, pipeline)
             for series, study, node, pipeline in rows],
        )  # fmt: skip


def set_analysis_results(
    conn: Conn,
    analysis_id: str,
    *,
    seg: tuple[str, str] | None,
    sr: tuple[str, str] | None,
    parameter_hash: str,
    pyradiomics_version: str,
) -> None:
    """Name a finished run's SEG and SR (series UID, SOP Instance UID) and its versions."""
    conn.execute(
        """UPDATE series_analysis SET seg_series_uid = %s, seg_sop_instance_uid = %s,
               sr_series_uid = %s, sr_sop_instance_uid = %s, parameter_hash = %s,
               pyradiomics_version = %s
           WHERE analysis_id = %s""",
        (seg[0] if seg else None, seg[1] if seg else None, sr[0] if sr else None,
         sr[1] if sr else None, parameter_hash, pyradiomics_version, analysis_id),
    )  # fmt: skip


def open_archive_study(conn: Conn, study_uid: str) -> bool:
    """The row of a study stored into the archive directly (not through the SCP), under its own
    UID in the archive, created ``receiving``; False when the study is already known."""
    row = conn.execute(
        """INSERT INTO study (study_instance_uid, archive_study_uid)
           SELECT %s, %s WHERE NOT EXISTS (
               SELECT 1 FROM study WHERE study_instance_uid = %s OR archive_study_uid = %s)
           ON CONFLICT DO NOTHING RETURNING 1""",
        (study_uid, study_uid, study_uid, study_uid),
    ).fetchone()
    return row is not None

"""What an admin may decide, as state-model events: retry, cancel, release a quarantine,
complete a study, re-route unroutable instances.

Each operation locks the rows it changes, applies one event per group of rows through
:mod:`dicom_nodes.state.repository` (the admin is the audit event's user), settles the
instances and defers the jobs the change makes ready, in one transaction. Rows in a state the
operation does not apply to are reported, not changed; UIDs that name nothing are reported as
unknown.

* ``retry``: a ``dead`` or ``cancelled`` item goes back to ``pending`` — except an item whose
  de-identified copy is not recorded: it goes back to ``quarantined`` (``retried-held``), so
  nothing is ever sent without its copy. Without UIDs: every dead item.
* ``cancel``: with UIDs, their ``pending``, ``sent``, ``dead`` or ``quarantined`` items;
  without UIDs: every dead item (never quarantined ones; pending and sent ones only when asked
  to give up on a whole destination).
* ``release``: a ``quarantined`` item after a person reviewed the pixels: its copy is made
  without the burned-in hold, recorded with its vault entries, and the item is ``pending``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from dicom_nodes.pipeline import release
from dicom_nodes.pipeline.deidentify import DeidOutput, record_outputs
from dicom_nodes.state import (
    FORWARD,
    INSTANCE,
    STUDY,
    Change,
    ForwardEvent,
    InstanceEvent,
    Lane,
    StudyEvent,
)
from dicom_nodes.state import repository as repo
from dicom_nodes.state.jobs import defer_forward, defer_route
from dicom_nodes.state.repository import AuditSink

if TYPE_CHECKING:
    from dicom_nodes.deid.step import DeidStep
    from dicom_nodes.deid.vault import Vault

__all__ = ["Outcome", "cancel", "complete_study", "release_quarantine", "reroute", "retry"]

Conn = psycopg.Connection[Any]


@dataclass
class Outcome:
    """What an operation did: changed items per event, and what it could not change."""

    changed: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(UID, why) for rows in a state the operation does not apply to, or that failed."""
    unknown: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.changed.values())


def _items(
    conn: Conn, uids: Sequence[str], destination: str | None, states: Sequence[str]
) -> list[tuple[str, str, str, str, bool, str, int]]:
    """Locked items (uid, destination, state, profile, has copy, node, lane rank)."""
    rows = conn.execute(
        """SELECT f.sop_instance_uid, f.destination, f.state, f.profile,
                  d.spool_path IS NOT NULL, i.node, f.lane_rank
           FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
           LEFT JOIN deid_output d
                  ON d.sop_instance_uid = f.sop_instance_uid AND d.profile = f.profile
           WHERE f.state = ANY(%s)
             AND (cardinality(%s::text[]) = 0 OR f.sop_instance_uid = ANY(%s))
             AND (%s::text IS NULL OR f.destination = %s)
           ORDER BY f.sop_instance_uid, f.destination FOR UPDATE OF f""",
        (list(states), list(uids), list(uids), destination, destination),
    ).fetchall()
    return [(r[0], r[1], r[2], r[3], bool(r[4]), r[5], int(r[6])) for r in rows]


def _report(conn: Conn, uids: Sequence[str], changed: set[str], outcome: Outcome) -> None:
    """Name what was asked for and not changed: unknown UIDs, and items in other states."""
    rest = [u for u in dict.fromkeys(uids) if u not in changed]
    if not rest:
        return
    known = dict(
        conn.execute(
            """SELECT i.sop_instance_uid, coalesce(string_agg(f.destination || '=' || f.state,
                      ', ' ORDER BY f.destination), 'no forward items, instance ' || i.state)
               FROM ingest_instance i LEFT JOIN forward_item f USING (sop_instance_uid)
               WHERE i.sop_instance_uid = ANY(%s) GROUP BY i.sop_instance_uid, i.state""",
            (rest,),
        ).fetchall()
    )
    for uid in rest:
        if uid in known:
            outcome.skipped.append((uid, str(known[uid])))
        else:
            outcome.unknown.append(uid)


def _wake(conn: Conn, rows: Sequence[tuple[str, str, int]]) -> None:
    """Forwarding jobs for (node, destination, lane rank) that have pending items now."""
    for node, destination, rank in sorted(set(rows)):
        defer_forward(conn, node, destination, Lane.from_rank(rank))


def retry(
    conn: Conn, audit: AuditSink, uids: Sequence[str], destination: str | None, user: str
) -> Outcome:
    """Re-queue dead (and, when named, cancelled) items now."""
    out = Outcome()
    with conn.transaction():
        states = ("dead", "cancelled") if uids else ("dead",)
        items = _items(conn, uids, destination, states)
        back: list[tuple[str, str, str, str, bool, str, int]] = []
        held: list[tuple[str, str, str, str, bool, str, int]] = []
        for item in items:
            (held if item[3] and not item[4] else back).append(item)
        repo.apply(
            conn, audit, FORWARD, ForwardEvent.RETRIED,
            [Change((u, d), {"reason": "admin-retry"}) for u, d, *_ in back], user=user,
        )  # fmt: skip
        repo.apply(
            conn, audit, FORWARD, ForwardEvent.RETRIED_HELD,
            [Change((u, d), {"reason": "no-deidentified-copy"}) for u, d, *_ in held],
            user=user,
        )  # fmt: skip
        out.changed = {"retried": len(back), "returned-to-quarantine": len(held)}
        release.settle(conn, audit, sorted({i[0] for i in items}))
        _wake(conn, [(i[5], i[1], i[6]) for i in back])
        _report(conn, uids, {i[0] for i in items}, out)
    return out


def cancel(
    conn: Conn,
    audit: AuditSink,
    uids: Sequence[str],
    destination: str | None,
    user: str,
    *,
    waiting: bool = False,
) -> Outcome:
    """Give up on items: named ones that wait or are held; without UIDs, every dead item
    (*waiting*: and every pending or sent one, to give up on a destination)."""
    out = Outcome()
    with conn.transaction():
        if uids:
            states: tuple[str, ...] = ("pending", "sent", "dead", "quarantined")
        else:
            states = ("dead", "pending", "sent") if waiting else ("dead",)
        items = _items(conn, uids, destination, states)
        repo.apply(
            conn, audit, FORWARD, ForwardEvent.CANCELLED,
            [Change((u, d), {"reason": "admin-cancel"}) for u, d, *_ in items],
            user=user,
        )  # fmt: skip
        out.changed = {"cancelled": len(items)}
        release.settle(conn, audit, sorted({i[0] for i in items}))
        _report(conn, uids, {i[0] for i in items}, out)
    return out


def release_quarantine(
    conn: Conn,
    audit: AuditSink,
    uids: Sequence[str],
    user: str,
    *,
    step: DeidStep,
    vault: Vault,
) -> Outcome:
    """After a person reviewed the pixels: de-identify without the burned-in hold, record the
    copy (one per instance and profile) and its vault entries, and send it."""
    from dicom_nodes.deid.step import Quarantine

    out = Outcome()
    with conn.transaction():
        rows = conn.execute(
            """SELECT f.sop_instance_uid, f.destination, f.profile, i.spool_path, i.node,
                      f.lane_rank
               FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
               WHERE f.state = 'quarantined' AND f.sop_instance_uid = ANY(%s)
               ORDER BY f.sop_instance_uid, f.destination FOR UPDATE OF f""",
            (list(uids),),
        ).fetchall()
        made: dict[tuple[str, str], Any] = {}
        released: list[tuple[str, str, str, int]] = []
        for uid, dest, profile, path, node, rank in rows:
            if (uid, profile) not in made:
                made[(uid, profile)] = (
                    step.apply(Path(path), profile, text_reviewed=True) if profile else None
                )
                copy = made[(uid, profile)]
                if copy is not None and not isinstance(copy, Quarantine):
                    record_outputs(
                        conn,
                        [DeidOutput(uid, profile, copy.spool_path, copy.transfer_syntax_uid,
                                    copy.size, "released after pixel review")],
                    )  # fmt: skip
                    vault.record(conn, copy.vault)
            copy = made[(uid, profile)]
            if isinstance(copy, Quarantine):
                out.skipped.append((uid, f"still not releasable ({copy.reason})"))
                continue
            released.append((uid, dest, node, int(rank)))
        repo.apply(
            conn, audit, FORWARD, ForwardEvent.RELEASED_BY_REVIEW,
            [Change((u, d), {"reason": "released-after-review"}) for u, d, _n, _r in released],
            user=user,
        )  # fmt: skip
        out.changed = {"released": len(released)}
        release.settle(conn, audit, sorted({r[0] for r in released}))
        _wake(conn, [(n, d, r) for _u, d, n, r in released])
        _report(conn, uids, {r[0] for r in rows}, out)
    return out


def complete_study(conn: Conn, audit: AuditSink, uid: str, user: str) -> Outcome:
    """``study-forced``: complete a receiving study now."""
    out = Outcome()
    with conn.transaction():
        row = conn.execute(
            "SELECT state FROM study WHERE study_instance_uid = %s FOR UPDATE", (uid,)
        ).fetchone()
        if row is None:
            out.unknown.append(uid)
        elif row[0] != "receiving":
            out.skipped.append((uid, f"study is {row[0]}"))
        else:
            repo.apply(
                conn, audit, STUDY, StudyEvent.STUDY_FORCED,
                [Change((uid,), {"reason": "admin"})], values={"by": [f"admin:{user}"]},
                user=user,
            )  # fmt: skip
            out.changed = {"completed": 1}
    return out


def reroute(conn: Conn, audit: AuditSink, uids: Sequence[str], user: str) -> Outcome:
    """``rerouted``: unroutable instances (named, or all of them) are routed again."""
    out = Outcome()
    with conn.transaction():
        rows = conn.execute(
            """SELECT sop_instance_uid, node FROM ingest_instance
               WHERE state = 'unroutable'
                 AND (cardinality(%s::text[]) = 0 OR sop_instance_uid = ANY(%s))
               ORDER BY sop_instance_uid FOR UPDATE""",
            (list(uids), list(uids)),
        ).fetchall()
        repo.apply(
            conn, audit, INSTANCE, InstanceEvent.REROUTED,
            [Change((str(r[0]),), {"reason": "admin-reroute"}) for r in rows], user=user,
        )  # fmt: skip
        nodes: dict[str, int] = defaultdict(int)
        for _uid, node in rows:
            nodes[str(node)] += 1
        for node in nodes:
            defer_route(conn, node)
        out.changed = {"rerouted": len(rows)}
        _report(conn, uids, {str(r[0]) for r in rows}, out)
    return out

"""Stage 5, release: bring instances in line with their forward items, and free the spool.

:func:`settle` runs in the transaction of every change to forward items
(:func:`dicom_nodes.state.model.settle_instance` decides): an instance stays ``routed`` while a
destination still waits, becomes ``held`` when only a person's decision can move it on,
``cancelled`` when an admin gave up on the rest, ``released`` when every destination confirmed.

What happens to an instance's spool copies (the original as received, and its de-identified
copies) in each state:

==============  ==========================================================================
state           spool copies
==============  ==========================================================================
received        kept (to be routed)
routed          kept (to be sent or confirmed; and until its series is triaged, when its
                route triages: the triage SR and KOS are made from it)
held            kept: an admin may release the quarantine or retry (``radiogate job``)
cancelled       kept: an admin may retry (``radiogate job retry``)
unroutable      kept: ``radiogate route retry`` routes it once the routes are fixed
released        deleted at once, in the transaction that releases it (every destination
                confirmed, so the copies are not needed whatever happens to the commit)
missing         the original is gone; its de-identified copies are deleted
purged          deleted by :func:`purge_expired` after ``pipeline.retention_days`` in held,
                cancelled or unroutable (held items are cancelled with reason
                ``retention-expired``); the row and its audit trail remain
==============  ==========================================================================

An original is deleted only when no other instance row that still needs it points at the same
content-addressed file (a re-send with identical bytes shares it).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.state import FORWARD, INSTANCE, Change, ForwardEvent, InstanceEvent
from dicom_nodes.state import repository as repo
from dicom_nodes.state.model import settle_instance
from dicom_nodes.state.repository import AuditSink

__all__ = ["NO_LONGER_NEEDED", "purge_expired", "settle", "settle_leftovers"]

LOGGER = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

NO_LONGER_NEEDED = ("released", "missing", "purged")
"""Instance states whose original spool file nobody needs any more."""


def settle(conn: Conn, audit: AuditSink, uids: Sequence[str]) -> dict[str, int]:
    """Apply the events that bring instances *uids* in line with their items; returns the
    number of instances per event. Instance rows are locked in UID order (concurrent rounds
    of two destinations of one instance wait for each other and see each other's items)."""
    if not uids:
        return {}
    locked = conn.execute(
        """SELECT sop_instance_uid FROM ingest_instance
           WHERE sop_instance_uid = ANY(%s) ORDER BY sop_instance_uid FOR UPDATE""",
        (sorted(set(uids)),),
    ).fetchall()
    if not locked:
        return {}
    counts: dict[str, int] = defaultdict(int)
    for _step in range(2):
        rows = conn.execute(
            """SELECT i.sop_instance_uid, i.state, coalesce(array_agg(f.state)
                          FILTER (WHERE f.state IS NOT NULL), '{}'),
                      EXISTS (SELECT 1 FROM triage_instance t JOIN series_triage st
                                  USING (series_instance_uid)
                              WHERE t.sop_instance_uid = i.sop_instance_uid
                                AND st.state = 'pending')
               FROM ingest_instance i LEFT JOIN forward_item f USING (sop_instance_uid)
               WHERE i.sop_instance_uid = ANY(%s) GROUP BY i.sop_instance_uid, i.state""",
            ([r[0] for r in locked],),
        ).fetchall()
        by_event: dict[InstanceEvent, list[str]] = defaultdict(list)
        for uid, state, items, gated in rows:
            event = settle_instance(state, items, gated=bool(gated))
            if event is not None:
                by_event[event].append(str(uid))
        if not by_event:
            break
        for event, group in by_event.items():
            repo.apply(conn, audit, INSTANCE, event, [Change((uid,)) for uid in group])
            counts[event.value] += len(group)
            if event is InstanceEvent.ALL_CONFIRMED:
                delete_spool_copies(conn, group)
    return dict(counts)


def settle_leftovers(ctx: PipelineContext, limit: int = 1000) -> dict[str, int]:
    """Settle routed instances that nothing waits for any more (a worker died between a
    change and its settling, or the rows predate the state model)."""
    with ctx.pool.connection() as conn, conn.transaction():
        uids = [
            str(r[0])
            for r in conn.execute(
                """SELECT i.sop_instance_uid FROM ingest_instance i
                   WHERE i.node = %s AND i.state = 'routed'
                     AND NOT EXISTS (SELECT 1 FROM forward_item f
                                     WHERE f.sop_instance_uid = i.sop_instance_uid
                                       AND f.state IN ('pending', 'sent'))
                     AND NOT EXISTS (SELECT 1 FROM triage_instance t JOIN series_triage st
                                         USING (series_instance_uid)
                                     WHERE t.sop_instance_uid = i.sop_instance_uid
                                       AND st.state = 'pending')
                   ORDER BY i.sop_instance_uid LIMIT %s FOR UPDATE SKIP LOCKED""",
                (ctx.node, limit),
            ).fetchall()
        ]
        return settle(conn, ctx.audit, uids)


def delete_spool_copies(conn: Conn, uids: Sequence[str]) -> None:
    """Delete the de-identified copies of *uids* and their originals unless still needed.
    Called in the transaction that moves them to a state in :data:`NO_LONGER_NEEDED`."""
    copies = conn.execute(
        "DELETE FROM deid_output WHERE sop_instance_uid = ANY(%s) RETURNING spool_path",
        (list(uids),),
    ).fetchall()
    originals = conn.execute(
        "SELECT DISTINCT spool_path FROM ingest_instance WHERE sop_instance_uid = ANY(%s)",
        (list(uids),),
    ).fetchall()
    unreferenced = conn.execute(
        """SELECT p FROM unnest(%s::text[]) AS p
           WHERE NOT EXISTS (SELECT 1 FROM ingest_instance WHERE spool_path = p
                             AND state <> ALL(%s))""",
        (sorted(str(r[0]) for r in originals), list(NO_LONGER_NEEDED)),
    ).fetchall()
    for (path,) in [*copies, *unreferenced]:
        Path(path).unlink(missing_ok=True)


def purge_expired(ctx: PipelineContext, limit: int = 500) -> int:
    """Purge instances that waited for nobody longer than ``pipeline.retention_days``."""
    days = ctx.settings.retention_days
    if days <= 0:
        return 0
    with ctx.pool.connection() as conn, conn.transaction():
        uids = [
            str(r[0])
            for r in conn.execute(
                """SELECT sop_instance_uid FROM ingest_instance
                   WHERE node = %s AND state IN ('held', 'cancelled', 'unroutable')
                     AND state_changed_at < clock_timestamp() - make_interval(secs => %s)
                   ORDER BY sop_instance_uid LIMIT %s FOR UPDATE SKIP LOCKED""",
                (ctx.node, days * 86400.0, limit),
            ).fetchall()
        ]
        if not uids:
            return 0
        held = conn.execute(
            """SELECT sop_instance_uid, destination FROM forward_item
               WHERE sop_instance_uid = ANY(%s) AND state IN ('quarantined', 'dead')
               ORDER BY sop_instance_uid, destination FOR UPDATE""",
            (uids,),
        ).fetchall()
        reason = {"reason": "retention-expired"}
        repo.apply(
            conn, ctx.audit, FORWARD, ForwardEvent.CANCELLED,
            [Change((str(u), str(d)), reason) for u, d in held],
        )  # fmt: skip
        repo.apply(
            conn, ctx.audit, INSTANCE, InstanceEvent.RETENTION_EXPIRED,
            [Change((uid,), reason) for uid in uids],
        )  # fmt: skip
        delete_spool_copies(conn, uids)
    LOGGER.info("purged %d instances kept longer than %s days", len(uids), days)
    return len(uids)

"""Deferred appends: :func:`enqueue` in the caller's transaction, :func:`seal` into the chain.

:func:`audit.append` holds the chain's head lock from the append to the end of the caller's
transaction, commit included, so one-event transactions cannot outrun one WAL flush each, one
after the other (about 1,000 per second on the 2-core test machine; fewer with many writers).
:func:`enqueue` instead inserts the canonical bytes into ``audit_pending`` — one round trip, no
lock, so concurrent transactions commit together (group commit) — and a sealer
(:func:`seal`, run by ``radiogate audit checkpoint --watch`` every ``audit.seal_interval``
seconds) moves pending events, in enqueue order, into the chain in large batches: it locks the
head, reads the pending ids and bytes, computes the BLAKE3 links and calls ``audit_seal()``,
which inserts the chained rows and deletes the pending ones in the same transaction.

The event is durable when the caller commits, and chained (tamper-evident) when sealed, usually
well under a second later; until then it has no sequence number. Pending rows are protected
like the chain (triggers, grants: only ``audit_seal()`` deletes them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from audit.chain import chain_hashes
from audit.event import AuditEvent

__all__ = [
    "ENQUEUE_SELECT_SQL",
    "enqueue",
    "enqueue_many",
    "enqueue_params",
    "pending_count",
    "seal",
]

_ENQUEUE_SQL = (
    "INSERT INTO audit_pending (body, event_time, event_id, step, keys)"
    " SELECT b, tm, e, s, string_to_array(k, E'\\n')"
    " FROM unnest(%s::bytea[], %s::timestamptz[], %s::text[], %s::text[], %s::text[])"
    " AS t(b, tm, e, s, k)"
)
_ENQUEUE_ONE_SQL = (
    "INSERT INTO audit_pending (body, event_time, event_id, step, keys)"
    " VALUES (%s, %s, %s, %s, string_to_array(%s, E'\\n'))"
)


ENQUEUE_SELECT_SQL = (
    "INSERT INTO audit_pending (body, event_time, event_id, step, keys)"
    " SELECT %(audit_body)s, %(audit_time)s, %(audit_event_id)s, %(audit_step)s,"
    " string_to_array(%(audit_keys)s, E'\\n')"
)
""":func:`enqueue` as a fragment of the caller's own statement (e.g. a data-modifying CTE,
which may add a ``WHERE``), with :func:`enqueue_params` among its parameters: the event
commits with whatever that statement writes, in one round trip."""


def enqueue_params(event: AuditEvent) -> dict[str, Any]:
    """The named parameters of :data:`ENQUEUE_SELECT_SQL` for *event*."""
    return {
        "audit_body": event.to_bytes(),
        "audit_time": event.time,
        "audit_event_id": event.event_id.code,
        "audit_step": event.step.value,
        "audit_keys": "\n".join(event.index_keys()),
    }


def enqueue(conn: psycopg.Connection[Any], event: AuditEvent) -> None:
    """Record *event* for sealing, in *conn*'s current transaction (one round trip, no lock)."""
    conn.execute(
        _ENQUEUE_ONE_SQL,
        (
            event.to_bytes(),
            event.time,
            event.event_id.code,
            event.step.value,
            "\n".join(event.index_keys()),
        ),
    )


def enqueue_many(conn: psycopg.Connection[Any], events: Sequence[AuditEvent]) -> None:
    """Record *events*, in order, for sealing, in *conn*'s current transaction."""
    if not events:
        return
    conn.execute(
        _ENQUEUE_SQL,
        (
            [e.to_bytes() for e in events],
            [e.time for e in events],
            [e.event_id.code for e in events],
            [e.step.value for e in events],
            ["\n".join(e.index_keys()) for e in events],
        ),
    )


def seal(conn: psycopg.Connection[Any], limit: int = 10_000) -> int:
    """Move up to *limit* pending events into the chain in one transaction; return how many.

    *conn* must not be inside a transaction. Sealers on several machines serialise on the head.
    """
    with conn.transaction():
        head = conn.execute("SELECT head_seq, head_hash FROM audit_lock_head()").fetchone()
        assert head is not None
        rows = conn.execute(
            "SELECT id, body FROM audit_pending ORDER BY id LIMIT %s", (limit,)
        ).fetchall()
        if not rows:
            return 0
        seq, prev = int(head[0]), bytes(head[1])
        hashes = chain_hashes(prev, seq + 1, [bytes(r[1]) for r in rows])
        conn.execute(
            "SELECT audit_seal(%s, %s::bigint[], %s::bytea[])",
            (seq, [int(r[0]) for r in rows], hashes),
        )
    return len(rows)


def pending_count(conn: psycopg.Connection[Any]) -> int:
    """Events enqueued (and committed) but not yet sealed."""
    row = conn.execute("SELECT count(*) FROM audit_pending").fetchone()
    return int(row[0]) if row else 0

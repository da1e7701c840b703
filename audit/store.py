"""Appending audit events in the caller's PostgreSQL transaction.

:func:`append` and :func:`append_many` run on the caller's psycopg 3 connection, inside whatever
transaction it has open (the SCP records the instance row and its 110104 event in one
transaction: both commit or neither does). They never commit, roll back or open a savepoint.

Design (measured with ``bench/bench_audit.py``):

- Serialisation: the one ``audit_head`` row is locked ``FOR UPDATE`` by the SQL function
  ``audit_append`` and stays locked until the caller's transaction ends, so sequence numbers are
  gap-free with any number of writers on any number of machines; a rolled-back transaction
  leaves no trace. Call append as the *last* statement before commit: the lock is held from
  there to the end of the commit.
- One round trip when possible: PostgreSQL has no BLAKE3, so hashes are computed here. The
  process remembers the head its last append produced (per database) and sends hashes computed
  from that guess; ``audit_append`` locks the head and inserts only if the guess is right,
  otherwise it returns the actual head (still locked by us) and a second call, with hashes
  computed from it, cannot miss. A lone writer (or the process that wrote last) thus needs one
  round trip; under contention most appends need two, about the cost of the plain
  "SELECT ... FOR UPDATE, then INSERT" scheme, which measured no faster than this one.
- Search keys (UIDs, pseudonyms, AE titles, users) are extracted here and stored in an indexed
  array column; verification never reads them.

Appending from a connection in autocommit mode works too (each call is its own transaction and
retries until its guess is right).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg

from audit.chain import GENESIS, chain_hashes
from audit.event import AuditEvent

__all__ = ["AppendResult", "Head", "append", "append_many", "read_head"]

_APPEND_SQL = (
    "SELECT appended, head_seq, head_hash FROM audit_append("
    "%s, %s, %s::bytea[], %s::bytea[], %s::timestamptz[], %s::text[], %s::text[], %s::text[])"
)


class AppendResult(NamedTuple):
    """Sequence number and chain hash given to an appended event."""

    seq: int
    hash: bytes


class Head(NamedTuple):
    """The chain's head: identity, last sequence number (0 when empty) and its hash."""

    chain_id: str
    seq: int
    hash: bytes


_guess_lock = threading.Lock()
_guesses: dict[tuple[str, str, str], tuple[int, bytes]] = {}


def _db_key(conn: psycopg.Connection[Any]) -> tuple[str, str, str]:
    info = conn.info
    return (info.host, str(info.port), info.dbname)


def append(conn: psycopg.Connection[Any], event: AuditEvent) -> AppendResult:
    """Append *event* in *conn*'s current transaction; return its sequence number and hash.

    The event becomes visible (and the head lock is released) when the caller commits.
    """
    return append_many(conn, (event,))[-1]


def append_many(conn: psycopg.Connection[Any], events: Sequence[AuditEvent]) -> list[AppendResult]:
    """Append *events* in order, consecutively, in *conn*'s current transaction."""
    if not events:
        return []
    bodies = [e.to_bytes() for e in events]
    times = [e.time for e in events]
    event_ids = [e.event_id.code for e in events]
    steps = [e.step.value for e in events]
    keys = ["\n".join(e.index_keys()) for e in events]
    db = _db_key(conn)
    with _guess_lock:
        seq, prev = _guesses.get(db, (-1, GENESIS))
    while True:
        hashes = chain_hashes(prev, seq + 1, bodies) if seq >= 0 else [GENESIS] * len(bodies)
        row = conn.execute(
            _APPEND_SQL, (seq, prev, hashes, bodies, times, event_ids, steps, keys)
        ).fetchone()
        assert row is not None
        appended, head_seq, head_hash = bool(row[0]), int(row[1]), bytes(row[2])
        with _guess_lock:
            _guesses[db] = (head_seq, head_hash)
        if appended:
            first = head_seq - len(bodies) + 1
            return [AppendResult(first + i, h) for i, h in enumerate(hashes)]
        seq, prev = head_seq, head_hash


def read_head(conn: psycopg.Connection[Any]) -> Head:
    """The committed head as seen by *conn*'s snapshot (no lock)."""
    row = conn.execute("SELECT chain_id::text, seq, hash FROM audit_head").fetchone()
    if row is None:
        raise LookupError("audit_head is empty: the audit migrations were not applied")
    return Head(str(row[0]), int(row[1]), bytes(row[2]))


def forget_head_guesses() -> None:
    """Drop the remembered heads (tests, or after restoring a database)."""
    with _guess_lock:
        _guesses.clear()

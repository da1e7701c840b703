"""Searching the audit trail; every search is itself audited (PS3.15 A.5.3.12, 110112 Query).

Rows are found through the derived search columns (indexed ``keys`` array, event time, event
ID, step) and then filtered again on the parsed canonical bytes, so a row whose search columns
were tampered with cannot appear under a search it does not match.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from audit.codes import EventAction, EventID, Step
from audit.codes import SystemObjectKind as Kind
from audit.event import ActiveParticipant, AuditEvent, AuditSource, QueryObject
from audit.identifiers import AuditEventError
from audit.store import AppendResult, append

__all__ = ["AuditQuery", "StoredEvent", "audited_search", "search"]


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: sequence number, chain hash, canonical bytes and the parsed event."""

    seq: int
    hash: bytes
    body: bytes
    event: AuditEvent


@dataclass(frozen=True)
class AuditQuery:
    """Search criteria (all optional, combined with AND); times are inclusive/exclusive."""

    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    patient: str | None = None
    ae_title: str | None = None
    user: str | None = None
    event_id: EventID | None = None
    step: Step | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.event_id is not None:
            object.__setattr__(self, "event_id", EventID(self.event_id))
        if self.step is not None:
            object.__setattr__(self, "step", Step(self.step))
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise AuditEventError(f"{name}: expected a time with a zone")
        self.as_object()  # validates the identifiers

    def keys(self) -> list[str]:
        pairs = (
            ("study", self.study_uid),
            ("series", self.series_uid),
            ("sop", self.sop_uid),
            ("patient", self.patient),
            ("ae", self.ae_title),
            ("user", self.user),
        )
        return [f"{k}:{v}" for k, v in pairs if v is not None]

    def as_object(self) -> QueryObject:
        """The query as a participant object of its own 110112 event."""
        params = [tuple(k.split(":", 1)) for k in self.keys()]
        if self.event_id is not None:
            params.append(("event", self.event_id.code))
        if self.step is not None:
            params.append(("step", self.step.value))
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                params.append((name, value.isoformat()))
        if self.limit is not None:
            params.append(("limit", str(self.limit)))
        return QueryObject(Kind.AUDIT_LOG, tuple((k, v) for k, v in params))

    def matches(self, event: AuditEvent) -> bool:
        if not set(self.keys()) <= set(event.index_keys()):
            return False
        if self.event_id is not None and event.event_id is not self.event_id:
            return False
        if self.step is not None and event.step is not self.step:
            return False
        if self.since is not None and event.time < self.since:
            return False
        return self.until is None or event.time < self.until


def search(conn: psycopg.Connection[Any], query: AuditQuery) -> Iterator[StoredEvent]:
    """Events matching *query*, oldest first (no audit event of its own: see audited_search)."""
    where = ["true"]
    params: list[Any] = []
    keys = query.keys()
    if keys:
        where.append("keys @> %s::text[]")
        params.append(keys)
    if query.event_id is not None:
        where.append("event_id = %s")
        params.append(query.event_id.code)
    if query.step is not None:
        where.append("step = %s")
        params.append(query.step.value)
    if query.since is not None:
        where.append("event_time >= %s")
        params.append(query.since)
    if query.until is not None:
        where.append("event_time < %s")
        params.append(query.until)
    sql = f"SELECT seq, hash, body FROM audit_event WHERE {' AND '.join(where)} ORDER BY seq"  # noqa: S608 - fixed fragments
    found = 0
    with conn.cursor(binary=True) as cur:
        cur.execute(sql.encode(), params)
        for seq, hash_, body in cur:
            try:
                event = AuditEvent.from_bytes(bytes(body))
            except AuditEventError:
                continue  # damaged bytes: verify reports them
            if query.matches(event):
                yield StoredEvent(int(seq), bytes(hash_), bytes(body), event)
                found += 1
                if query.limit is not None and found >= query.limit:
                    return


def audited_search(
    conn: psycopg.Connection[Any],
    query: AuditQuery,
    requestor: ActiveParticipant,
    source: AuditSource,
) -> tuple[AppendResult, list[StoredEvent]]:
    """Record the 110112 Query event, run *query*, commit; return the event's position and hits.

    The query event is appended and committed even when nothing matches.
    """
    event = AuditEvent(
        event_id=EventID.QUERY,
        action=EventAction.EXECUTE,
        step=Step.AUDIT_QUERIED,
        participants=(requestor,),
        source=source,
        objects=(query.as_object(),),
    )
    with conn.transaction():
        hits = list(search(conn, query))
        position = append(conn, event)
    return position, hits

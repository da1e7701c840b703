"""Radiogate's routes inside Orthanc (``/radiogate/...``): JSON in, JSON out.

=======  =====================  ===========  ==================================================
method   path                   role         answer
=======  =====================  ===========  ==================================================
GET      ``status``             any role     Orthanc version, capabilities (labels on >= 1.12)
GET      ``worklist``           radiologist  studies in reading order (:func:`queries.worklist`);
                                             ``lane``, ``modality``, ``since``, ``until``,
                                             ``limit``
GET      ``studies/{id}``       radiologist  triage, measures, model outputs, objects, alerts,
                                             audit history (``id``: Orthanc ID or study UID)
POST     ``alerts/{id}/ack``    radiologist  acknowledge an open alert (409 if it was already)
GET      ``audit``              admin        search: ``study``, ``user``, ``event``, ``step``,
                                             ``since``, ``until``, ``limit`` (itself audited)
GET      ``audit/verify``       admin        recompute the chain, check signed checkpoints
=======  =====================  ===========  ==================================================

Statuses: 400 bad parameter, 403 role missing (also a 110113 Security Alert), 404 unknown
study or alert or route, 405 wrong method, 409 already acknowledged, 503 PostgreSQL down.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg

import audit
from config import Settings
from config.pacs import Role
from pacs_plugin import events, queries, sr
from pacs_plugin.http import HttpError, Request, Response, answer

__all__ = ["Archive", "Routes"]

Conn = psycopg.Connection[Any]
_ORTHANC_ID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{8}){4}")
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_LANES = ("critical", "urgent", "routine")


class Archive(Protocol):
    """What the routes ask Orthanc (in-process through the plugin API; a stub in tests)."""

    def study_uid_of(self, orthanc_id: str) -> str | None: ...

    def orthanc_id_of(self, study_uid: str) -> str | None: ...

    def instance_tags(self, sop_uid: str) -> dict[str, Any] | None:
        """Simplified tags of an instance (None: not in the archive)."""
        ...


@dataclass
class Routes:
    settings: Settings
    connect: Callable[[], AbstractContextManager[Conn]]
    archive: Archive
    refused: Callable[[Request, str], None]
    """Records a refused request (110113) without blocking."""
    capabilities: dict[str, Any]

    @property
    def node(self) -> str:
        return self.settings.node.name

    def dispatch(self, request: Request) -> Response:
        return answer(lambda: self._route(request))

    def _route(self, request: Request) -> Response:
        path = request.path.strip("/")
        table: list[tuple[str, str, Role | None, Callable[..., Response]]] = [
            ("GET", r"status", None, self.status),
            ("GET", r"worklist", Role.RADIOLOGIST, self.worklist),
            ("GET", r"studies/([^/]+)", Role.RADIOLOGIST, self.study),
            ("POST", r"alerts/([A-Za-z0-9._:-]+)/ack", Role.RADIOLOGIST, self.ack),
            ("GET", r"audit", Role.ADMIN, self.audit_search),
            ("GET", r"audit/verify", Role.ADMIN, self.audit_verify),
        ]
        for method, pattern, role, handler in table:
            m = re.fullmatch(pattern, path)
            if m is None:
                continue
            if request.method != method:
                return Response(405, {"error": "method-not-allowed", "allow": method})
            if role is None and not request.who.roles:
                self.refused(request, "no-role")
                raise HttpError(403, "role-required")
            if role is not None and not request.who.has(role):
                self.refused(request, f"role-required-{role.value}")
                raise HttpError(403, "role-required", role.value)
            return handler(request, *m.groups())
        raise HttpError(404, "no-such-route")

    # -- routes ------------------------------------------------------------------------------

    def status(self, request: Request) -> Response:
        return Response(
            200,
            {
                "node": self.node,
                "user": request.who.user,
                "roles": sorted(r.value for r in request.who.roles),
                **self.capabilities,
            },
        )

    def worklist(self, request: Request) -> Response:
        q = request.query
        lane = q.get("lane") or None
        if lane is not None and lane not in _LANES:
            raise HttpError(400, "bad-parameter", "lane: critical, urgent or routine")
        modality = q.get("modality") or None
        if modality is not None and not re.fullmatch(r"[A-Z0-9]{1,16}", modality):
            raise HttpError(400, "bad-parameter", "modality: a DICOM modality such as CT")
        p = self.settings.pacs
        limit = _int(q.get("limit"), "limit", p.worklist_limit)
        flt = queries.WorklistFilter(
            lane,
            modality,
            _time(q.get("since"), "since"),
            _time(q.get("until"), "until"),
            min(limit, p.worklist_limit),
        )
        with self.connect() as conn:
            rows = queries.worklist(
                conn,
                flt,
                routine_ceiling=p.routine_max_wait_minutes * 60,
                urgent_ceiling=p.urgent_max_wait_minutes * 60,
            )
        for row in rows:
            row["orthanc_id"] = self.archive.orthanc_id_of(row["study_uid"])
        return Response(
            200,
            {
                "studies": rows,
                "count": len(rows),
                "ceilings_minutes": {
                    "routine": p.routine_max_wait_minutes,
                    "urgent": p.urgent_max_wait_minutes,
                },
            },
        )

    def study(self, request: Request, key: str) -> Response:
        uid = self._study_uid(key)
        with self.connect() as conn:
            found = queries.find_study(conn, uid)
            if found is None:
                raise HttpError(404, "unknown-study")
            received, archive_uid = found
            detail = queries.study_detail(conn, received, archive_uid)
            history = [_history(e) for e in _history_of(conn, (received, archive_uid))]
        detail["orthanc_id"] = self.archive.orthanc_id_of(archive_uid)
        detail["audit"] = history
        detail["model_attributions"] = self._attributions(detail["objects"])
        return Response(200, detail)

    def ack(self, request: Request, alert_id: str) -> Response:
        with self.connect() as conn, conn.transaction():
            outcome, study = queries.acknowledge(conn, alert_id, request.who.user)
            if outcome == "unknown":
                raise HttpError(404, "unknown-alert")
            if outcome == "already":
                raise HttpError(409, "already-acknowledged")
            assert study is not None
            audit.enqueue(
                conn,
                events.ack_event(
                    self.node,
                    self.settings.orthanc.ae_title,
                    request.who.user,
                    request.address,
                    study,
                ),
            )
        return Response(
            200,
            {"alert_id": alert_id, "state": "acknowledged", "acknowledged_by": request.who.user},
        )

    def audit_search(self, request: Request) -> Response:
        q = request.query
        try:
            query = audit.AuditQuery(
                study_uid=q.get("study") or None,
                user=q.get("user") or None,
                event_id=q.get("event") or None,  # type: ignore[arg-type]
                step=q.get("step") or None,  # type: ignore[arg-type]
                since=_time(q.get("since"), "since"),
                until=_time(q.get("until"), "until"),
                limit=min(_int(q.get("limit"), "limit", 1000), 10_000),
            )
            requestor = audit.ActiveParticipant(
                request.who.user, requestor=True, network_address=request.address
            )
        except (audit.AuditEventError, ValueError) as exc:
            raise HttpError(400, "bad-parameter", str(exc)) from None
        with self.connect() as conn:
            position, hits = audit.audited_search(
                conn, query, requestor, audit.AuditSource(self.node)
            )
        return Response(
            200,
            {
                "query_seq": position.seq,
                "count": len(hits),
                "events": [
                    {"seq": h.seq, "hash": h.hash.hex(), "event": h.event.to_json()} for h in hits
                ],
            },
        )

    def audit_verify(self, request: Request) -> Response:
        a = self.settings.audit
        keyring = audit.Keyring.load(Path(a.keyring))
        external = audit.read_checkpoint_file(Path(a.checkpoint_file))
        with self.connect() as conn:
            report = audit.verify(conn, keyring, external)
            first = report.damage
            with conn.transaction():
                audit.enqueue(
                    conn,
                    events.verified(
                        self.node,
                        request.who.user,
                        request.address,
                        None if first is None else first.kind.value,
                    ),
                )
        return Response(
            200,
            {
                "ok": report.ok,
                "chain_id": report.chain_id,
                "head_seq": report.head_seq,
                "checked": report.checked,
                "last_signed_seq": report.last_signed_seq,
                "checkpoints": {"database": report.checkpoints_db, "file": report.checkpoints_file},
                "damages": [{"kind": d.kind.value, "seq": d.seq} for d in report.damages],
                "warnings": list(report.warnings),
            },
        )

    def _attributions(self, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Model outputs with their attributions, from the study's measurement reports."""
        found: list[dict[str, Any]] = []
        for obj in objects:
            if obj["kind"] == "SR" and obj.get("series_uid"):  # analysis reports (TID 1500)
                tags = self.archive.instance_tags(str(obj["sop_instance_uid"]))
                if tags is not None:
                    found += [
                        {"sop_instance_uid": obj["sop_instance_uid"], **o}
                        for o in sr.model_outputs(tags)
                    ]
        return found

    def _study_uid(self, key: str) -> str:
        if _ORTHANC_ID.fullmatch(key):
            uid = self.archive.study_uid_of(key)
            if uid is None:
                raise HttpError(404, "unknown-study")
            return uid
        if _UID.fullmatch(key) and len(key) <= 64:
            return key
        raise HttpError(400, "bad-parameter", "an Orthanc study ID or a Study Instance UID")


def _history_of(conn: Conn, uids: tuple[str, str]) -> Iterator[audit.StoredEvent]:
    """Events naming either UID of the study (a UID events cannot carry has none)."""
    seen: set[int] = set()
    found: list[audit.StoredEvent] = []
    for uid in dict.fromkeys(uids):
        try:
            query = audit.AuditQuery(study_uid=uid, limit=1000)
        except audit.AuditEventError:
            continue
        found += audit.search(conn, query)
    for e in sorted(found, key=lambda e: e.seq):
        if e.seq not in seen:
            seen.add(e.seq)
            yield e


def _history(stored: audit.StoredEvent) -> dict[str, Any]:
    """An audit event without its identifiers: what happened, when, who, with what outcome."""
    e = stored.event
    return {
        "seq": stored.seq,
        "time": e.time.isoformat(),
        "event": e.event_id.code,
        "step": e.step.value,
        "outcome": int(e.outcome),
        "reason": e.reason,
        "users": [p.user_id for p in e.participants if p.requestor],
    }


def _int(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or int(value) < 1:
        raise HttpError(400, "bad-parameter", f"{name}: a positive whole number")
    return int(value)


def _time(value: str | None, name: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise HttpError(400, "bad-parameter", f"{name}: an ISO 8601 date or time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)

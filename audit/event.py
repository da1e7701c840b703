"""Audit events (DICOM PS3.15 A.5, IHE ATNA) and their canonical bytes.

An :class:`AuditEvent` is what happened (:class:`~audit.codes.EventID`, action, outcome, time
with zone, Radiogate :class:`~audit.codes.Step`), who took part (:class:`ActiveParticipant`: AE
titles, staff user IDs, network addresses, the requestor flag), which node reported it
(:class:`AuditSource`) and what it was about (participant objects: :class:`Patient` by
pseudonym, :class:`Study` with series and SOP instance UIDs, :class:`QueryObject`,
:class:`SystemObject`). Every part validates itself when constructed; there is no free-text
field, so a patient name or birth date cannot be put into an event (see :mod:`audit.identifiers`).

:meth:`AuditEvent.to_bytes` gives the canonical form that is stored verbatim and hashed:
JSON with sorted keys, no whitespace, UTF-8, absent optional fields omitted, list order kept.
:meth:`AuditEvent.from_bytes` parses it back and refuses bytes that are not canonical.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from audit.codes import EventAction, EventID, EventOutcome, EventTypeCode, RoleID, Step
from audit.codes import SystemObjectKind as Kind
from audit.identifiers import (
    AuditEventError,
    check_ae_title,
    check_code,
    check_network_address,
    check_object_id,
    check_pseudonym,
    check_uid,
    check_user_id,
)

__all__ = [
    "QUERY_PARAMETERS",
    "ActiveParticipant",
    "AuditEvent",
    "AuditSource",
    "Instance",
    "ParticipantObject",
    "Patient",
    "QueryObject",
    "Study",
    "SystemObject",
]

FORMAT_VERSION = 1
"""Version of the canonical JSON layout (key ``v``)."""


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _enum(obj: object, name: str, cls: Any) -> None:
    value = getattr(obj, name)
    try:
        _set(obj, name, cls(value))
    except ValueError:
        raise AuditEventError(f"{name}: unknown {cls.__name__} {value!r}") from None


@dataclass(frozen=True, slots=True)
class ActiveParticipant:
    """A user, process or DICOM application taking part (PS3.15 A.5.2.2 ActiveParticipant).

    *user_id* is a staff login, a process identity or the AE title; *ae_title* marks a DICOM
    application (exported as ``AlternativeUserID="AETITLES=..."``).
    """

    user_id: str
    requestor: bool = False
    ae_title: str | None = None
    network_address: str | None = None
    role: RoleID | None = None

    def __post_init__(self) -> None:
        if self.ae_title is not None:
            _set(self, "ae_title", check_ae_title(self.ae_title))
        if isinstance(self.user_id, str) and self.user_id.strip(" ") == self.ae_title:
            _set(self, "user_id", self.ae_title)  # an AE title may contain spaces
        else:
            check_user_id(self.user_id)
        if not isinstance(self.requestor, bool):
            raise AuditEventError(f"requestor: expected true or false, got {self.requestor!r}")
        if self.network_address is not None:
            _set(self, "network_address", check_network_address(self.network_address))
        if self.role is not None:
            _enum(self, "role", RoleID)

    @classmethod
    def application(
        cls,
        ae_title: str,
        *,
        address: str | None = None,
        requestor: bool = False,
        role: RoleID | str | None = None,
    ) -> ActiveParticipant:
        """A DICOM application entity (its AE title is its user ID)."""
        return cls(ae_title, requestor, ae_title, address, role)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"user": self.user_id, "requestor": self.requestor}
        if self.ae_title is not None:
            doc["ae"] = self.ae_title
        if self.network_address is not None:
            doc["address"] = self.network_address
        if self.role is not None:
            doc["role"] = self.role.code
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ActiveParticipant:
        _keys(doc, {"user", "requestor"}, {"ae", "address", "role"}, "participant")
        return cls(
            doc["user"], doc["requestor"], doc.get("ae"), doc.get("address"), doc.get("role")
        )


@dataclass(frozen=True, slots=True)
class AuditSource:
    """The node reporting the event (PS3.15 A.5.2.3 AuditSourceIdentification)."""

    source_id: str
    site_id: str | None = None

    def __post_init__(self) -> None:
        check_object_id(self.source_id, "source_id")
        if self.site_id is not None:
            check_object_id(self.site_id, "site_id")

    def to_json(self) -> dict[str, Any]:
        doc = {"id": self.source_id}
        if self.site_id is not None:
            doc["site"] = self.site_id
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AuditSource:
        _keys(doc, {"id"}, {"site"}, "source")
        return cls(doc["id"], doc.get("site"))


@dataclass(frozen=True, slots=True)
class Instance:
    """One SOP instance (PS3.15 A.5.2.4 ParticipantObjectDescription SOPClass/Instance)."""

    sop_instance_uid: str
    sop_class_uid: str

    def __post_init__(self) -> None:
        check_uid(self.sop_instance_uid, "sop_instance_uid")
        check_uid(self.sop_class_uid, "sop_class_uid")


@dataclass(frozen=True, slots=True)
class Patient:
    """The patient, by pseudonymous ID only (ParticipantObjectTypeCodeRole 1, Patient)."""

    pseudonym: str

    def __post_init__(self) -> None:
        check_pseudonym(self.pseudonym)

    def to_json(self) -> dict[str, Any]:
        return {"type": "patient", "id": self.pseudonym}

    def index_keys(self) -> Iterator[str]:
        yield f"patient:{self.pseudonym}"


@dataclass(frozen=True, slots=True)
class Study:
    """A study with the series and SOP instances concerned (ParticipantObjectIDTypeCode 110180)."""

    study_uid: str
    series_uids: tuple[str, ...] = ()
    instances: tuple[Instance, ...] = ()

    def __post_init__(self) -> None:
        check_uid(self.study_uid, "study_uid")
        _set(self, "series_uids", tuple(check_uid(u, "series_uid") for u in self.series_uids))
        instances = tuple(self.instances)
        if not all(isinstance(i, Instance) for i in instances):
            raise AuditEventError("instances: expected Instance objects")
        _set(self, "instances", instances)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": "study", "uid": self.study_uid}
        if self.series_uids:
            doc["series"] = list(self.series_uids)
        if self.instances:
            doc["instances"] = [[i.sop_instance_uid, i.sop_class_uid] for i in self.instances]
        return doc

    def index_keys(self) -> Iterator[str]:
        yield f"study:{self.study_uid}"
        for uid in self.series_uids:
            yield f"series:{uid}"
        for inst in self.instances:
            yield f"sop:{inst.sop_instance_uid}"


QUERY_PARAMETERS = frozenset(
    {"study", "series", "sop", "patient", "ae", "user", "event", "step", "since", "until", "limit"}
)
"""Names a :class:`QueryObject` parameter may have: identifiers and times, never PHI."""


@dataclass(frozen=True, slots=True)
class QueryObject:
    """What was searched for (ParticipantObjectTypeCodeRole 24, Query; PS3.15 A.5.3.12).

    Parameters are (name, value) pairs with names from :data:`QUERY_PARAMETERS`, each value
    validated like the identifier it stands for.
    """

    target: Kind = Kind.AUDIT_LOG
    parameters: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _enum(self, "target", Kind)
        params = tuple((str(k), str(v)) for k, v in self.parameters)
        for name, value in params:
            _check_query_parameter(name, value)
        _set(self, "parameters", params)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "query",
            "target": self.target.code,
            "parameters": [list(p) for p in self.parameters],
        }

    def index_keys(self) -> Iterator[str]:
        return iter(())


def _check_query_parameter(name: str, value: str) -> None:
    checks = {
        "study": check_uid,
        "series": check_uid,
        "sop": check_uid,
        "patient": check_pseudonym,
        "ae": check_ae_title,
        "user": check_user_id,
        "event": check_object_id,
        "step": check_code,
    }
    if name not in QUERY_PARAMETERS:
        raise AuditEventError(f"query parameter {name!r} is not one of {sorted(QUERY_PARAMETERS)}")
    if name in checks:
        checks[name](value, f"query parameter {name}")
    elif name == "limit":
        if not value.isdigit():
            raise AuditEventError(f"query parameter limit: expected a number, got {value!r}")
    else:
        try:
            dt.datetime.fromisoformat(value)
        except ValueError:
            raise AuditEventError(f"query parameter {name}: expected an ISO time") from None


@dataclass(frozen=True, slots=True)
class SystemObject:
    """A system object: node, configuration key, route, signing key, audit log, job, model."""

    kind: Kind
    object_id: str

    def __post_init__(self) -> None:
        _enum(self, "kind", Kind)
        check_object_id(self.object_id)

    def to_json(self) -> dict[str, Any]:
        return {"type": "system", "kind": self.kind.code, "id": self.object_id}

    def index_keys(self) -> Iterator[str]:
        return iter(())


ParticipantObject = Patient | Study | QueryObject | SystemObject
"""Anything an event can be about (PS3.15 A.5.2.4 ParticipantObjectIdentification)."""


def _object_from_json(doc: dict[str, Any]) -> ParticipantObject:
    kind = doc.get("type")
    if kind == "patient":
        _keys(doc, {"type", "id"}, set(), "patient")
        return Patient(doc["id"])
    if kind == "study":
        _keys(doc, {"type", "uid"}, {"series", "instances"}, "study")
        return Study(
            doc["uid"],
            tuple(doc.get("series", ())),
            tuple(Instance(s, c) for s, c in doc.get("instances", ())),
        )
    if kind == "query":
        _keys(doc, {"type", "target", "parameters"}, set(), "query")
        return QueryObject(doc["target"], tuple((k, v) for k, v in doc["parameters"]))
    if kind == "system":
        _keys(doc, {"type", "kind", "id"}, set(), "system object")
        return SystemObject(doc["kind"], doc["id"])
    raise AuditEventError(f"unknown participant object type {kind!r}")


def _keys(doc: Any, required: set[str], optional: set[str], what: str) -> None:
    if not isinstance(doc, dict):
        raise AuditEventError(f"{what}: expected an object")
    missing = required - doc.keys()
    extra = doc.keys() - required - optional
    if missing or extra:
        raise AuditEventError(f"{what}: missing {sorted(missing)}, unexpected {sorted(extra)}")


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit event (PS3.15 A.5.1 AuditMessage) plus the Radiogate :class:`Step`.

    Enumerated fields accept their string forms; *time* must carry a zone (default: now, UTC).
    At least one active participant is required (PS3.15 A.5.1: ActiveParticipant 1..n).
    """

    event_id: EventID
    action: EventAction
    step: Step
    participants: tuple[ActiveParticipant, ...]
    source: AuditSource
    outcome: EventOutcome = EventOutcome.SUCCESS
    objects: tuple[ParticipantObject, ...] = ()
    time: dt.datetime = field(default_factory=_utc_now)
    event_types: tuple[EventTypeCode, ...] = ()
    reason: str | None = None
    """Machine-readable outcome code (e.g. ``out-of-resources``); never free text."""

    def __post_init__(self) -> None:
        _enum(self, "event_id", EventID)
        _enum(self, "action", EventAction)
        _enum(self, "step", Step)
        _enum(self, "outcome", EventOutcome)
        if not isinstance(self.time, dt.datetime) or self.time.utcoffset() is None:
            raise AuditEventError(f"time: expected a datetime with a time zone, got {self.time!r}")
        participants = tuple(self.participants)
        if not participants or not all(isinstance(p, ActiveParticipant) for p in participants):
            raise AuditEventError("participants: expected one or more ActiveParticipant")
        _set(self, "participants", participants)
        if not isinstance(self.source, AuditSource):
            raise AuditEventError("source: expected an AuditSource")
        objects = tuple(self.objects)
        if not all(isinstance(o, Patient | Study | QueryObject | SystemObject) for o in objects):
            raise AuditEventError(
                "objects: expected Patient, Study, QueryObject or SystemObject values"
            )
        _set(self, "objects", objects)
        try:
            _set(self, "event_types", tuple(EventTypeCode(t) for t in self.event_types))
        except ValueError:
            raise AuditEventError(f"event_types: unknown code in {self.event_types!r}") from None
        if self.reason is not None:
            check_code(self.reason, "reason")

    # -- canonical form ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "event": self.event_id.code,
            "action": self.action.value,
            "outcome": int(self.outcome),
            "step": self.step.value,
            "time": self.time.isoformat(timespec="microseconds"),
            "source": self.source.to_json(),
            "participants": [p.to_json() for p in self.participants],
        }
        if self.objects:
            doc["objects"] = [o.to_json() for o in self.objects]
        if self.event_types:
            doc["types"] = [t.code for t in self.event_types]
        if self.reason is not None:
            doc["reason"] = self.reason
        return doc

    def to_bytes(self) -> bytes:
        """Canonical bytes: JSON, sorted keys, no whitespace, UTF-8 (stored verbatim, hashed)."""
        return canonical_json(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> AuditEvent:
        """Parse canonical bytes; raise :class:`AuditEventError` if invalid or not canonical."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise AuditEventError(f"event bytes are not JSON: {exc}") from None
        _keys(
            doc,
            {"v", "event", "action", "outcome", "step", "time", "source", "participants"},
            {"objects", "types", "reason"},
            "event",
        )
        if doc["v"] != FORMAT_VERSION:
            raise AuditEventError(f"event format version {doc['v']!r} is not supported")
        try:
            time = dt.datetime.fromisoformat(doc["time"])
        except (TypeError, ValueError):
            raise AuditEventError(f"time: not an ISO time: {doc['time']!r}") from None
        event = cls(
            event_id=doc["event"],
            action=doc["action"],
            step=doc["step"],
            participants=tuple(ActiveParticipant.from_json(p) for p in doc["participants"]),
            source=AuditSource.from_json(doc["source"]),
            outcome=doc["outcome"],
            objects=tuple(_object_from_json(o) for o in doc.get("objects", ())),
            time=time,
            event_types=tuple(doc.get("types", ())),
            reason=doc.get("reason"),
        )
        if event.to_bytes() != bytes(data):
            raise AuditEventError("event bytes are not in canonical form")
        return event

    def index_keys(self) -> list[str]:
        """Search keys (``study:``, ``series:``, ``sop:``, ``patient:``, ``ae:``, ``user:``)."""
        keys: dict[str, None] = {}
        for p in self.participants:
            keys[f"user:{p.user_id}"] = None
            if p.ae_title is not None:
                keys[f"ae:{p.ae_title}"] = None
        for obj in self.objects:
            for key in obj.index_keys():
                keys[key] = None
        return list(keys)


def canonical_json(doc: Any) -> bytes:
    """JSON with sorted keys and no whitespace, UTF-8 encoded."""
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")

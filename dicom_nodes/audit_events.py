"""The audit events Radiogate's receiver and pipeline record (DICOM PS3.15 A.5 vocabulary).

One builder per state transition or security-relevant occurrence; events carry UIDs, AE
titles, addresses and codes only, never patient data. High-rate events (one per instance) are
queued with :func:`audit.enqueue` in the transaction of the state change they describe and
chained by the sealer; rare ones (security alerts) are written by :class:`AuditWriter` in
their own short transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

import audit
from audit import (
    ActiveParticipant,
    AuditEvent,
    AuditSource,
    EventAction,
    EventID,
    EventOutcome,
    RoleID,
    Step,
    Study,
)

__all__ = [
    "AuditWriter",
    "association_event",
    "instance_received",
    "pipeline_event",
]

LOGGER = logging.getLogger(__name__)


def _app(
    ae: str, address: str | None = None, *, requestor: bool, role: RoleID
) -> ActiveParticipant:
    return ActiveParticipant.application(ae, address=address, requestor=requestor, role=role)


def instance_received(
    *,
    node: str,
    calling_ae: str,
    called_ae: str,
    peer_address: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    sop_class_uid: str,
    reason: str | None = None,
) -> AuditEvent:
    """110104 DICOM Instances Transferred, action Create, step ``received`` (PS3.15 A.5.3.4)."""
    return AuditEvent(
        event_id=EventID.INSTANCES_TRANSFERRED,
        action=EventAction.CREATE,
        step=Step.RECEIVED,
        participants=(
            _app(calling_ae or "UNKNOWN", peer_address, requestor=True, role=RoleID.SOURCE),
            _app(called_ae or "RADIOGATE", requestor=False, role=RoleID.DESTINATION),
        ),
        source=AuditSource(node),
        objects=(Study(study_uid, (series_uid,), (audit.Instance(sop_uid, sop_class_uid),)),),
        reason=reason,
    )


def association_event(
    *,
    node: str,
    accepted: bool,
    calling_ae: str,
    called_ae: str,
    peer_address: str,
    reason: str | None = None,
) -> AuditEvent:
    """Accepted: 110114 User Authentication (node authentication, success). Refused (unknown
    AE, network not allowed, TLS failure, limit): 110113 Security Alert (PS3.15 A.5.3.11/14)."""
    participants = (
        _app(calling_ae or "UNKNOWN", peer_address, requestor=True, role=RoleID.SOURCE),
        _app(called_ae or "RADIOGATE", requestor=False, role=RoleID.DESTINATION),
    )
    if accepted:
        return AuditEvent(
            event_id=EventID.USER_AUTHENTICATION,
            action=EventAction.EXECUTE,
            step=Step.ASSOCIATION_ACCEPTED,
            participants=participants,
            source=AuditSource(node),
            event_types=(audit.EventTypeCode.NODE_AUTHENTICATION,),
        )
    return AuditEvent(
        event_id=EventID.SECURITY_ALERT,
        action=EventAction.EXECUTE,
        step=Step.ASSOCIATION_REJECTED,
        participants=participants,
        source=AuditSource(node),
        outcome=EventOutcome.MINOR_FAILURE,
        event_types=(audit.EventTypeCode.NODE_AUTHENTICATION,),
        reason=reason,
    )


_PIPELINE_STEPS: dict[str, tuple[EventID, EventAction, Step]] = {
    "routed": (EventID.APPLICATION_ACTIVITY, EventAction.EXECUTE, Step.ROUTED),
    "forwarded": (EventID.INSTANCES_TRANSFERRED, EventAction.READ, Step.FORWARDED),
    "confirmed": (EventID.INSTANCES_TRANSFERRED, EventAction.READ, Step.CONFIRMED),
    "released": (EventID.APPLICATION_ACTIVITY, EventAction.DELETE, Step.RELEASED),
    "forward-failed": (EventID.INSTANCES_TRANSFERRED, EventAction.READ, Step.FORWARD_ABANDONED),
    "study-complete": (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE, Step.STUDY_COMPLETED),
    "de-identified": (EventID.APPLICATION_ACTIVITY, EventAction.CREATE, Step.DEIDENTIFIED),
    "quarantined": (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE, Step.QUARANTINED),
    "quarantine-released": (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE, Step.QUARANTINED),
}


def pipeline_event(
    node: str,
    local_ae: str,
    step: str,
    details: Mapping[str, Any],
    *,
    user: str | None = None,
) -> AuditEvent:
    """An event of the worker's pipeline; *details* holds UIDs, destination and codes;
    *user* is the staff member who caused it (admin commands)."""
    event_id, action, kind = _PIPELINE_STEPS[step]
    participants = [_app(local_ae, requestor=user is None, role=RoleID.SOURCE)]
    if user is not None:
        participants.insert(0, ActiveParticipant(user, requestor=True))
    destination = details.get("destination")
    if destination:
        participants.append(
            ActiveParticipant(str(destination), requestor=False, role=RoleID.DESTINATION)
        )
    objects: tuple[Any, ...] = ()
    study = details.get("study_instance_uid")
    if study:
        sop = details.get("sop_instance_uid")
        instances = (
            (audit.Instance(str(sop), str(details["sop_class_uid"])),)
            if sop and details.get("sop_class_uid")
            else ()
        )
        objects = (Study(str(study), (), instances),)
    failed = step == "forward-failed"
    reason = details.get("reason") or (
        f"status-{int(details['status']):04x}"
        if failed and details.get("status") is not None
        else None
    )
    return AuditEvent(
        event_id=event_id,
        action=action,
        step=kind,
        participants=tuple(participants),
        source=AuditSource(node),
        objects=objects,
        outcome=EventOutcome.SERIOUS_FAILURE if failed else EventOutcome.SUCCESS,
        reason=reason,
    )


class AuditWriter:
    """Writes rare events (security alerts) in their own short transaction; never raises."""

    def __init__(self, pool: ConnectionPool, node: str, timeout: float = 2.0) -> None:
        self.pool = pool
        self.node = node
        self.timeout = timeout

    def write(self, event: AuditEvent) -> bool:
        try:
            with self.pool.connection(timeout=self.timeout) as conn:
                audit.enqueue(conn, event)
        except Exception as exc:
            LOGGER.warning("audit event %s not recorded: %s", event.step.value, type(exc).__name__)
            return False
        return True

    def enqueue(self, conn: psycopg.Connection[Any], event: AuditEvent) -> None:
        audit.enqueue(conn, event)

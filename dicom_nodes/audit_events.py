"""The audit events Radiogate's receiver and pipeline record (DICOM PS3.15 A.5 vocabulary).

One builder per state transition or security-relevant occurrence; events carry UIDs, AE
titles, addresses and codes only, never patient data. High-rate events (one per instance) are
queued with :func:`audit.enqueue` in the transaction of the state change they describe and
chained by the sealer; rare ones (security alerts) are written by :class:`AuditWriter` in
their own short transaction.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
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
    Patient,
    RoleID,
    Step,
    Study,
    SystemObject,
    SystemObjectKind,
)
from dicom_nodes.state.repository import AuditEntry, AuditSink

__all__ = [
    "PIPELINE_STEPS",
    "AuditWriter",
    "association_event",
    "instance_received",
    "instance_refused",
    "pipeline_event",
    "pipeline_sink",
    "study_reopened",
]

LOGGER = logging.getLogger(__name__)


@functools.lru_cache(maxsize=256)
def _app(
    ae: str, address: str | None = None, *, requestor: bool, role: RoleID
) -> ActiveParticipant:
    """An application participant; immutable, so each one is built (and validated) once: the
    pipeline names the same few in every event."""
    return ActiveParticipant.application(ae, address=address, requestor=requestor, role=role)


@functools.lru_cache(maxsize=256)
def _destination(name: str) -> ActiveParticipant:
    """The destination a pipeline step sent to (built once per destination, like :func:`_app`)."""
    return ActiveParticipant(name, requestor=False, role=RoleID.DESTINATION)


@functools.lru_cache(maxsize=256)
def _peers(
    calling_ae: str, called_ae: str, peer_address: str
) -> tuple[ActiveParticipant, ActiveParticipant]:
    """The two ends of an association: the calling peer (requestor, source) at its address and
    Radiogate's called AE title (destination). Participants are immutable and every instance of
    an association names the same two, so they are built (and validated) once per peer."""
    return (
        _app(calling_ae or "UNKNOWN", peer_address, requestor=True, role=RoleID.SOURCE),
        _app(called_ae or "RADIOGATE", requestor=False, role=RoleID.DESTINATION),
    )


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
    patient: str | None = None,
) -> AuditEvent:
    """110104 DICOM Instances Transferred, action Create, step ``received`` (PS3.15 A.5.3.4);
    the patient by pseudonym (PS3.15 A.5.3.4: Patient participant object) when known."""
    study = Study(study_uid, (series_uid,), (audit.Instance(sop_uid, sop_class_uid),))
    return AuditEvent(
        event_id=EventID.INSTANCES_TRANSFERRED,
        action=EventAction.CREATE,
        step=Step.RECEIVED,
        participants=_peers(calling_ae, called_ae, peer_address),
        source=AuditSource(node),
        objects=(study,) if patient is None else (Patient(patient), study),
        reason=reason,
    )


def instance_refused(
    *,
    node: str,
    calling_ae: str,
    called_ae: str,
    peer_address: str,
    reason: str,
    uids: tuple[str, str, str, str] | None = None,
) -> AuditEvent:
    """110104 DICOM Instances Transferred, action Create, outcome Minor Failure, step
    ``refused`` (PS3.15 A.5.3.4): a C-STORE answered with an error status because the data set
    cannot be understood. *uids* (study, series, SOP instance, SOP class) when they were read."""
    objects: tuple[Study, ...] = ()
    if uids is not None:
        study, series, sop, sop_class = uids
        objects = (Study(study, (series,), (audit.Instance(sop, sop_class),)),)
    return AuditEvent(
        event_id=EventID.INSTANCES_TRANSFERRED,
        action=EventAction.CREATE,
        step=Step.REFUSED,
        participants=_peers(calling_ae, called_ae, peer_address),
        source=AuditSource(node),
        objects=objects,
        outcome=EventOutcome.MINOR_FAILURE,
        reason=reason,
    )


def association_aborted(
    *, node: str, calling_ae: str, called_ae: str, peer_address: str, reason: str
) -> AuditEvent:
    """110113 Security Alert (PS3.15 A.5.3.11): Radiogate aborted an established association
    because its peer broke the protocol (*reason*, e.g. ``data-without-command``)."""
    return AuditEvent(
        event_id=EventID.SECURITY_ALERT,
        action=EventAction.EXECUTE,
        step=Step.ASSOCIATION_ABORTED,
        participants=_peers(calling_ae, called_ae, peer_address),
        source=AuditSource(node),
        outcome=EventOutcome.MINOR_FAILURE,
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
    participants = _peers(calling_ae, called_ae, peer_address)
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


_PIPELINE_STEPS: dict[Step, tuple[EventID, EventAction]] = {
    Step.ROUTED: (EventID.APPLICATION_ACTIVITY, EventAction.EXECUTE),
    Step.UNROUTABLE: (EventID.APPLICATION_ACTIVITY, EventAction.EXECUTE),
    Step.REROUTED: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
    Step.DEIDENTIFIED: (EventID.APPLICATION_ACTIVITY, EventAction.CREATE),
    Step.QUARANTINED: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
    Step.QUARANTINE_RELEASED: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
    Step.FORWARDED: (EventID.INSTANCES_TRANSFERRED, EventAction.READ),
    Step.FORWARD_RETRY: (EventID.INSTANCES_TRANSFERRED, EventAction.READ),
    Step.FORWARD_ABANDONED: (EventID.INSTANCES_TRANSFERRED, EventAction.READ),
    Step.CONFIRMED: (EventID.INSTANCES_TRANSFERRED, EventAction.READ),
    Step.NOT_CONFIRMED: (EventID.INSTANCES_TRANSFERRED, EventAction.READ),
    Step.CANCELLED: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
    Step.RETRIED: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
    Step.HELD: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
    Step.RESUMED: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
    Step.RELEASED: (EventID.APPLICATION_ACTIVITY, EventAction.DELETE),
    Step.FILE_MISSING: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
    Step.PURGED: (EventID.APPLICATION_ACTIVITY, EventAction.DELETE),
    Step.STUDY_COMPLETED: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
    Step.SERIES_COMPLETED: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
    Step.SERIES_REOPENED: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
    Step.TRIAGED: (EventID.APPLICATION_ACTIVITY, EventAction.EXECUTE),
    Step.TRIAGE_REOPENED: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
    Step.RESULTS_STORED: (EventID.APPLICATION_ACTIVITY, EventAction.CREATE),
    Step.ANALYSIS_REQUESTED: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
    Step.ANALYSIS_STARTED: (EventID.APPLICATION_ACTIVITY, EventAction.EXECUTE),
    Step.ANALYSED: (EventID.APPLICATION_ACTIVITY, EventAction.CREATE),
    Step.ANALYSIS_FAILED: (EventID.APPLICATION_ACTIVITY, EventAction.EXECUTE),
    Step.ALERT_RAISED: (EventID.APPLICATION_ACTIVITY, EventAction.CREATE),
    Step.ALERT_DELIVERED: (EventID.APPLICATION_ACTIVITY, EventAction.EXECUTE),
    Step.ALERT_DELIVERY_FAILED: (EventID.APPLICATION_ACTIVITY, EventAction.EXECUTE),
    Step.ALERT_ESCALATED: (EventID.APPLICATION_ACTIVITY, EventAction.EXECUTE),
    Step.ALERT_ACKNOWLEDGED: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
    Step.STUDY_REOPENED: (EventID.APPLICATION_ACTIVITY, EventAction.UPDATE),
}
"""The DICOM event (PS3.15 A.5.3) each pipeline step is recorded as."""

PIPELINE_STEPS: frozenset[Step] = frozenset(_PIPELINE_STEPS)


def pipeline_event(node: str, local_ae: str, entry: AuditEntry) -> AuditEvent:
    """The audit event of one pipeline step; *entry* holds its UIDs, destination, codes and the
    staff member who caused it (admin commands)."""
    event_id, action = _PIPELINE_STEPS[entry.step]
    details, user = entry.details, entry.user
    participants = [_app(local_ae, requestor=user is None, role=RoleID.SOURCE)]
    if user is not None:
        participants.insert(0, ActiveParticipant(user, requestor=True))
    destination = details.get("destination")
    if destination:
        participants.append(_destination(str(destination)))
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
    patient = details.get("patient")
    if patient:
        objects = (Patient(str(patient)), *objects)
    reason = details.get("reason") or (
        f"status-{int(details['status']):04x}"
        if entry.outcome is not EventOutcome.SUCCESS and details.get("status") is not None
        else None
    )
    return AuditEvent(
        event_id=event_id,
        action=action,
        step=entry.step,
        participants=tuple(participants),
        source=AuditSource(node),
        objects=objects,
        outcome=entry.outcome,
        reason=reason,
    )


def pipeline_sink(node: str, local_ae: str) -> AuditSink:
    """The pipeline's audit sink: its events queued in the transaction of the state change
    they record (chained by the sealer)."""

    def sink(conn: psycopg.Connection[Any], entries: Sequence[AuditEntry]) -> None:
        if entries:
            audit.enqueue_many(conn, [pipeline_event(node, local_ae, e) for e in entries])

    return sink


def study_reopened(node: str, local_ae: str, study_uid: str) -> AuditEvent:
    """A late instance re-opened a complete study (the ``late-arrival`` transition)."""
    details = {"study_instance_uid": study_uid, "reason": "late-arrival"}
    return pipeline_event(node, local_ae, AuditEntry(Step.STUDY_REOPENED, details))


def application_event(
    node: str,
    service: str,
    *,
    started: bool,
    config_hash: str,
    user: str | None = None,
    outcome: EventOutcome = EventOutcome.SUCCESS,
    reason: str | None = None,
) -> AuditEvent:
    """110100 Application Activity, Application Start / Stop (PS3.15 A.5.3.1): a Radiogate
    service (``scp``, ``worker``, ``sealer``, ``stack``, ``orthanc``) started or stopped, naming
    the hash of the effective configuration it ran with. ``radiogate run`` records a child that
    died as a Stop with outcome Serious Failure and reason ``exited-unexpectedly``, and the
    restart of its Orthanc with reason ``restart``."""
    participants = [ActiveParticipant(f"radiogate-{service}", requestor=user is None,
                                      role=RoleID.APPLICATION)]  # fmt: skip
    if user is not None:
        participants.insert(0, ActiveParticipant(user, requestor=True))
    return AuditEvent(
        event_id=EventID.APPLICATION_ACTIVITY,
        action=EventAction.EXECUTE,
        step=Step.APPLICATION_STARTED if started else Step.APPLICATION_STOPPED,
        participants=tuple(participants),
        source=AuditSource(node),
        objects=(SystemObject(SystemObjectKind.CONFIGURATION, config_hash),),
        event_types=(
            audit.EventTypeCode.APPLICATION_START
            if started
            else audit.EventTypeCode.APPLICATION_STOP,
        ),
        outcome=outcome,
        reason=reason,
    )


def config_changed(node: str, service: str, previous: str | None, current: str) -> AuditEvent:
    """110113 Security Alert, Software Configuration (PS3.15 A.5.3.11): a service started with
    an effective configuration other than the one it last ran with (both hashes named)."""
    objects = [SystemObject(SystemObjectKind.CONFIGURATION, current)]
    if previous:
        objects.append(SystemObject(SystemObjectKind.CONFIGURATION, previous))
    return AuditEvent(
        event_id=EventID.SECURITY_ALERT,
        action=EventAction.EXECUTE,
        step=Step.CONFIG_CHANGED,
        participants=(
            ActiveParticipant(f"radiogate-{service}", requestor=True, role=RoleID.APPLICATION),
        ),
        source=AuditSource(node),
        objects=tuple(objects),
        event_types=(audit.EventTypeCode.SOFTWARE_CONFIGURATION,),
        reason="first-start" if previous is None else "configuration-changed",
    )


def key_rotated(node: str, user: str, old_key: str, new_key: str) -> AuditEvent:
    """110113 Security Alert, Security Configuration (PS3.15 A.5.3.11): the audit signing key
    was replaced (the retired and the new key ID are named)."""
    return AuditEvent(
        event_id=EventID.SECURITY_ALERT,
        action=EventAction.EXECUTE,
        step=Step.KEY_ROTATED,
        participants=(ActiveParticipant(user, requestor=True),),
        source=AuditSource(node),
        objects=(
            SystemObject(SystemObjectKind.SIGNING_KEY, old_key),
            SystemObject(SystemObjectKind.SIGNING_KEY, new_key),
        ),
        event_types=(audit.EventTypeCode.SECURITY_CONFIGURATION,),
    )


def audit_verified(node: str, user: str, damage: str | None) -> AuditEvent:
    """110101 Audit Log Used (PS3.15 A.5.3.2): the trail was verified; the outcome says
    whether it was intact, the reason names the first damage found."""
    return AuditEvent(
        event_id=EventID.AUDIT_LOG_USED,
        action=EventAction.READ,
        step=Step.AUDIT_VERIFIED,
        participants=(ActiveParticipant(user, requestor=True),),
        source=AuditSource(node),
        objects=(SystemObject(SystemObjectKind.AUDIT_LOG, "audit_event"),),
        outcome=EventOutcome.SUCCESS if damage is None else EventOutcome.SERIOUS_FAILURE,
        reason=damage,
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

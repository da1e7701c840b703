"""The audit events of the archive's users (DICOM PS3.15 A.5.3; imports only :mod:`audit`).

=====================  =========================================================  ==========
event                  when                                                       outcome
=====================  =========================================================  ==========
110103 Accessed (R)    a study read through REST, WADO-URI, DICOMweb or findings  0 success
110113 Security Alert  a refused request (no role, write not allowed, role        4 minor
 + 110132 Restricted   missing for a route)                                        failure
110112 Query           an audit search (:func:`audit.audited_search`)             0
110101 Audit Log Used  an audit verification from the viewer side                 0 / 8
alert-acknowledged     an alert acknowledged from the viewer side                 0
=====================  =========================================================  ==========

The requesting user (login name, network address) is the requestor; the archive (its AE
title) is the application the data was read from; the API is the event's ``reason``.
"""

from __future__ import annotations

import datetime as dt

from audit import (
    ActiveParticipant,
    AuditEvent,
    AuditSource,
    EventAction,
    EventID,
    EventOutcome,
    EventTypeCode,
    RoleID,
    Step,
    Study,
    SystemObject,
    SystemObjectKind,
)

__all__ = ["accessed", "ack_event", "refused", "verified"]


def _user(user: str, address: str | None) -> ActiveParticipant:
    return ActiveParticipant(user, requestor=True, network_address=address or None)


def _archive(ae_title: str) -> ActiveParticipant:
    return ActiveParticipant.application(ae_title, role=RoleID.SOURCE)


def accessed(
    node: str,
    archive_ae: str,
    user: str,
    address: str | None,
    *,
    study_uids: tuple[str, ...],
    api: str,
    time: dt.datetime,
) -> AuditEvent:
    """110103 DICOM Instances Accessed, Read (PS3.15 A.5.3.2): *user* read *study_uids*."""
    return AuditEvent(
        event_id=EventID.INSTANCES_ACCESSED,
        action=EventAction.READ,
        step=Step.ACCESSED,
        participants=(_user(user, address), _archive(archive_ae)),
        source=AuditSource(node),
        objects=tuple(Study(uid) for uid in study_uids),
        time=time,
        reason=api if study_uids else f"{api}-resource-gone",
    )


def refused(
    node: str,
    archive_ae: str,
    user: str,
    address: str | None,
    *,
    reason: str,
    study_uid: str | None,
    time: dt.datetime,
) -> AuditEvent:
    """110113 Security Alert, Use of Restricted Function (PS3.15 A.5.3.11): a refused request."""
    return AuditEvent(
        event_id=EventID.SECURITY_ALERT,
        action=EventAction.EXECUTE,
        step=Step.ACCESSED,
        participants=(_user(user, address), _archive(archive_ae)),
        source=AuditSource(node),
        objects=(Study(study_uid),) if study_uid else (),
        outcome=EventOutcome.MINOR_FAILURE,
        event_types=(EventTypeCode.USE_OF_RESTRICTED_FUNCTION,),
        time=time,
        reason=reason,
    )


def verified(node: str, user: str, address: str | None, damage: str | None) -> AuditEvent:
    """110101 Audit Log Used (PS3.15 A.5.3.2): the trail was verified from the viewer side."""
    return AuditEvent(
        event_id=EventID.AUDIT_LOG_USED,
        action=EventAction.READ,
        step=Step.AUDIT_VERIFIED,
        participants=(_user(user, address),),
        source=AuditSource(node),
        objects=(SystemObject(SystemObjectKind.AUDIT_LOG, "audit_event"),),
        outcome=EventOutcome.SUCCESS if damage is None else EventOutcome.SERIOUS_FAILURE,
        reason=damage,
    )


def ack_event(
    node: str, archive_ae: str, user: str, address: str | None, study_uid: str
) -> AuditEvent:
    """An alert acknowledged by *user* from the viewer side (Application Activity, Update: the
    event ``radiogate alert ack`` records)."""
    return AuditEvent(
        event_id=EventID.APPLICATION_ACTIVITY,
        action=EventAction.UPDATE,
        step=Step.ALERT_ACKNOWLEDGED,
        participants=(_user(user, address), _archive(archive_ae)),
        source=AuditSource(node),
        objects=(Study(study_uid),),
        reason="acknowledged",
    )

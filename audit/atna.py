"""DICOM PS3.15 A.5 audit messages (XML) from audit events, for IHE ATNA repositories.

The XML follows the RELAX NG schema of PS3.15 A.5.1 (``audit/schema/audit_schema_2023b.rng``):
EventIdentification (EventID, EventTypeCode: the CID 401 codes and the Radiogate step as a
``99RADIOGATE`` code), ActiveParticipant (UserID, ``AETITLES=`` AlternativeUserID for DICOM
applications, RoleIDCode, NetworkAccessPoint), AuditSourceIdentification (type 4, application
server process) and ParticipantObjectIdentification: the patient by pseudonymous ID only
(A.5.2.4: role 1), studies (ID type 110180) with their SOP classes and instances and the series
UIDs as ``SeriesInstanceUID`` details, queries (role 24, base64 query parameters) and system
objects. Messages are sent as RFC 5424 syslog with MSGID ``IHE+RFC-3881`` (ITI-20).
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections import defaultdict

from audit.codes import DCM, RADIOGATE_CODES
from audit.codes import SystemObjectKind as Kind
from audit.event import (
    ActiveParticipant,
    AuditEvent,
    ParticipantObject,
    Patient,
    QueryObject,
    Study,
    SystemObject,
    canonical_json,
)
from audit.identifiers import is_ip_address
from audit.syslog import format_rfc5424

__all__ = ["ATNA_MSGID", "to_atna_syslog", "to_atna_xml"]

ATNA_MSGID = "IHE+RFC-3881"


def _code(parent: ET.Element, tag: str, code: str, scheme: str, meaning: str) -> ET.Element:
    return ET.SubElement(
        parent, tag, {"csd-code": code, "codeSystemName": scheme, "originalText": meaning}
    )


def _participant(root: ET.Element, p: ActiveParticipant) -> None:
    attrs = {"UserID": p.user_id, "UserIsRequestor": "true" if p.requestor else "false"}
    if p.ae_title is not None:
        attrs["AlternativeUserID"] = f"AETITLES={p.ae_title}"
    if p.network_address is not None:
        attrs["NetworkAccessPointID"] = p.network_address
        attrs["NetworkAccessPointTypeCode"] = "2" if is_ip_address(p.network_address) else "1"
    elem = ET.SubElement(root, "ActiveParticipant", attrs)
    if p.role is not None:
        _code(elem, "RoleIDCode", p.role.code, DCM, p.role.meaning)


def _object(root: ET.Element, obj: ParticipantObject) -> None:
    if isinstance(obj, Patient):
        elem = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": obj.pseudonym,
                "ParticipantObjectTypeCode": "1",
                "ParticipantObjectTypeCodeRole": "1",
            },
        )
        _code(elem, "ParticipantObjectIDTypeCode", "2", "RFC-3881", "Patient Number")
        ET.SubElement(elem, "ParticipantObjectName").text = obj.pseudonym
    elif isinstance(obj, Study):
        elem = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": obj.study_uid,
                "ParticipantObjectTypeCode": "2",
                "ParticipantObjectTypeCodeRole": "3",
            },
        )
        _code(elem, "ParticipantObjectIDTypeCode", "110180", DCM, "Study Instance UID")
        ET.SubElement(elem, "ParticipantObjectName").text = obj.study_uid
        for uid in obj.series_uids:
            ET.SubElement(
                elem,
                "ParticipantObjectDetail",
                {"type": "SeriesInstanceUID", "value": base64.b64encode(uid.encode()).decode()},
            )
        by_class: dict[str, list[str]] = defaultdict(list)
        for inst in obj.instances:
            by_class[inst.sop_class_uid].append(inst.sop_instance_uid)
        desc = ET.SubElement(elem, "ParticipantObjectDescription")
        for class_uid, uids in by_class.items():
            sop = ET.SubElement(
                desc, "SOPClass", {"UID": class_uid, "NumberOfInstances": str(len(uids))}
            )
            for uid in uids:
                ET.SubElement(sop, "Instance", {"UID": uid})
        study_ids = ET.SubElement(desc, "ParticipantObjectContainsStudy")
        ET.SubElement(study_ids, "StudyIDs", {"UID": obj.study_uid})
    elif isinstance(obj, QueryObject):
        elem = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": obj.target.code,
                "ParticipantObjectTypeCode": "2",
                "ParticipantObjectTypeCodeRole": "24",
            },
        )
        _code(
            elem,
            "ParticipantObjectIDTypeCode",
            obj.target.code,
            obj.target.scheme,
            obj.target.meaning,
        )
        query = canonical_json([list(p) for p in obj.parameters])
        ET.SubElement(elem, "ParticipantObjectQuery").text = base64.b64encode(query).decode()
    elif isinstance(obj, SystemObject):
        elem = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": obj.object_id,
                "ParticipantObjectTypeCode": "2",
                "ParticipantObjectTypeCodeRole": "4",
            },
        )
        _code(elem, "ParticipantObjectIDTypeCode", obj.kind.code, obj.kind.scheme, obj.kind.meaning)
        ET.SubElement(elem, "ParticipantObjectName").text = obj.object_id


def to_atna_xml(event: AuditEvent, seq: int | None = None) -> bytes:
    """One PS3.15 A.5.1 AuditMessage (UTF-8, no declaration, one line)."""
    root = ET.Element("AuditMessage")
    ident_attrs = {
        "EventActionCode": event.action.value,
        "EventDateTime": event.time.isoformat(timespec="microseconds"),
        "EventOutcomeIndicator": str(int(event.outcome)),
    }
    ident = ET.SubElement(root, "EventIdentification", ident_attrs)
    _code(ident, "EventID", event.event_id.code, DCM, event.event_id.meaning)
    for t in event.event_types:
        _code(ident, "EventTypeCode", t.code, DCM, t.meaning)
    _code(ident, "EventTypeCode", event.step.value, RADIOGATE_CODES, event.step.value)
    if event.reason is not None:
        ET.SubElement(ident, "EventOutcomeDescription").text = event.reason
    for p in event.participants:
        _participant(root, p)
    src_attrs = {"AuditSourceID": event.source.source_id}
    if event.source.site_id is not None:
        src_attrs["AuditEnterpriseSiteID"] = event.source.site_id
    src = ET.SubElement(root, "AuditSourceIdentification", src_attrs)
    ET.SubElement(src, "AuditSourceTypeCode", {"csd-code": "4"})
    for obj in event.objects:
        _object(root, obj)
    if seq is not None:
        audit_log = SystemObject(Kind.AUDIT_LOG, f"radiogate-audit:{seq}")
        _object(root, audit_log)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=False))


def to_atna_syslog(event: AuditEvent, app_name: str = "radiogate", seq: int | None = None) -> bytes:
    """The AuditMessage as an RFC 5424 syslog frame (ITI-20)."""
    return format_rfc5424(
        to_atna_xml(event, seq), app_name=app_name, msgid=ATNA_MSGID, timestamp=event.time
    )

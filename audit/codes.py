"""Coded vocabulary of audit events: DICOM PS3.15 A.5 (IHE ATNA) and Radiogate's own steps.

Every enumeration accepts its value, its member name or (for coded terms) its meaning, in any
case, so ``EventID("110104")``, ``EventID("instances_transferred")`` and
``EventID("DICOM Instances Transferred")`` are the same member.

Sources: PS3.15 A.5.1 (message structure), PS3.16 CID 400 (Audit Event ID), CID 401 (Audit
Event Type Code), CID 402 (Audit Active Participant Role ID Code), CID 404 (Audit Participant
Object ID Type Code); codes with ``codeSystemName="DCM"``.
"""

from __future__ import annotations

from enum import Enum, IntEnum, StrEnum
from typing import Any

__all__ = [
    "DCM",
    "RADIOGATE_CODES",
    "EventAction",
    "EventID",
    "EventOutcome",
    "EventTypeCode",
    "RoleID",
    "Step",
    "SystemObjectKind",
]

DCM = "DCM"
"""Coding scheme designator of DICOM's own codes (PS3.16 Section 8)."""
RADIOGATE_CODES = "99RADIOGATE"
"""Private coding scheme designator (PS3.16 8.2: ``99`` prefix) of Radiogate's codes."""


def _norm(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


class _Coded(Enum):
    """A coded term: each value is ``(code, code meaning)``."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            key = _norm(value)
            for member in cls:
                if value == member.code or key in (_norm(member.name), _norm(member.meaning)):
                    return member
        return None

    @property
    def code(self) -> str:
        """Code value (e.g. ``110104``)."""
        return str(self.value[0])

    @property
    def meaning(self) -> str:
        """Code meaning (e.g. ``DICOM Instances Transferred``)."""
        return str(self.value[1])


class EventID(_Coded):
    """Audit Event ID (PS3.16 CID 400; PS3.15 A.5.3 defines one message per code)."""

    APPLICATION_ACTIVITY = ("110100", "Application Activity")
    AUDIT_LOG_USED = ("110101", "Audit Log Used")
    BEGIN_TRANSFERRING = ("110102", "Begin Transferring DICOM Instances")
    INSTANCES_ACCESSED = ("110103", "DICOM Instances Accessed")
    INSTANCES_TRANSFERRED = ("110104", "DICOM Instances Transferred")
    STUDY_DELETED = ("110105", "DICOM Study Deleted")
    EXPORT = ("110106", "Export")
    IMPORT = ("110107", "Import")
    NETWORK_ENTRY = ("110108", "Network Entry")
    ORDER_RECORD = ("110109", "Order Record")
    PATIENT_RECORD = ("110110", "Patient Record")
    PROCEDURE_RECORD = ("110111", "Procedure Record")
    QUERY = ("110112", "Query")
    SECURITY_ALERT = ("110113", "Security Alert")
    USER_AUTHENTICATION = ("110114", "User Authentication")


class EventTypeCode(_Coded):
    """Audit Event Type Code (PS3.16 CID 401), refining an :class:`EventID`."""

    APPLICATION_START = ("110120", "Application Start")
    APPLICATION_STOP = ("110121", "Application Stop")
    LOGIN = ("110122", "Login")
    LOGOUT = ("110123", "Logout")
    NODE_AUTHENTICATION = ("110126", "Node Authentication")
    NETWORK_CONFIGURATION = ("110128", "Network Configuration")
    SECURITY_CONFIGURATION = ("110129", "Security Configuration")
    SOFTWARE_CONFIGURATION = ("110131", "Software Configuration")
    USE_OF_RESTRICTED_FUNCTION = ("110132", "Use of Restricted Function")
    AUDIT_RECORDING_STOPPED = ("110133", "Audit Recording Stopped")
    AUDIT_RECORDING_STARTED = ("110134", "Audit Recording Started")
    OBJECT_SECURITY_ATTRIBUTES_CHANGED = ("110135", "Object Security Attributes Changed")


class RoleID(_Coded):
    """Audit Active Participant Role ID Code (PS3.16 CID 402)."""

    APPLICATION = ("110150", "Application")
    APPLICATION_LAUNCHER = ("110151", "Application Launcher")
    DESTINATION = ("110152", "Destination Role ID")
    SOURCE = ("110153", "Source Role ID")
    DESTINATION_MEDIA = ("110154", "Destination Media")
    SOURCE_MEDIA = ("110155", "Source Media")


class EventAction(StrEnum):
    """EventActionCode (PS3.15 A.5.1, RFC 3881 5.1.2)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            key = value.strip().upper()
            for member in cls:
                if key in (member.value, member.name):
                    return member
        return None


class EventOutcome(IntEnum):
    """EventOutcomeIndicator (PS3.15 A.5.1, RFC 3881 5.1.4)."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            key = value.strip().upper().replace("-", "_").replace(" ", "_")
            for member in cls:
                if key in (str(member.value), member.name):
                    return member
        return None


class Step(StrEnum):
    """Radiogate's pipeline step an event records (exported as a ``99RADIOGATE`` event type).

    Each state transition of a study or instance has exactly one event (ARCHITECTURE.md).
    """

    RECEIVED = "received"
    REFUSED = "refused"
    ROUTED = "routed"
    UNROUTABLE = "unroutable"
    REROUTED = "rerouted"
    STUDY_COMPLETED = "study-completed"
    STUDY_REOPENED = "study-reopened"
    TRIAGED = "triaged"
    TRIAGE_REOPENED = "triage-reopened"
    SERIES_COMPLETED = "series-completed"
    SERIES_REOPENED = "series-reopened"
    DEIDENTIFIED = "de-identified"
    QUARANTINED = "quarantined"
    QUARANTINE_RELEASED = "quarantine-released"
    FORWARDED = "forwarded"
    FORWARD_RETRY = "forward-retry"
    FORWARD_ABANDONED = "forward-abandoned"
    CONFIRMED = "confirmed"
    NOT_CONFIRMED = "not-confirmed"
    CANCELLED = "cancelled"
    RETRIED = "retried"
    HELD = "held"
    RESUMED = "resumed"
    RELEASED = "released"
    FILE_MISSING = "file-missing"
    PURGED = "purged"
    ALERT_RAISED = "alert-raised"
    ALERT_DELIVERED = "alert-delivered"
    ALERT_DELIVERY_FAILED = "alert-delivery-failed"
    ALERT_ESCALATED = "alert-escalated"
    ALERT_ACKNOWLEDGED = "alert-acknowledged"
    ANALYSIS_REQUESTED = "analysis-requested"
    ANALYSIS_STARTED = "analysis-started"
    ANALYSED = "analysed"
    ANALYSIS_FAILED = "analysis-failed"
    RESULTS_STORED = "results-stored"
    ACCESSED = "accessed"
    REIDENTIFIED = "re-identified"
    CONFIG_CHANGED = "config-changed"
    ASSOCIATION_ACCEPTED = "association-accepted"
    ASSOCIATION_REJECTED = "association-rejected"
    ASSOCIATION_ABORTED = "association-aborted"
    APPLICATION_STARTED = "application-started"
    APPLICATION_STOPPED = "application-stopped"
    USER_AUTHENTICATED = "user-authenticated"
    AUDIT_QUERIED = "audit-queried"
    AUDIT_EXPORTED = "audit-exported"
    AUDIT_VERIFIED = "audit-verified"
    KEY_ROTATED = "key-rotated"

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            key = _norm(value)
            for member in cls:
                if key in (_norm(member.value), _norm(member.name)):
                    return member
        return None


class SystemObjectKind(_Coded):
    """Kinds of non-patient, non-study participant objects (``99RADIOGATE`` ID type codes)."""

    NODE = ("110182", "Node ID")
    CONFIGURATION = ("RG-CONFIG", "Configuration key")
    ROUTE = ("RG-ROUTE", "Route")
    SIGNING_KEY = ("RG-KEY", "Audit signing key")
    AUDIT_LOG = ("RG-AUDIT-LOG", "Audit log")
    JOB = ("RG-JOB", "Job")
    MODEL = ("RG-MODEL", "Model")

    @property
    def scheme(self) -> str:
        """Coding scheme of this kind's code (DICOM's for Node ID, ours otherwise)."""
        return DCM if self is SystemObjectKind.NODE else RADIOGATE_CODES

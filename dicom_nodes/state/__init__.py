"""The pipeline's durable state: state machines, the one module that writes them, jobs, lanes.

Shared by the receiver (which records instances as ``received`` and defers the routing job)
and the pipeline (everything after); it imports neither.
"""

from dicom_nodes.state.lanes import Lane
from dicom_nodes.state.model import (
    ALERT,
    DELIVERY,
    FORWARD,
    INSTANCE,
    SERIES,
    STUDY,
    TRIAGE,
    ForwardEvent,
    ForwardState,
    InstanceEvent,
    InstanceState,
    InvalidTransition,
    SeriesEvent,
    SeriesState,
    StudyEvent,
    StudyState,
    TriageEvent,
    TriageState,
)
from dicom_nodes.state.repository import AuditEntry, AuditSink, Change

__all__ = [
    "ALERT",
    "DELIVERY",
    "FORWARD",
    "INSTANCE",
    "SERIES",
    "STUDY",
    "TRIAGE",
    "AuditEntry",
    "AuditSink",
    "Change",
    "ForwardEvent",
    "ForwardState",
    "InstanceEvent",
    "InstanceState",
    "InvalidTransition",
    "Lane",
    "SeriesEvent",
    "SeriesState",
    "StudyEvent",
    "StudyState",
    "TriageEvent",
    "TriageState",
]

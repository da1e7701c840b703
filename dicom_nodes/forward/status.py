"""Statuses a destination can answer with, and which of them are worth a retry.

Sources:
- PS3.7 Annex C ("Status Type Encoding"): general statuses (C.1 success, C.4 failure,
  C.5 warning), e.g. 0x0122 "Refused: SOP Class not supported", 0x0210 "Duplicate invocation".
- PS3.4 B.2.3 ("Statuses") for the Storage Service Class: 0xA7xx "Refused: Out of Resources",
  0xA9xx "Error: Data Set does not match SOP Class", 0xCxxx "Error: Cannot understand",
  0xB000/0xB006/0xB007 warnings (the instance *was* stored).
- PS3.4 J.3.2.1.1 / Table J.3-3: Failure Reason (0008,1197) values in a storage commitment
  N-EVENT-REPORT; PS3.18 Table 10.5.3-1 uses the same codes in a STOW-RS response.

Retry policy (:func:`classify_store_status`) — retryable means "the same bytes may be accepted
later", permanent means "sending them again will fail again until someone changes something":

    success / warning          -> ok
    0xA700-0xA7FF out of res.  -> retryable
    0x0210 duplicate invocation-> retryable (a message-id clash on that association only)
    0xC211 (documented case)   -> retryable: pynetdicom-based SCPs, Radiogate's included,
                                  answer it for an unexpected exception in their handler
                                  ("nothing is recorded; the sender may retry")
    0xA900-0xA9FF, 0xC000-0xCFFF, 0x01xx/0x02xx refusals, anything else -> permanent
    no status at all (timeout, abort, connection lost) -> retryable (see SendResult)

A destination may add statuses it knows to be transient (``extra_retryable_statuses``).
"""

from __future__ import annotations

from collections.abc import Collection
from enum import Enum, IntEnum

__all__ = [
    "CommitmentFailureReason",
    "Outcome",
    "StoreStatus",
    "classify_store_status",
    "describe_status",
]


class StoreStatus(IntEnum):
    """C-STORE response statuses a destination may send (PS3.4 B.2.3, PS3.7 C)."""

    SUCCESS = 0x0000
    """Success (PS3.7 C.1.1)."""

    WARNING_COERCION = 0xB000
    """Warning: Coercion of Data Elements (PS3.4 B.2.3) — stored, possibly modified."""

    WARNING_ELEMENTS_DISCARDED = 0xB006
    """Warning: Elements Discarded (PS3.4 B.2.3) — stored without some elements."""

    WARNING_DOES_NOT_MATCH_SOP_CLASS = 0xB007
    """Warning: Data Set does not match SOP Class (PS3.4 B.2.3) — stored anyway."""

    REFUSED_SOP_CLASS_NOT_SUPPORTED = 0x0122
    """Refused: SOP Class not supported (PS3.7 C.4.2)."""

    REFUSED_NOT_AUTHORIZED = 0x0124
    """Refused: Not authorized (PS3.7 C.4.4)."""

    DUPLICATE_INVOCATION = 0x0210
    """Failure: Duplicate invocation (PS3.7 C.4.5) — Message ID already in use."""

    OUT_OF_RESOURCES = 0xA700
    """Refused: Out of Resources (PS3.4 B.2.3); the whole 0xA7xx range means the same."""

    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    """Error: Data Set does not match SOP Class (PS3.4 B.2.3); the whole 0xA9xx range."""

    CANNOT_UNDERSTAND = 0xC000
    """Error: Cannot understand (PS3.4 B.2.3); 0xCxxx are implementation specific."""

    HANDLER_FAILURE = 0xC211
    """Error: Cannot understand — pynetdicom's (and Radiogate's) status for an unexpected
    exception in the SCP's handler; nothing was stored, a retry may succeed."""


class CommitmentFailureReason(IntEnum):
    """Failure Reason (0008,1197) in a storage commitment result (PS3.4 Table J.3-3)."""

    PROCESSING_FAILURE = 0x0110
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    RESOURCE_LIMITATION = 0x0213
    REFERENCED_SOP_CLASS_NOT_SUPPORTED = 0x0122
    CLASS_INSTANCE_CONFLICT = 0x0119
    DUPLICATE_TRANSACTION_UID = 0x0131


class Outcome(Enum):
    """How a status should be treated by the forwarding job."""

    OK = "ok"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


_RETRYABLE_SINGLE = frozenset({StoreStatus.DUPLICATE_INVOCATION, StoreStatus.HANDLER_FAILURE})
_WARNINGS = frozenset(
    {
        StoreStatus.WARNING_COERCION,
        StoreStatus.WARNING_ELEMENTS_DISCARDED,
        StoreStatus.WARNING_DOES_NOT_MATCH_SOP_CLASS,
    }
)


def classify_store_status(status: int, extra_retryable: Collection[int] = ()) -> Outcome:
    """Classify a C-STORE (or STOW-RS per-instance) status by the policy in the module doc."""
    if status == StoreStatus.SUCCESS or status in _WARNINGS:
        return Outcome.OK
    if 0xA700 <= status <= 0xA7FF or status in _RETRYABLE_SINGLE or status in extra_retryable:
        return Outcome.RETRYABLE
    return Outcome.PERMANENT


def describe_status(status: int) -> str:
    """A short human-readable name for *status* (for notes and logs)."""
    try:
        return f"0x{status:04X} {StoreStatus(status).name.lower().replace('_', ' ')}"
    except ValueError:
        if 0xA700 <= status <= 0xA7FF:
            return f"0x{status:04X} out of resources"
        if 0xA900 <= status <= 0xA9FF:
            return f"0x{status:04X} data set does not match SOP class"
        if 0xC000 <= status <= 0xCFFF:
            return f"0x{status:04X} cannot understand"
        return f"0x{status:04X}"

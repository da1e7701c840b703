"""DIMSE status codes used by the SCP, as named constants.

Sources:
- PS3.7 Annex C ("Status Type Encoding"), C.1-C.5: general statuses.
- PS3.4 Annex B.2.3 ("Statuses") for the Storage Service Class: 0xA7xx "Refused: Out of
  Resources", 0xA9xx "Error: Data Set does not match SOP Class", 0xCxxx "Error: Cannot
  understand", 0xB000/0xB007/0xB006 warnings.

Values in the 0xCxxx range are implementation-specific by the standard; each one of ours has a
distinct meaning so that an administrator can tell the cause from a modality's log alone.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["StoreStatus"]


class StoreStatus(IntEnum):
    """Statuses of our C-STORE SCP (PS3.4 B.2.3, PS3.7 C)."""

    SUCCESS = 0x0000
    """Success (PS3.7 C.1.1)."""

    OUT_OF_RESOURCES = 0xA700
    """Refused: Out of Resources (PS3.4 B.2.3): disk under watermark or database unavailable."""

    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    """Error: Data Set does not match SOP Class (PS3.4 B.2.3): the dataset's SOP Class UID
    differs from the command's Affected SOP Class UID."""

    CANNOT_UNDERSTAND = 0xC000
    """Error: Cannot understand (PS3.4 B.2.3), no more specific reason."""

    CANNOT_UNDERSTAND_UNPARSEABLE = 0xC210
    """Error: Cannot understand - the dataset could not be parsed (truncated, invalid VR,
    inconsistent lengths). Same value pynetdicom uses for "failed to decode dataset"."""

    CANNOT_UNDERSTAND_HANDLER_FAILURE = 0xC211
    """Error: Cannot understand - unexpected failure in the SCP (pynetdicom's value for an
    exception in the handler). Nothing is recorded; the sender may retry."""

    CANNOT_UNDERSTAND_MISSING_UID = 0xC220
    """Error: Cannot understand - a Type 1 identifying attribute is missing or empty
    (SOP Class UID, SOP Instance UID, Study Instance UID or Series Instance UID)."""

    CANNOT_UNDERSTAND_INSTANCE_MISMATCH = 0xC221
    """Error: Cannot understand - the dataset's SOP Instance UID differs from the command's
    Affected SOP Instance UID."""

    CANNOT_UNDERSTAND_INVALID_UID = 0xC222
    """Error: Cannot understand - an identifying UID is not a valid UID (PS3.5 9.1)."""

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

__all__ = ["MppsStatus", "StoreStatus"]


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

    CANNOT_UNDERSTAND_PIXEL_DATA = 0xC212
    """Error: Cannot understand - Pixel Data does not fit the image attributes: native Pixel
    Data shorter or longer than Rows * Columns * Samples per Pixel * Bits Allocated * Number
    of Frames requires, or encapsulated Pixel Data with fewer fragments than frames or an
    offset table of the wrong size (PS3.5 8.1.1, A.4). A truncated image re-encoded as a
    consistent dataset is the typical case; the Error Comment says which."""

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


class MppsStatus(IntEnum):
    """Statuses of our Modality Performed Procedure Step SCP (PS3.4 F.7.2, PS3.7 C.4)."""

    SUCCESS = 0x0000
    PROCESSING_FAILURE = 0x0110
    """Failure: Processing failure (PS3.7 C.4.14)."""
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    """Failure: No such object instance (PS3.7 C.4.16): N-SET of a step never created."""
    DUPLICATE_SOP_INSTANCE = 0x0111
    """Failure: Duplicate SOP Instance (PS3.7 C.4.15): N-CREATE of an existing step."""
    INVALID_ATTRIBUTE_VALUE = 0x0106
    """Failure: Invalid attribute value (PS3.7 C.4.8): a status other than IN PROGRESS at
    N-CREATE, or an unknown status (PS3.4 F.7.2.1.1, F.7.2.2.1)."""
    MISSING_ATTRIBUTE = 0x0120
    """Failure: Missing attribute (PS3.7 C.4.19): no Affected SOP Instance UID."""
    RESOURCE_LIMITATION = 0x0213
    """Failure: Resource limitation (PS3.7 C.4.26): the step could not be recorded now."""
    NO_LONGER_UPDATABLE = 0xC310
    """Failure: Performed Procedure Step Object may no longer be updated (PS3.4 F.7.2.2.2):
    the step is already COMPLETED or DISCONTINUED."""

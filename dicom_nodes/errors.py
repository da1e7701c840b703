"""Radiogate's exception hierarchy.

Each exception says whether the operation may succeed when retried; the SCP turns them into
DIMSE statuses in exactly one place (:func:`dicom_nodes.scp.handlers.status_for`).

    RadiogateError
    ├── RetryableError               (the peer should send again later)
    │   ├── OutOfResources           disk under watermark, spool not writable
    │   └── DatabaseUnavailable      PostgreSQL unreachable or failing
    └── PermanentError               (sending the same bytes again will fail again)
        └── InvalidDataset           cannot be parsed, missing / mismatching identifying UIDs
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "DatabaseUnavailable",
    "DatasetProblem",
    "InvalidDataset",
    "OutOfResources",
    "PermanentError",
    "RadiogateError",
    "RetryableError",
]


class RadiogateError(Exception):
    """Base of all Radiogate errors."""

    retryable: bool = False


class RetryableError(RadiogateError):
    """A transient failure: the same request may succeed later."""

    retryable = True


class PermanentError(RadiogateError):
    """A failure that a retry of the same input will not fix."""

    retryable = False


class OutOfResources(RetryableError):
    """Local resources (disk space, spool) are exhausted or unavailable."""


class DatabaseUnavailable(RetryableError):
    """PostgreSQL could not be reached or the transaction failed."""


class DatasetProblem(Enum):
    """Why a received dataset was refused."""

    UNPARSEABLE = "unparseable"
    MISSING_UID = "missing-uid"
    INVALID_UID = "invalid-uid"
    SOP_CLASS_MISMATCH = "sop-class-mismatch"
    SOP_INSTANCE_MISMATCH = "sop-instance-mismatch"
    PIXEL_DATA_MISMATCH = "pixel-data-mismatch"


class InvalidDataset(PermanentError):
    """The dataset cannot be understood; *problem* says why. Messages never carry PHI."""

    def __init__(self, problem: DatasetProblem, detail: str) -> None:
        super().__init__(f"{problem.value}: {detail}")
        self.problem = problem
        self.detail = detail
        self.identity: object | None = None
        """The dataset's identifying UIDs when they were read before the problem was found."""

"""Plain data passed between the de-identification engine, the vault and the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pydicom.dataset import Dataset

__all__ = ["BurnedIn", "DeidResult", "VaultEntry"]


class BurnedIn(StrEnum):
    """What the engine found out about burned-in text (PS3.15 E.3.1 Clean Pixel Data)."""

    NONE = "none"
    """Burned In Annotation is NO, or the image kind is not expected to carry text."""
    MASKED = "masked"
    """Configured regions were blacked out; Burned In Annotation is now NO."""
    NEEDS_REVIEW = "needs-review"
    """Text may be in the pixels and no mask rule matched: the instance must be quarantined."""


@dataclass(frozen=True)
class VaultEntry:
    """One pseudonym and the original identifiers it stands for (stored encrypted).

    ``kind`` is ``patient`` (Patient ID, name, birth date, issuer), ``study`` (Study Instance
    UID, accession number, study ID) or ``uid`` (any other replaced UID)."""

    kind: str
    pseudonym: str
    original: dict[str, str]


@dataclass
class DeidResult:
    """A de-identified dataset (with a new file meta group) and what the vault must keep."""

    dataset: Dataset
    patient_pseudonym: str
    vault: list[VaultEntry] = field(default_factory=list)
    burned_in: BurnedIn = BurnedIn.NONE
    notes: list[str] = field(default_factory=list)

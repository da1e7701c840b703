"""Settings of de-identification (DICOM PS3.15 Annex E), used by ``deidentify:<profile>`` steps.

A profile is the Basic Application Level Confidentiality Profile plus the options it names
(PS3.15 E.3), the private attributes it may keep, and what happens to images with burned-in
text. The site secret (pseudonyms, UIDs, date shifts) and the vault key (the encrypted
pseudonym → original map) live in files under ``node.data_dir``, created on first start; the
environment variables ``RADIOGATE_DEID_SECRET`` and ``RADIOGATE_DEID_VAULT_KEY`` (base64 of 32
bytes) take precedence over the files::

    [[deid.profiles]]
    name = "research"
    options = ["retain-longitudinal-modified-dates", "clean-descriptors"]
    burned_in = "mask"
    [[deid.profiles.masks]]
    manufacturer = ["ACME*"]
    model = ["Sono 3000"]
    regions = [[0, 0, 640, 60]]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["BurnedInPolicy", "DeidOption", "DeidProfile", "DeidSettings", "MaskRule"]


def _normalise(value: str) -> str:
    return value.strip().lower().replace("_", "-").replace(" ", "-")


class _SpelledFreely(StrEnum):
    """Accepts a member's value in any case, with ``_`` or spaces for ``-``."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            key = _normalise(value)
            for member in cls:
                if key == member.value:
                    return member
        return None


class DeidOption(_SpelledFreely):
    """The options of PS3.15 Table E.1-1 (column names) that a profile may add."""

    RETAIN_SAFE_PRIVATE = "retain-safe-private"
    RETAIN_UIDS = "retain-uids"
    RETAIN_DEVICE_IDENTITY = "retain-device-identity"
    RETAIN_INSTITUTION_IDENTITY = "retain-institution-identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain-patient-characteristics"
    RETAIN_LONGITUDINAL_FULL_DATES = "retain-longitudinal-full-dates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "retain-longitudinal-modified-dates"
    CLEAN_DESCRIPTORS = "clean-descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean-structured-content"
    CLEAN_GRAPHICS = "clean-graphics"


class BurnedInPolicy(_SpelledFreely):
    """What a route does with images that may show burned-in text (PS3.15 E.3.1)."""

    QUARANTINE = "quarantine"
    """Hold the instance back (audited, listed for admins); never forward it."""
    MASK = "mask"
    """Black out the regions of the first matching mask rule; quarantine when none matches."""


@dataclass(frozen=True)
class MaskRule:
    """Pixel regions to black out for one kind of device (DICOM wildcards ``*`` and ``?``)."""

    manufacturer: list[str] = field(default_factory=lambda: ["*"])
    """Patterns for Manufacturer (0008,0070); any matching pattern selects the rule."""
    model: list[str] = field(default_factory=lambda: ["*"])
    """Patterns for Manufacturer's Model Name (0008,1090)."""
    regions: list[list[int]] = field(default_factory=list)
    """Rectangles ``[x0, y0, x1, y1]`` in pixels, x1/y1 exclusive, applied to every frame."""


@dataclass(frozen=True)
class DeidProfile:
    """One de-identification profile, named in route steps as ``deidentify:<name>``."""

    name: str = "basic"
    options: list[DeidOption] = field(
        default_factory=lambda: [DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES]
    )
    """PS3.15 E.3 options added to the Basic Profile."""
    safe_private: list[str] = field(default_factory=list)
    """Private attributes kept under ``retain-safe-private``, as ``CREATOR:gggg,xxee``
    (e.g. ``SIEMENS CT VA0  COAD:0019,xx92``); all other private attributes are removed."""
    burned_in: BurnedInPolicy = BurnedInPolicy.QUARANTINE
    """Images with Burned In Annotation YES, or US/SC/OT/XC images without the attribute."""
    masks: list[MaskRule] = field(default_factory=list)
    """Regions to black out per device model when ``burned_in = "mask"``."""
    date_shift_days: int = 365
    """Modified Dates: each patient's dates move back by 1..N days (same for all their dates)."""


@dataclass(frozen=True)
class DeidSettings:
    """Where the de-identification secrets live, and the profiles routes may name."""

    secret_file: str = "deid/site_secret"  # noqa: S105 - a path, not a secret
    """32 random bytes keying pseudonyms, new UIDs and date shifts (relative to data_dir)."""
    vault_key_file: str = "deid/vault.key"
    """32 random bytes: AES-256-GCM key of the re-identification vault (relative to data_dir)."""
    processes: int = 0
    """Processes a worker de-identifies in, in parallel (1: in the worker process itself;
    0: one per CPU core beyond two, at most 4)."""
    profiles: list[DeidProfile] = field(default_factory=lambda: [DeidProfile()])
    """Default: ``basic`` = Basic Profile + Retain Longitudinal Temporal Information with
    Modified Dates, burned-in images quarantined."""

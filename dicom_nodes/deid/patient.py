"""Who the patient of an instance is, for the keyed pseudonym (DICOM PS3.15 E.3.10 style).

The de-identification engine and the receiver must derive the *same* pseudonym for an
instance: the engine from a parsed dataset, the receiver from the raw values of the few
top-level Patient Module attributes (PS3.3 C.7.1.1) its structural check collects without
decoding the rest. Both go through :func:`patient_fields`, so they cannot drift apart.

The raw values are identifying data: they live only in memory, are never logged, and only
their keyed pseudonym leaves this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicom_nodes.deid.pseudonyms import Pseudonymiser
from dicom_nodes.spool.inspect import RawPatient

if TYPE_CHECKING:
    from config import Settings
    from dicom_nodes.spool.inspect import DatasetIdentity

__all__ = [
    "PATIENT_TAGS",
    "patient_fields",
    "patient_pseudonym",
    "receiver_pseudonym",
]

LOGGER = logging.getLogger(__name__)

SPECIFIC_CHARACTER_SET = 0x00080005
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
ISSUER_OF_PATIENT_ID = 0x00100021
PATIENT_BIRTH_DATE = 0x00100030
STUDY_INSTANCE_UID = 0x0020000D

PATIENT_TAGS: frozenset[int] = frozenset(
    {SPECIFIC_CHARACTER_SET, PATIENT_NAME, PATIENT_ID, ISSUER_OF_PATIENT_ID, PATIENT_BIRTH_DATE}
)
"""Top-level attributes the patient key reads (and the character set to decode them)."""


def _text(ds: Dataset, tag: int) -> str:
    elem = ds.get(tag)
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return str(value)


def patient_fields(ds: Dataset) -> tuple[str, str, str, str, str]:
    """(Patient ID, Issuer of Patient ID, Patient's Name, Birth Date, Study Instance UID) as
    the pseudonym key uses them (:meth:`Pseudonymiser.patient_key`)."""
    return (
        _text(ds, PATIENT_ID),
        _text(ds, ISSUER_OF_PATIENT_ID),
        _text(ds, PATIENT_NAME),
        _text(ds, PATIENT_BIRTH_DATE),
        _text(ds, STUDY_INSTANCE_UID),
    )


def patient_pseudonym(pseudo: Pseudonymiser, raw: RawPatient, study_uid: str) -> str:
    """The pseudonym de-identification will give this instance's patient."""
    patient_id, issuer, name, birth, study = patient_fields(raw.dataset(study_uid))
    return pseudo.patient(Pseudonymiser.patient_key(patient_id, issuer, name, birth, study))


def receiver_pseudonym(settings: Settings) -> Callable[[DatasetIdentity], str] | None:
    """What the receiver records as an instance's patient: the pseudonym de-identification will
    give it, under the site secret; None (and a warning) when no site secret is available."""
    from dicom_nodes.deid.secrets import SecretError, load_site_secret

    try:
        pseudo = Pseudonymiser(load_site_secret(settings))
    except SecretError as exc:
        LOGGER.warning("received instances are recorded without patient pseudonym: %s", exc)
        return None

    def pseudonym(identity: DatasetIdentity) -> str:
        return patient_pseudonym(pseudo, identity.patient, identity.study_instance_uid)

    return pseudonym

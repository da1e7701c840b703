"""Shared pieces: derived UIDs, the private scheme declaration, the encoding."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    RE_VALID_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from analysis.results import to_bytes
from analysis.results._common import (
    Identity,
    ResultKind,
    declare_private_schemes,
    derived_uid,
    procedure_reported,
)
from tests.unit.results.synthetic import SEGMENTER, TRIAGE_MODEL


def test_derived_uids_are_valid_stable_and_distinct() -> None:
    uid = derived_uid("a", "b")
    assert uid == derived_uid("a", "b") and uid.startswith("2.25.")
    assert len(uid) <= 64 and RE_VALID_UID.fullmatch(uid)
    assert uid != derived_uid("ab") != derived_uid("a", "b", "")
    assert "2.25.0" not in {derived_uid(str(i))[:6] for i in range(200)}  # no leading zeros


def test_identity_depends_on_kind_series_algorithm_and_inputs() -> None:
    base = Identity.of(ResultKind.TRIAGE, "1.2.3", [TRIAGE_MODEL], "x")
    assert base == Identity.of(ResultKind.TRIAGE, "1.2.3", [TRIAGE_MODEL], "x")
    others = [
        Identity.of(ResultKind.KEY_IMAGES, "1.2.3", [TRIAGE_MODEL], "x"),
        Identity.of(ResultKind.TRIAGE, "1.2.4", [TRIAGE_MODEL], "x"),
        Identity.of(ResultKind.TRIAGE, "1.2.3", [SEGMENTER], "x"),
    ]
    for other in others:
        assert other.series_instance_uid != base.series_instance_uid
        assert other.sop_instance_uid != base.sop_instance_uid
    changed = Identity.of(ResultKind.TRIAGE, "1.2.3", [TRIAGE_MODEL], "y")
    assert changed.series_instance_uid == base.series_instance_uid
    assert changed.sop_instance_uid != base.sop_instance_uid
    assert base.series_description == "Radiogate triage (not for clinical use)"
    assert Identity.of(ResultKind.SEGMENTATION, "1", [SEGMENTER]).series_description == (
        "Radiogate segmentation"
    )
    numbers = {Identity.of(k, "1", [SEGMENTER]).series_number for k in ResultKind}
    assert len(numbers) == len(ResultKind)


def _coded(designator: str) -> Dataset:
    ds, item, nested = Dataset(), Dataset(), Dataset()
    nested.CodeValue, nested.CodingSchemeDesignator, nested.CodeMeaning = "X", designator, "x"
    item.ConceptNameCodeSequence = [nested]
    ds.ContentSequence = [item]
    return ds


def test_private_scheme_is_declared_when_used_deep_down() -> None:
    ds = _coded("99RADIOGATE")
    declare_private_schemes(ds)
    (scheme,) = ds.CodingSchemeIdentificationSequence
    assert scheme.CodingSchemeDesignator == "99RADIOGATE"
    assert scheme.CodingSchemeResponsibleOrganization == "Radiogate project"
    plain = _coded("DCM")
    declare_private_schemes(plain)
    assert "CodingSchemeIdentificationSequence" not in plain
    with pytest.raises(ValueError, match="99OTHER"):
        declare_private_schemes(_coded("99OTHER"))


def test_procedure_reported_by_modality() -> None:
    ds = Dataset()
    ds.Modality = "CT"
    assert procedure_reported(ds) == codes.LN.CTUnspecifiedBodyRegion
    ds.Modality = "XA"
    with pytest.raises(ValueError, match="no procedure code for modality 'XA'"):
        procedure_reported(ds)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_only_explicit_vr_little_endian_is_written(syntax: str) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.34", "1.2.3"
    with pytest.raises(ValueError, match="Explicit VR Little Endian only"):
        to_bytes(ds)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    assert to_bytes(ds)[128:132] == b"DICM"

"""Key Object Selection: written, strictly read back, parsed again with highdicom."""

from __future__ import annotations

import dataclasses

import highdicom as hd
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import KeyObjectSelectionDocumentStorage

from analysis.results import ActionableCategory, Lane, TriageFinding, build_key_objects
from tests.unit.results.roundtrip import write_and_read
from tests.unit.results.synthetic import CREATED, PROVENANCE, TRIAGE_MODEL


def _read(source: list[Dataset], finding: TriageFinding) -> hd.ko.KeyObjectSelectionDocument:
    _, back = write_and_read(build_key_objects(source, finding, TRIAGE_MODEL, PROVENANCE))
    return hd.ko.KeyObjectSelectionDocument.from_dataset(back)


def _description(kos: hd.ko.KeyObjectSelectionDocument) -> str:
    (item,) = hd.sr.utils.find_content_items(
        kos.content[0], name=codes.DCM.KeyObjectDescription, value_type=hd.sr.ValueTypeValues.TEXT
    )
    return str(item.value)


def test_title_references_and_description_read_back(
    source: list[Dataset], finding: TriageFinding
) -> None:
    kos = _read(source, finding)
    assert kos.SOPClassUID == KeyObjectSelectionDocumentStorage
    assert kos.content[0].name == codes.DCM.OfInterest
    assert kos.ContentTemplateSequence[0].TemplateIdentifier == "2010"
    selected = [ref.referenced_sop_instance_uid for ref in kos.content.get_references()]
    assert selected == list(finding.flagged)
    for uid in finding.flagged:
        assert kos.resolve_reference(uid)[1] == finding.series_instance_uid
    assert _description(kos) == (
        "Nodule: urgent lane, ACR category 2, certainty 87.5 % "
        "(chest-ct-triage 1.2.0, not for clinical use)"
    )
    (observer,) = kos.content.get_observer_contexts(observer_type=codes.DCM.Device)
    assert observer.observer_identifying_attributes.name == "Radiogate"


def test_provenance_and_patient_marks(source: list[Dataset], finding: TriageFinding) -> None:
    kos = _read(source, finding)
    assert kos.SeriesDescription == "Radiogate key images (not for clinical use)"
    assert kos.SeriesNumber == 9902
    assert kos.Modality == "KO"
    assert kos.PatientIdentityRemoved == "YES"
    assert kos.DeidentificationMethod == source[0].DeidentificationMethod
    models = [e.get("ManufacturerModelName") for e in kos.ContributingEquipmentSequence]
    assert "chest-ct-triage" in models
    assert "InstitutionName" not in kos


def test_a_finding_without_category_says_so(source: list[Dataset], finding: TriageFinding) -> None:
    plain = dataclasses.replace(finding, lane=Lane.ROUTINE, category=None, certainty=12.0)
    assert _description(_read(source, plain)).startswith(
        "Nodule: routine lane, not actionable, certainty 12 %"
    )
    critical = dataclasses.replace(
        finding, lane=Lane.CRITICAL, category=ActionableCategory.CATEGORY_1
    )
    assert "critical lane, ACR category 1" in _description(_read(source, critical))


def test_deterministic(source: list[Dataset], finding: TriageFinding) -> None:
    def build() -> bytes:
        kos = build_key_objects(source, finding, TRIAGE_MODEL, PROVENANCE, created=CREATED)
        return write_and_read(kos)[0]

    assert build() == build()


def test_nothing_flagged_is_refused(source: list[Dataset], finding: TriageFinding) -> None:
    with pytest.raises(ValueError, match="at least one flagged image"):
        build_key_objects(
            source, dataclasses.replace(finding, flagged=()), TRIAGE_MODEL, PROVENANCE
        )
    with pytest.raises(ValueError, match="not among the source"):
        build_key_objects(source[:1], finding, TRIAGE_MODEL, PROVENANCE)

"""Triage SR: written, strictly read back, parsed again with highdicom; every field found."""

from __future__ import annotations

import dataclasses
import io

import highdicom as hd
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import Comprehensive3DSRStorage

from analysis.results import (
    ActionableCategory,
    Lane,
    TriageFinding,
    build_triage_sr,
)
from tests.support.ohif import ohif_problems
from tests.unit.results.roundtrip import write_and_read
from tests.unit.results.synthetic import CREATED, PROVENANCE, TRIAGE_MODEL

PRIORITY = Code("260870009", "SCT", "Priority")
LANE = Code("TRIAGE-LANE", "99RADIOGATE", "Triage lane")


def _read(source: list[Dataset], finding: TriageFinding) -> tuple[bytes, hd.sr.Comprehensive3DSR]:
    data, _ = write_and_read(build_triage_sr(source, finding, TRIAGE_MODEL, PROVENANCE))
    sr = hd.sr.srread(io.BytesIO(data))
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    return data, sr


def _group(sr: hd.sr.Comprehensive3DSR) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    assert isinstance(sr.content, hd.sr.MeasurementReport)
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 1
    assert not sr.content.get_planar_roi_measurement_groups()
    assert not sr.content.get_volumetric_roi_measurement_groups()
    return groups[0]


def _evaluations(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> dict[Code, Code]:
    return {
        # highdicom annotates the value as a number; it is the coded concept.
        Code(e.name.value, e.name.scheme_designator, e.name.meaning): e.value  # type: ignore[misc]
        for e in group.get_qualitative_evaluations()
    }


def test_priority_certainty_lane_and_finding_read_back(
    source: list[Dataset], finding: TriageFinding
) -> None:
    _, sr = _read(source, finding)
    assert sr.SOPClassUID == Comprehensive3DSRStorage
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    group = _group(sr)
    evaluations = _evaluations(group)
    assert evaluations[PRIORITY] == codes.RADLEX.ACRCategory2ActionableFinding
    assert evaluations[PRIORITY].value == "RID49481"
    assert evaluations[LANE].value == "LANE-URGENT"
    (certainty,) = group.get_measurements(name=codes.DCM.CertaintyOfFinding)
    assert certainty.value == pytest.approx(87.5)
    assert (certainty.unit.value, certainty.unit.scheme_designator) == ("%", "UCUM")
    assert group.finding_type == codes.SCT.Nodule
    assert group.tracking_identifier == "Triage"
    assert group.tracking_uid is not None and group.tracking_uid.startswith("2.25.")
    flagged = [img.referenced_sop_instance_uid for img in group.source_images]
    assert flagged == list(finding.flagged)


def test_algorithm_identification_carries_the_model_hash(
    source: list[Dataset], finding: TriageFinding
) -> None:
    _, sr = _read(source, finding)
    group = _group(sr)
    texts = {
        item.name.meaning: item.value
        for item in hd.sr.utils.find_content_items(group[0], value_type=hd.sr.ValueTypeValues.TEXT)
    }
    assert texts["Algorithm Name"] == "chest-ct-triage"
    assert texts["Algorithm Version"] == "1.2.0"
    assert texts["Algorithm Parameters"] == f"model-blake3={TRIAGE_MODEL.model_hash}"
    equipment = {e.get("ManufacturerModelName"): e for e in sr.ContributingEquipmentSequence}
    assert equipment["chest-ct-triage"].SoftwareVersions == "1.2.0"
    assert equipment["chest-ct-triage"].Manufacturer == "Radiogate"
    assert "not for clinical use" in equipment["chest-ct-triage"].ContributionDescription


def test_document_is_preliminary_unverified_and_names_itself(
    source: list[Dataset], finding: TriageFinding
) -> None:
    _, sr = _read(source, finding)
    assert (sr.PreliminaryFlag, sr.VerificationFlag, sr.CompletionFlag) == (
        "PRELIMINARY",
        "UNVERIFIED",
        "PARTIAL",
    )
    assert sr.SeriesDescription == "Radiogate triage (not for clinical use)"
    assert sr.SeriesNumber == 9901
    assert (sr.Manufacturer, sr.SoftwareVersions) == ("Radiogate", "0.1.0")
    assert "InstitutionName" not in sr
    assert sr.PatientID == source[0].PatientID
    assert sr.StudyInstanceUID == source[0].StudyInstanceUID
    assert sr.PatientIdentityRemoved == "YES"
    (scheme,) = sr.CodingSchemeIdentificationSequence
    assert scheme.CodingSchemeDesignator == "99RADIOGATE"


def test_image_library_and_evidence_hold_the_key_slices_only(
    source: list[Dataset], finding: TriageFinding
) -> None:
    _, sr = _read(source, finding)
    library = hd.sr.utils.find_content_items(
        sr.content[0], name=codes.DCM.ImageLibrary, recursive=False
    )
    entries = hd.sr.utils.find_content_items(
        library[0], value_type=hd.sr.ValueTypeValues.IMAGE, recursive=True
    )
    assert [e.referenced_sop_instance_uid for e in entries] == list(finding.flagged)
    assert [uid for _, _, uid, _ in sr.get_evidence()] == list(finding.flagged)
    assert len(source) > len(finding.flagged)


def test_a_finding_that_is_not_actionable_has_a_lane_and_no_priority(
    source: list[Dataset], finding: TriageFinding
) -> None:
    routine = dataclasses.replace(finding, lane=Lane.ROUTINE, category=None)
    _, sr = _read(source, routine)
    evaluations = _evaluations(_group(sr))
    assert PRIORITY not in evaluations
    assert evaluations[LANE].value == "LANE-ROUTINE"


def test_nothing_flagged_means_no_image_library_entries_and_the_series_as_evidence(
    source: list[Dataset], finding: TriageFinding
) -> None:
    rule = dataclasses.replace(finding, flagged=())
    _, sr = _read(source, rule)
    assert not _group(sr).source_images
    assert len(sr.get_evidence()) == len(source)


@pytest.mark.parametrize(
    ("category", "value"),
    [(ActionableCategory.CATEGORY_1, "RID49480"), (ActionableCategory.CATEGORY_3, "RID49482")],
)
def test_every_category_has_its_cid_7035_code(
    source: list[Dataset], finding: TriageFinding, category: ActionableCategory, value: str
) -> None:
    chosen = dataclasses.replace(finding, lane=Lane.CRITICAL, category=category)
    _, sr = _read(source, chosen)
    assert _evaluations(_group(sr))[PRIORITY].value == value


def test_same_inputs_same_bytes_and_a_changed_result_a_new_instance(
    source: list[Dataset], finding: TriageFinding
) -> None:
    def build(f: TriageFinding) -> hd.sr.Comprehensive3DSR:
        return build_triage_sr(source, f, TRIAGE_MODEL, PROVENANCE, created=CREATED)

    first, again = write_and_read(build(finding))[0], write_and_read(build(finding))[0]
    assert first == again
    other = build(dataclasses.replace(finding, certainty=60.0))
    assert other.SeriesInstanceUID == build(finding).SeriesInstanceUID
    assert other.SOPInstanceUID != build(finding).SOPInstanceUID


def test_a_clinical_model_is_not_marked_demonstration(
    source: list[Dataset], finding: TriageFinding
) -> None:
    clinical = dataclasses.replace(TRIAGE_MODEL, demonstration=False)
    sr = build_triage_sr(source, finding, clinical, PROVENANCE)
    assert sr.SeriesDescription == "Radiogate triage"


def test_flagged_images_must_be_in_the_source(
    source: list[Dataset], finding: TriageFinding
) -> None:
    with pytest.raises(ValueError, match="not among the source"):
        build_triage_sr(source[:2], finding, TRIAGE_MODEL, PROVENANCE)
    other = dataclasses.replace(finding, series_instance_uid="1.2.3.4")
    with pytest.raises(ValueError, match="another series"):
        build_triage_sr(source, other, TRIAGE_MODEL, PROVENANCE)


def test_ohif_can_place_the_certainty_flagged_or_not(
    source: list[Dataset], finding: TriageFinding
) -> None:
    """OHIF fails on a report group it cannot place on an image (tests/support/ohif.py): the
    certainty is inferred from a whole-image region on each flagged image, or on the series'
    middle image when nothing is flagged."""
    for flagged in (finding.flagged, ()):
        case = dataclasses.replace(finding, flagged=flagged)
        data, sr = _read(source, case)
        assert ohif_problems(pydicom.dcmread(io.BytesIO(data))) == []
        (certainty,) = _group(sr).get_measurements(name=codes.DCM.CertaintyOfFinding)
        regions = [c for c in certainty[0].ContentSequence if c.ValueType == "SCOORD"]
        images = [r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                  for r in regions]  # fmt: skip
        middle = sorted(source, key=lambda ds: int(ds.InstanceNumber))[len(source) // 2]
        assert images == (list(flagged) or [middle.SOPInstanceUID])
        for region in regions:
            assert region.RelationshipType == "INFERRED FROM"
            assert region.GraphicType == "POLYLINE"
            rows, cols = (float(v) for v in (source[0].Rows, source[0].Columns))
            assert [float(v) for v in region.GraphicData] == [
                0,
                0,
                cols,
                0,
                cols,
                rows,
                0,
                rows,
                0,
                0,
            ]


def test_the_content_tree_taken_as_it_is_gives_the_same_document(
    source: list[Dataset], finding: TriageFinding, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib

    from analysis.results import triage_sr

    adopted = write_and_read(build_triage_sr(source, finding, TRIAGE_MODEL, PROVENANCE,
                                             created=CREATED))[0]  # fmt: skip
    monkeypatch.setattr(triage_sr, "adopt_content", lambda _content: contextlib.nullcontext())
    copied = write_and_read(build_triage_sr(source, finding, TRIAGE_MODEL, PROVENANCE,
                                            created=CREATED))[0]  # fmt: skip
    assert adopted == copied
    from highdicom.sr import sop

    assert vars(sop)["deepcopy"].__module__ == "copy"  # put back after the build

"""Measurement report: written, strictly read back, parsed again with highdicom; groups,
tracking, segment references, measurements, imputation marks, model outputs, attributions and
the key-slice SCOORD are all found where docs/results.md says."""

from __future__ import annotations

import dataclasses
import io
import math

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from analysis.results import (
    GraphicType,
    PlanarRegion,
    SegmentResult,
    build_measurement_report,
)
from tests.support.sr import measurement_report
from tests.unit.results.roundtrip import write_and_read
from tests.unit.results.synthetic import CREATED, EXTRACTOR, MALIGNANCY, PROVENANCE

IMPUTED = Code("IMPUTED", "99RADIOGATE", "Imputed value")
ATTRIBUTION = Code("FEATURE-ATTRIB", "99RADIOGATE", "Feature attribution")
FEATURE_NAME = Code("FEATURE-NAME", "99RADIOGATE", "Feature name")
NUM, TEXT = hd.sr.ValueTypeValues.NUM, hd.sr.ValueTypeValues.TEXT


def _read(
    source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]
) -> hd.sr.Comprehensive3DSR:
    sr = build_measurement_report(source, segmentation, segments, EXTRACTOR, PROVENANCE)
    data, _ = write_and_read(sr)
    back = hd.sr.srread(io.BytesIO(data))
    assert isinstance(back, hd.sr.Comprehensive3DSR)
    assert isinstance(back.content, hd.sr.MeasurementReport)
    return back


def test_one_volumetric_group_per_segment_tracked_as_in_the_seg(
    source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]
) -> None:
    sr = _read(source, segmentation, segments)
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"
    groups = measurement_report(sr.content).get_volumetric_roi_measurement_groups()
    assert len(groups) == len(segments)
    seg_tracking = {int(d.SegmentNumber): str(d.TrackingUID) for d in segmentation.SegmentSequence}
    for group, segment in zip(groups, segments, strict=True):
        assert group.tracking_uid == segment.tracking_uid == seg_tracking[segment.segment_number]
        assert group.tracking_identifier == segment.tracking_id
        reference = group.referenced_segment
        assert isinstance(reference, hd.sr.ReferencedSegment)
        assert reference.referenced_sop_instance_uid == segmentation.SOPInstanceUID
        assert reference.referenced_segment_numbers == [segment.segment_number]
        assert reference.source_series_for_segmentation is not None
        assert reference.source_series_for_segmentation.value == source[0].SeriesInstanceUID
        assert group.finding_type == segment.type
        assert group.finding_category == segment.category
        (site,) = group.finding_sites
        assert site.value == codes.SCT.Lung
        assert site.laterality == segment.laterality
    by_uid = measurement_report(sr.content).get_volumetric_roi_measurement_groups(
        tracking_uid=segments[2].tracking_uid
    )
    assert len(by_uid) == 1


def test_measurements_derivations_and_imputation(
    source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]
) -> None:
    sr = _read(source, segmentation, segments)
    nodule = measurement_report(sr.content).get_volumetric_roi_measurement_groups(
        tracking_uid=segments[2].tracking_uid
    )[0]
    found = {
        (m.name.value, m.derivation.value if m.derivation else None): m
        for m in nodule.get_measurements()
    }
    for expected in segments[2].measurements:
        key = (expected.concept.value, expected.derivation.value if expected.derivation else None)
        measurement = found[key]
        assert measurement.value == pytest.approx(expected.value)
        assert measurement.unit == expected.unit
        method = measurement.method
        assert (method is not None and method == IMPUTED) is expected.imputed
    hu = found[("112031", "373098007")]  # Attenuation Coefficient, Mean
    assert hu.unit.value == "[hnsf'U]" and hu.value == pytest.approx(45.5)
    assert found[("TU9B", None)].method == IMPUTED  # Joint Entropy of GLCM
    assert found[("QCFX", None)].method is None  # Sphericity, computed


def test_model_output_with_its_algorithm_and_attributions(
    source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]
) -> None:
    sr = _read(source, segmentation, segments)
    nodule = measurement_report(sr.content).get_volumetric_roi_measurement_groups(
        tracking_uid=segments[2].tracking_uid
    )[0]
    (output,) = nodule.get_measurements(name=MALIGNANCY)
    assert output.value == pytest.approx(0.73)
    texts = {
        i.name.meaning: i.value for i in hd.sr.utils.find_content_items(output[0], value_type=TEXT)
    }
    assert texts["Algorithm Name"] == "nodule-risk"
    assert texts["Algorithm Parameters"] == "model-blake3=" + "d" * 64
    attributions = []
    for item in hd.sr.utils.find_content_items(output[0], name=ATTRIBUTION, value_type=NUM):
        assert item.relationship_type == hd.sr.RelationshipTypeValues.HAS_PROPERTIES
        (name,) = hd.sr.utils.find_content_items(item, name=FEATURE_NAME, value_type=TEXT)
        attributions.append((name.value, item.value))
    expected = [(a.feature, a.contribution) for a in segments[2].model_outputs[0].attributions]
    assert [f for f, _ in attributions] == [f for f, _ in expected]
    assert [c for _, c in attributions] == pytest.approx([c for _, c in expected])
    # attributions are not measurements of the segment
    assert not nodule.get_measurements(name=ATTRIBUTION)


def test_planar_group_draws_the_lesion_on_its_key_slice(
    source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]
) -> None:
    sr = _read(source, segmentation, segments)
    (planar,) = measurement_report(sr.content).get_planar_roi_measurement_groups()
    nodule = segments[2]
    assert planar.tracking_uid == nodule.tracking_uid
    assert planar.reference_type == codes.DCM.ImageRegion
    region = planar.roi
    assert isinstance(region, hd.sr.ImageRegion)
    assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    assert region.value[0].tolist() == region.value[-1].tolist()  # closed
    assert nodule.region is not None
    assert region.value.tolist() == [list(p) for p in nodule.region.points]
    (area,) = planar.get_measurements()
    assert area.name == codes.SCT.Area and area.unit == codes.UCUM.SquareMillimeter
    assert area.value == pytest.approx(8 * 8 * 0.75 * 0.75)  # 8 x 8 pixels of 0.75 mm
    (image,) = hd.sr.utils.find_content_items(region, value_type=hd.sr.ValueTypeValues.IMAGE)
    assert image.referenced_sop_instance_uid == nodule.key_slice
    library = hd.sr.utils.find_content_items(sr.content[0], name=codes.DCM.ImageLibrary)
    entries = hd.sr.utils.find_content_items(
        library[0], value_type=hd.sr.ValueTypeValues.IMAGE, recursive=True
    )
    assert [e.referenced_sop_instance_uid for e in entries] == [nodule.key_slice]


def test_an_ellipse_is_written_as_an_ellipse(
    source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]
) -> None:
    ellipse = PlanarRegion(GraphicType.ELLIPSE, ((12, 30), (20, 30), (16, 26), (16, 34)))
    changed = [*segments[:2], dataclasses.replace(segments[2], region=ellipse)]
    (planar,) = measurement_report(
        _read(source, segmentation, changed).content
    ).get_planar_roi_measurement_groups()
    assert isinstance(planar.roi, hd.sr.ImageRegion)
    assert planar.roi.graphic_type == hd.sr.GraphicTypeValues.ELLIPSE
    assert planar.roi.value.shape == (4, 2)
    (area,) = planar.get_measurements()
    assert area.value == pytest.approx(math.pi / 4 * 6.0 * 6.0)  # axes of 8 px x 0.75 mm


def test_document_marks_provenance_and_evidence(
    source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]
) -> None:
    sr = _read(source, segmentation, segments)
    assert (sr.PreliminaryFlag, sr.VerificationFlag, sr.CompletionFlag) == (
        "PRELIMINARY",
        "UNVERIFIED",
        "PARTIAL",
    )
    # the risk model is a demonstration model: the whole report says so
    assert sr.SeriesDescription == "Radiogate measurements (not for clinical use)"
    assert sr.SeriesNumber == 9904
    models = {e.get("ManufacturerModelName") for e in sr.ContributingEquipmentSequence}
    assert {"pyradiomics", "nodule-risk"} <= models
    (scheme,) = sr.CodingSchemeIdentificationSequence
    assert scheme.CodingSchemeDesignator == "99RADIOGATE"
    assert scheme.CodingSchemeName == "Radiogate private concepts"
    evidence = {uid for _, _, uid, _ in sr.get_evidence()}
    assert evidence == {segmentation.SOPInstanceUID, segments[2].key_slice}


def test_deterministic(
    source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]
) -> None:
    def build() -> bytes:
        sr = build_measurement_report(
            source, segmentation, segments, EXTRACTOR, PROVENANCE, created=CREATED
        )
        return write_and_read(sr)[0]

    assert build() == build()


def test_content_taken_without_a_copy_is_the_same_document(
    source: list[Dataset],
    segmentation: Dataset,
    segments: list[SegmentResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """highdicom is handed the content tree without its defensive deep copy: the bytes are
    those of the copying constructor, and highdicom's copy is back in place afterwards."""
    import contextlib
    import copy

    from highdicom.sr import sop

    from analysis.results import measurements_sr

    def build() -> bytes:
        sr = build_measurement_report(
            source, segmentation, segments, EXTRACTOR, PROVENANCE, created=CREATED
        )
        return write_and_read(sr)[0]

    adopted = build()
    assert sop.deepcopy is copy.deepcopy  # type: ignore[attr-defined]
    assert sop.collect_evidence is hd.sr.utils.collect_evidence  # type: ignore[attr-defined]
    monkeypatch.setattr(measurements_sr, "adopt_content", lambda _content: contextlib.nullcontext())
    assert build() == adopted


def test_evidence_is_checked_against_the_tree_as_highdicom_checks_it(
    source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]
) -> None:
    """The report's references are read off the content tree: the evidence items are
    highdicom's, and an instance left out of the evidence is refused as highdicom refuses it."""
    from highdicom.sr.utils import collect_evidence

    from analysis.results._common import _collect_evidence

    sr = build_measurement_report(source, segmentation, segments, EXTRACTOR, PROVENANCE)
    key = next(ds for ds in source if ds.SOPInstanceUID == segments[2].key_slice)
    evidence = [key, segmentation]
    study = str(sr.StudyInstanceUID)
    expected = collect_evidence(evidence, sr, study_instance_uid=study)
    assert _collect_evidence(collect_evidence, evidence, sr, study) == expected
    assert expected[0] and not expected[1]
    for left_out in evidence:
        rest = [ds for ds in evidence if ds is not left_out]
        with pytest.raises(ValueError, match=str(left_out.SOPInstanceUID)):
            collect_evidence(rest, sr, study_instance_uid=study)
        with pytest.raises(ValueError, match=str(left_out.SOPInstanceUID)):
            _collect_evidence(collect_evidence, rest, sr, study)


def test_inconsistent_inputs_are_refused(
    source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]
) -> None:
    def build(s: list[SegmentResult], src: list[Dataset] = source) -> None:
        build_measurement_report(src, segmentation, s, EXTRACTOR, PROVENANCE)

    retracked = dataclasses.replace(segments[0], tracking_uid="1.2.3.4")
    with pytest.raises(ValueError, match="tracked differently"):
        build([retracked, *segments[1:]])
    unknown = dataclasses.replace(segments[0], segment_number=9)
    with pytest.raises(ValueError, match="segment 9 is not in the segmentation"):
        build([*segments, unknown])
    outside = PlanarRegion(GraphicType.POLYGON, ((60, 60), (70, 60), (70, 70)))
    with pytest.raises(ValueError, match="leaves its key slice"):
        build([*segments[:2], dataclasses.replace(segments[2], region=outside)])
    with pytest.raises(ValueError, match="key slice of segment 3"):
        build(segments, [ds for ds in source if ds.SOPInstanceUID != segments[2].key_slice])
    with pytest.raises(ValueError, match="at least one segment"):
        build([])
    with pytest.raises(ValueError, match="given twice"):
        build([*segments, segments[0]])
    not_seg = Dataset()
    not_seg.update(source[0])
    with pytest.raises(ValueError, match=r"not a .* Segmentation"):
        build_measurement_report(source, not_seg, segments, EXTRACTOR, PROVENANCE)


def test_masks_and_report_agree_on_the_same_segment_numbers(
    source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]
) -> None:
    """A report may cover a subset of the SEG's segments (e.g. lesions only)."""
    sr = _read(source, segmentation, [segments[2]])
    (group,) = measurement_report(sr.content).get_volumetric_roi_measurement_groups()
    assert group.referenced_segment is not None
    assert group.referenced_segment.referenced_segment_numbers == [3]
    assert np.array_equal([int(d.SegmentNumber) for d in segmentation.SegmentSequence], [1, 2, 3])

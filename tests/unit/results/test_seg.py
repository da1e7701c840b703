"""Segmentation: written, strictly read back, parsed again with highdicom; masks, codes,
tracking, references and geometry survive."""

from __future__ import annotations

import dataclasses
import io

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage

from analysis.results import SegmentResult, build_segmentation, draft_segmentation
from tests.unit.results.roundtrip import write_and_read
from tests.unit.results.synthetic import CREATED, PROVENANCE, SEGMENTER


def _read(segmentation: Dataset) -> hd.seg.Segmentation:
    data, _ = write_and_read(segmentation)
    return hd.seg.segread(io.BytesIO(data))


def test_segments_codes_and_tracking_read_back(
    segmentation: Dataset, segments: list[SegmentResult]
) -> None:
    seg = _read(segmentation)
    assert seg.SOPClassUID == SegmentationStorage
    assert seg.segmentation_type == hd.seg.SegmentationTypeValues.BINARY
    assert seg.segment_numbers == [1, 2, 3]
    for segment in segments:
        description = seg.get_segment_description(segment.segment_number)
        assert description.segment_label == segment.label
        assert description.segmented_property_category == segment.category
        assert description.segmented_property_type == segment.type
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        assert description.tracking_uid == segment.tracking_uid
        assert description.tracking_id == segment.tracking_id
        assert seg.get_segment_numbers(tracking_uid=segment.tracking_uid) == [
            segment.segment_number
        ]
        algorithm = description.algorithm_identification
        assert algorithm is not None
        assert algorithm[0].AlgorithmName == "lung-nodule-seg"
        assert algorithm[0].AlgorithmVersion == "0.3.1"
        assert f"model-blake3={SEGMENTER.model_hash}" in algorithm[0].AlgorithmParameters
    modifiers = {
        n: seg.SegmentSequence[n - 1]
        .SegmentedPropertyTypeCodeSequence[0]
        .SegmentedPropertyTypeModifierCodeSequence[0]
        .CodeValue
        for n in (1, 2, 3)
    }
    assert modifiers == {
        1: codes.SCT.Right.value,
        2: codes.SCT.Left.value,
        3: codes.SCT.Right.value,
    }


def test_masks_read_back_pixel_for_pixel(
    segmentation: Dataset, source: list[Dataset], masks: dict[int, np.ndarray]
) -> None:
    seg = _read(segmentation)
    uids = [str(ds.SOPInstanceUID) for ds in source]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2, 3])
    assert pixels.shape == (len(source), 64, 64, 3)
    for number, mask in masks.items():
        assert np.array_equal(pixels[..., number - 1].astype(bool), mask)


def test_only_frames_with_pixels_each_derived_from_its_slice(
    segmentation: Dataset, source: list[Dataset], masks: dict[int, np.ndarray]
) -> None:
    seg = _read(segmentation)
    expected = sum(int(mask.any(axis=(1, 2)).sum()) for mask in masks.values())
    assert seg.NumberOfFrames == expected == 6 + 6 + 3
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        (derivation,) = frame.DerivationImageSequence
        (reference,) = derivation.SourceImageSequence
        slice_ = by_uid[reference.ReferencedSOPInstanceUID]
        assert frame.PlanePositionSequence[0].ImagePositionPatient == slice_.ImagePositionPatient
        number = frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        assert masks[number][source.index(slice_)].any()


def test_same_geometry_and_references_as_the_source(
    segmentation: Dataset, source: list[Dataset]
) -> None:
    seg = _read(segmentation)
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert (seg.Rows, seg.Columns) == (source[0].Rows, source[0].Columns)
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert shared.PixelMeasuresSequence[0].PixelSpacing == source[0].PixelSpacing
    assert (
        shared.PlaneOrientationSequence[0].ImageOrientationPatient
        == source[0].ImageOrientationPatient
    )
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in series.ReferencedInstanceSequence} == {
        ds.SOPInstanceUID for ds in source
    }
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.PatientIdentityRemoved == "YES"


def test_provenance(segmentation: Dataset) -> None:
    seg = _read(segmentation)
    assert seg.SeriesDescription == "Radiogate segmentation"
    assert seg.SeriesNumber == 9903
    assert (seg.Manufacturer, seg.ManufacturerModelName, seg.SoftwareVersions) == (
        "Radiogate",
        "Radiogate",
        "0.1.0",
    )
    assert seg.DeviceSerialNumber == "0"
    assert seg.ContentLabel == "RADIOGATE"
    models = [e.get("ManufacturerModelName") for e in seg.ContributingEquipmentSequence]
    assert "lung-nodule-seg" in models
    assert "InstitutionName" not in seg


def test_deterministic(
    source: list[Dataset], segments: list[SegmentResult], masks: dict[int, np.ndarray]
) -> None:
    def build(m: dict[int, np.ndarray]) -> Dataset:
        return build_segmentation(source, segments, m, SEGMENTER, PROVENANCE, created=CREATED)

    assert write_and_read(build(masks))[0] == write_and_read(build(masks))[0]
    changed = dict(masks)
    changed[3] = masks[3].copy()
    changed[3][2, 30, 16] = False
    assert build(changed).SOPInstanceUID != build(masks).SOPInstanceUID
    assert build(changed).SeriesInstanceUID == build(masks).SeriesInstanceUID


def test_bad_masks_are_refused(
    source: list[Dataset], segments: list[SegmentResult], masks: dict[int, np.ndarray]
) -> None:
    def build(m: dict[int, np.ndarray], s: list[SegmentResult] = segments) -> None:
        build_segmentation(source, s, m, SEGMENTER, PROVENANCE)

    with pytest.raises(ValueError, match="segment 3 is empty"):
        build({**masks, 3: np.zeros_like(masks[3])})
    with pytest.raises(ValueError, match="the source is"):
        build({**masks, 2: masks[2][:, :32]})
    with pytest.raises(ValueError, match="not binary"):
        build({**masks, 1: masks[1].astype(np.uint8) * 2})
    with pytest.raises(ValueError, match="same segment numbers"):
        build({1: masks[1], 2: masks[2]})
    with pytest.raises(ValueError, match=r"numbered 1\.\.2"):
        build({1: masks[1], 3: masks[3]}, [segments[0], segments[2]])
    with pytest.raises(ValueError, match="span 2 series"):
        other = Dataset()
        other.update(source[0])
        other.SeriesInstanceUID = "1.2.3"
        other.SOPInstanceUID = "1.2.3.4"
        build_segmentation([*source[:-1], other], segments, masks, SEGMENTER, PROVENANCE)


@pytest.mark.parametrize("overlapping", [False, True])
def test_overlapping_or_not_the_masks_read_back(
    source: list[Dataset],
    segments: list[SegmentResult],
    masks: dict[int, np.ndarray],
    overlapping: bool,
) -> None:
    """Disjoint segments travel as a label map, overlapping ones as a stack: same frames."""
    masks = {n: m.copy() for n, m in masks.items()}
    masks[1] &= ~masks[3]
    masks[2] &= ~masks[1] & ~masks[3]
    if overlapping:
        masks[3] |= masks[1]
    assert all(m.any() for m in masks.values())
    built = build_segmentation(source, segments, masks, SEGMENTER, PROVENANCE, created=CREATED)
    seg = _read(built)
    assert seg.SegmentsOverlap == ("YES" if overlapping else "NO")
    uids = [str(ds.SOPInstanceUID) for ds in source]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2, 3])
    for number, mask in masks.items():
        assert np.array_equal(pixels[..., number - 1].astype(bool), mask)


def test_a_draft_finished_with_the_measurements_is_the_segmentation_built_at_once(
    source: list[Dataset], segments: list[SegmentResult], masks: dict[int, np.ndarray]
) -> None:
    """The SEG drafted before the features (segments without measurements) and finished with
    the measured segments has the bytes of the one built from the measured segments; its
    instance UID follows the measurements, its series UID does not; a draft finishes once,
    with the segments it was drafted for."""
    measured = [s for s in segments if s.measurements]
    assert measured, "the synthetic segments carry measurements"
    unmeasured = [dataclasses.replace(s, measurements=(), model_outputs=()) for s in segments]
    whole = build_segmentation(source, segments, masks, SEGMENTER, PROVENANCE, created=CREATED)
    assert write_and_read(whole)[0] == write_and_read(_built_at_once(source, segments, masks))[0]
    draft = draft_segmentation(source, unmeasured, masks, SEGMENTER, PROVENANCE, created=CREATED)
    finished = draft.finish(segments)
    assert finished.file_meta.MediaStorageSOPInstanceUID == finished.SOPInstanceUID
    assert write_and_read(finished)[0] == write_and_read(whole)[0]
    with pytest.raises(ValueError, match="finished already"):
        draft.finish(segments)
    other = build_segmentation(source, unmeasured, masks, SEGMENTER, PROVENANCE, created=CREATED)
    assert other.SOPInstanceUID != whole.SOPInstanceUID
    assert other.SeriesInstanceUID == whole.SeriesInstanceUID
    relabelled = [dataclasses.replace(segments[0], label="Other"), *segments[1:]]
    draft = draft_segmentation(source, segments, masks, SEGMENTER, PROVENANCE, created=CREATED)
    with pytest.raises(ValueError, match="differ from the drafted"):
        draft.finish(relabelled)


def _built_at_once(
    source: list[Dataset], segments: list[SegmentResult], masks: dict[int, np.ndarray]
) -> Dataset:
    """The segmentation with its final identity given to highdicom's constructor, as it was
    built before drafts: the reference the draft's late UID must reproduce byte for byte."""
    from analysis.results import _common, seg

    ordered = sorted(segments, key=lambda s: s.segment_number)
    pixels = seg._stack(source, ordered, masks)
    series = _common.check_one_series(source)
    identity = _common.Identity.of(
        _common.ResultKind.SEGMENTATION, series, [SEGMENTER], repr(ordered), seg._digest(pixels)
    )
    with _common.single_component_names():
        built = hd.seg.Segmentation(
            source_images=list(source),
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[
                seg.segment_description(s, SEGMENTER, PROVENANCE) for s in ordered
            ],
            series_instance_uid=identity.series_instance_uid,
            series_number=identity.series_number,
            sop_instance_uid=identity.sop_instance_uid,
            instance_number=1,
            manufacturer=PROVENANCE.manufacturer,
            manufacturer_model_name=PROVENANCE.model_name,
            software_versions=PROVENANCE.software_version,
            device_serial_number=PROVENANCE.device_serial_number,
            content_label=seg.CONTENT_LABEL,
            content_description=identity.series_description,
            series_description=identity.series_description,
            omit_empty_frames=True,
            contributing_equipment=[_common.contributing_equipment(PROVENANCE, SEGMENTER)],
        )
    seg._derive_dimension_organization(built)
    _common.declare_private_schemes(built)
    _common.stamp(built, CREATED)
    return built

"""Masks of a series as a BINARY Segmentation (PS3.3 A.51, C.8.20).

* One segment per structure (Segment Description macro, PS3.3 C.8.20.4): label, Segmented
  Property Category (CID 7150) and Type (CID 7151), laterality as the Segmented Property Type
  Modifier (CID 244), Segment Algorithm Type ``AUTOMATIC`` with the Segmentation Algorithm
  Identification Sequence (name, family, version, ``model-blake3=...`` as parameters), and the
  Tracking ID / Tracking UID that the measurement report repeats.
* Geometry is the source's: same Frame of Reference, Pixel Measures, Plane Orientation and the
  source slice's Plane Position for each frame (Multi-frame Functional Groups, C.7.6.16), so
  viewers overlay it without resampling (Weasis requires it).
* References: Referenced Series Sequence (Common Instance Reference, C.12.2; OHIF keys a SEG to
  its images by it), Source Image Sequence, and per frame the Derivation Image Sequence with
  the slice the frame was segmented on.
* Only frames that contain pixels of their segment are encoded (a frame is one slice of one
  segment); an empty segment is refused rather than written without frames.
* BINARY, not LABELMAP (…66.7, unknown to older validators and viewers), not FRACTIONAL (kept
  for probability maps). Explicit VR Little Endian, bit-packed (PS3.5 8.1.1).

Single-frame source images only (CT/MR/PT slices), the masks on their grid: ``masks[n][i]`` is
segment *n* on ``source[i]``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from analysis.results._common import (
    Identity,
    ResultKind,
    algorithm_sequence,
    check_one_series,
    contributing_equipment,
    declare_private_schemes,
    derived_uid,
    single_component_names,
    stamp,
)
from analysis.results.model import Algorithm, Provenance, SegmentResult

__all__ = [
    "CONTENT_LABEL",
    "SegmentationDraft",
    "build_segmentation",
    "draft_segmentation",
    "segment_description",
]

CONTENT_LABEL = "RADIOGATE"


def segment_description(
    segment: SegmentResult, algorithm: Algorithm, provenance: Provenance
) -> hd.seg.SegmentDescription:
    """The Segment Description of *segment* (PS3.3 C.8.20.4), laterality as type modifier."""
    description = hd.seg.SegmentDescription(
        segment_number=segment.segment_number,
        segment_label=segment.label,
        segmented_property_category=segment.category,
        segmented_property_type=segment.type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_sequence(algorithm, provenance),
        tracking_uid=segment.tracking_uid,
        tracking_id=segment.tracking_id,
    )
    if segment.laterality is not None:
        type_item = description.SegmentedPropertyTypeCodeSequence[0]
        type_item.SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept.from_code(segment.laterality)
        ]
    return description


def _check_geometry(source: Sequence[Dataset]) -> tuple[int, int]:
    first = source[0]
    if int(first.get("NumberOfFrames", 1)) != 1:
        raise ValueError("multi-frame source images are not supported")
    for attribute in ("FrameOfReferenceUID", "Rows", "Columns", "ImageOrientationPatient"):
        values = {str(ds.get(attribute)) for ds in source}
        if len(values) != 1 or first.get(attribute) is None:
            raise ValueError(f"source images differ in, or lack, {attribute}")
    return int(first.Rows), int(first.Columns)


def _stack(
    source: Sequence[Dataset], segments: Sequence[SegmentResult], masks: Mapping[int, np.ndarray]
) -> np.ndarray:
    """The masks as highdicom takes them: a (slices, rows, columns) label map (segment n where
    its mask is set) when no voxel belongs to two segments, else a (slices, rows, columns,
    segments) uint8 stack, segment n at index n-1. Both encode the same BINARY frames (PS3.3
    C.8.20.2); the label map needs a quarter of the memory with three segments and lets
    highdicom skip its overlap check."""
    numbers = [s.segment_number for s in segments]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"segments must be numbered 1..{len(numbers)} in order, not {numbers}")
    if set(masks) != set(numbers):
        raise ValueError("masks and segments do not have the same segment numbers")
    shape = (len(source), *_check_geometry(source))
    label = np.zeros(shape, dtype=np.uint8)
    overlap = False
    for number in numbers:
        mask = np.asarray(masks[number])
        if mask.shape != shape:
            raise ValueError(f"mask of segment {number} is {mask.shape}, the source is {shape}")
        if mask.dtype != np.bool_ and not np.isin(mask, (0, 1)).all():
            raise ValueError(f"mask of segment {number} is not binary")
        if not mask.any():
            raise ValueError(f"segment {number} is empty")
        mask = mask.astype(bool, copy=False)
        if not overlap and label[mask].any():  # a copy of the segment's voxels, not of the grid
            overlap = True
        if not overlap:
            label[mask] = number
    if not overlap:
        return label
    del label
    # segment-major in memory, (slices, rows, columns, segments) as a view: highdicom's overlap
    # check sums over the last axis and it takes each segment's frames in turn, both of which
    # then read contiguous planes instead of striding through the pixels (same values)
    stacked = np.zeros((len(numbers), *shape), dtype=np.uint8)
    for number in numbers:
        stacked[number - 1] = np.asarray(masks[number]).astype(bool, copy=False)
    return np.moveaxis(stacked, 0, -1)


def _derive_dimension_organization(seg: Dataset) -> None:
    """Replace highdicom's random Dimension Organization UID (C.7.6.17) by one derived from
    the SOP Instance UID: the same inputs give the same bytes."""
    uid = derived_uid("dimension-organization", str(seg.SOPInstanceUID))
    for item in [*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence]:
        item.DimensionOrganizationUID = uid


def _digest(pixels: np.ndarray) -> str:
    """SHA-256 of the pixels' bytes in C order, one slice at a time (no copy of the whole)."""
    digest = hashlib.sha256()
    for plane in pixels:
        digest.update(np.ascontiguousarray(plane).data)
    return digest.hexdigest()


def build_segmentation(
    source: Sequence[Dataset],
    segments: Sequence[SegmentResult],
    masks: Mapping[int, np.ndarray],
    algorithm: Algorithm,
    provenance: Provenance,
    *,
    created: datetime.datetime | None = None,
) -> hd.seg.Segmentation:
    """The BINARY Segmentation of *segments* (masks by segment number) on the series *source*
    (its de-identified single-frame images; headers suffice)."""
    draft = draft_segmentation(source, segments, masks, algorithm, provenance, created=created)
    return draft.finish(segments)


def _unmeasured(segment: SegmentResult) -> SegmentResult:
    return dataclasses.replace(segment, measurements=(), model_outputs=())


class SegmentationDraft:
    """A Segmentation built before its segments' measurements are known
    (:func:`draft_segmentation`): everything but its SOP Instance UID, which is derived from
    the measurements too (a changed result gets a new UID), and what follows from that UID.
    :meth:`finish` completes it; the bytes are those :func:`build_segmentation` writes."""

    def __init__(
        self,
        seg: hd.seg.Segmentation,
        *,
        series: str,
        segments: Sequence[SegmentResult],
        algorithm: Algorithm,
        digest: str,
        created: datetime.datetime | None,
    ) -> None:
        self._seg: hd.seg.Segmentation | None = seg
        self._series, self._algorithm, self._digest = series, algorithm, digest
        self._segments = [_unmeasured(s) for s in segments]
        self._created = created

    def finish(self, segments: Sequence[SegmentResult]) -> hd.seg.Segmentation:
        """The Segmentation of *segments*: the drafted ones with their measurements and model
        outputs (ValueError if anything else differs). Once only."""
        if self._seg is None:
            raise ValueError("this draft is finished already")
        ordered = sorted(segments, key=lambda s: s.segment_number)
        if [_unmeasured(s) for s in ordered] != self._segments:
            raise ValueError("the segments differ from the drafted ones")
        identity = Identity.of(
            ResultKind.SEGMENTATION, self._series, [self._algorithm], repr(ordered), self._digest
        )
        seg, self._seg = self._seg, None
        seg.SOPInstanceUID = identity.sop_instance_uid
        seg.file_meta.MediaStorageSOPInstanceUID = UID(identity.sop_instance_uid)
        _derive_dimension_organization(seg)
        declare_private_schemes(seg)
        stamp(seg, self._created)
        return seg


def draft_segmentation(
    source: Sequence[Dataset],
    segments: Sequence[SegmentResult],
    masks: Mapping[int, np.ndarray],
    algorithm: Algorithm,
    provenance: Provenance,
    *,
    created: datetime.datetime | None = None,
) -> SegmentationDraft:
    """:func:`build_segmentation` without the segments' measurements (those of *segments* are
    ignored): the frames, their functional groups and references, the segment descriptions —
    all of the work. :meth:`SegmentationDraft.finish` adds the measured segments' identity."""
    series = check_one_series(source)
    ordered = sorted(segments, key=lambda s: s.segment_number)
    pixels = _stack(source, ordered, masks)
    digest = _digest(pixels)
    # the series' identity does not depend on the inputs; the instance's is set by finish
    identity = Identity.of(ResultKind.SEGMENTATION, series, [algorithm])
    with single_component_names():
        seg = hd.seg.Segmentation(
            source_images=list(source),
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment_description(s, algorithm, provenance) for s in ordered],
            series_instance_uid=identity.series_instance_uid,
            series_number=identity.series_number,
            sop_instance_uid=identity.sop_instance_uid,
            instance_number=1,
            manufacturer=provenance.manufacturer,
            manufacturer_model_name=provenance.model_name,
            software_versions=provenance.software_version,
            device_serial_number=provenance.device_serial_number,
            content_label=CONTENT_LABEL,
            content_description=identity.series_description,
            series_description=identity.series_description,
            omit_empty_frames=True,
            contributing_equipment=[contributing_equipment(provenance, algorithm)],
        )
    return SegmentationDraft(
        seg, series=series, segments=ordered, algorithm=algorithm, digest=digest, created=created
    )

"""What was measured on each segment as a Comprehensive 3D SR (PS3.3 A.35.13) with TID 1500.

Content tree (PS3.16 TID 1500 Measurement Report)::

    Imaging Measurement Report (126000, DCM)
      Language, Observer Type = Device (TID 1004: Radiogate), Procedure Reported (CID 100)
      Image Library: the key slices only
      Imaging Measurements
        for each segment - Measurement Group, TID 1411 Volumetric ROI:
          Tracking Identifier / Tracking Unique Identifier: those of the SEG segment
          Referenced Segment: SEG SOP Instance + segment number; Source series for segmentation
          Finding category (CID 7150), Finding (CID 7151), Finding Site (+ laterality)
          Algorithm Identification (TID 4019): the feature extractor, parameters-blake3=...
          NUM per Measurement (TID 300): concept, value, UCUM unit, Derivation (CID 7464),
              Finding Site; an imputed value has Measurement Method = (IMPUTED, 99RADIOGATE)
          NUM per model output, with the model's own Algorithm Identification and, for each
              top attribution, HAS PROPERTIES NUM (FEATURE-ATTRIB, 99RADIOGATE) in {1} whose
              HAS CONCEPT MOD TEXT (FEATURE-NAME, 99RADIOGATE) names the feature
        for each segment with a key-slice region - Measurement Group, TID 1410 Planar ROI:
          the same tracking identifiers, finding and site
          Image Region (111030, DCM): SCOORD on the key slice, a closed POLYLINE (first point
              repeated last) or an ELLIPSE (OHIF draws only groups with image coordinates;
              volumetric groups are listed, not drawn)
          Area (42798000, SCT) in mm2 of that outline, when the key slice has Pixel Spacing

Intensity statistics arrive as Attenuation Coefficient (112031, DCM) in [hnsf'U] with a CID
7464 derivation, radiomics features with IBSI codes (CID 218) or ``99RADIOGATE`` codes chosen by
``analysis.radiomics``: this module writes the codes it is given. PARTIAL / UNVERIFIED /
PRELIMINARY (PS3.3 C.17.2); the extractor and every model are Contributing Equipment.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import SegmentationStorage

from analysis.results._common import (
    Identity,
    ResultKind,
    adopt_content,
    algorithm_identification,
    check_one_series,
    contributing_equipment,
    declare_private_schemes,
    device_observer_context,
    procedure_reported,
    single_component_names,
    stamp,
)
from analysis.results.codes import FEATURE_ATTRIBUTION, FEATURE_NAME, IMPUTED
from analysis.results.model import (
    Algorithm,
    GraphicType,
    Measurement,
    ModelOutput,
    PlanarRegion,
    Provenance,
    SegmentResult,
)

__all__ = ["AREA", "build_measurement_report"]

_RELATION = hd.sr.RelationshipTypeValues
AREA: Code = codes.SCT.Area  # (42798000, SCT), CID 7469
SQUARE_MILLIMETER: Code = codes.UCUM.SquareMillimeter
# SCOORD has no POLYGON: a closed polygon is a POLYLINE ending where it starts (C.18.6.1.2)
_SCOORD_TYPE = {
    GraphicType.POLYGON: hd.sr.GraphicTypeValues.POLYLINE,
    GraphicType.ELLIPSE: hd.sr.GraphicTypeValues.ELLIPSE,
}


def _measurement(m: Measurement) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=m.concept,
        value=m.value,
        unit=m.unit,
        derivation=m.derivation,
        method=IMPUTED if m.imputed else None,
        finding_sites=None if m.finding_site is None else [hd.sr.FindingSite(m.finding_site)],
    )


def _model_output(output: ModelOutput) -> hd.sr.Measurement:
    measurement = hd.sr.Measurement(
        name=output.concept,
        value=output.value,
        unit=output.unit,
        algorithm_id=algorithm_identification(output.algorithm),
    )
    for attribution in output.attributions:
        item = hd.sr.NumContentItem(
            name=FEATURE_ATTRIBUTION,
            value=attribution.contribution,
            unit=codes.UCUM.NoUnits,
            relationship_type=_RELATION.HAS_PROPERTIES,
        )
        item.ContentSequence = hd.sr.ContentSequence(
            [
                hd.sr.TextContentItem(
                    name=FEATURE_NAME,
                    value=attribution.feature,
                    relationship_type=_RELATION.HAS_CONCEPT_MOD,
                )
            ]
        )
        measurement[0].ContentSequence.append(item)
    return measurement


def _finding_sites(segment: SegmentResult) -> list[hd.sr.FindingSite] | None:
    if segment.finding_site is None:
        return None
    return [hd.sr.FindingSite(segment.finding_site, laterality=segment.laterality)]


def _check_segmentation(
    segmentation: Dataset, series: str, segments: Sequence[SegmentResult]
) -> None:
    """The SEG is of *series* and holds each segment with the same tracking identifiers."""
    if segmentation.SOPClassUID != SegmentationStorage:
        raise ValueError("the referenced object is not a (binary or fractional) Segmentation")
    referenced = {str(item.SeriesInstanceUID) for item in segmentation.ReferencedSeriesSequence}
    if series not in referenced:
        raise ValueError("the segmentation does not reference the source series")
    described = {int(d.SegmentNumber): d for d in segmentation.SegmentSequence}
    for segment in segments:
        item = described.get(segment.segment_number)
        if item is None:
            raise ValueError(f"segment {segment.segment_number} is not in the segmentation")
        if (str(item.get("TrackingUID")), str(item.get("TrackingID"))) != (
            segment.tracking_uid,
            segment.tracking_id,
        ):
            raise ValueError(f"segment {segment.segment_number} is tracked differently in SEG")


def _volumetric(
    segment: SegmentResult, segmentation: Dataset, series: str, algorithm: Algorithm
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=segment.tracking_uid, identifier=segment.tracking_id
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=segmentation.SOPClassUID,
            sop_instance_uid=segmentation.SOPInstanceUID,
            segment_number=segment.segment_number,
            source_series=hd.sr.SourceSeriesForSegmentation(series),
        ),
        finding_type=segment.type,
        finding_category=segment.category,
        finding_sites=_finding_sites(segment),
        algorithm_id=algorithm_identification(algorithm),
        measurements=[_measurement(m) for m in segment.measurements]
        + [_model_output(o) for o in segment.model_outputs],
    )


def _planar(
    segment: SegmentResult, outline: PlanarRegion, key_slice: Dataset, algorithm: Algorithm
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    if not outline.fits(int(key_slice.Rows), int(key_slice.Columns)):
        raise ValueError(f"the region of segment {segment.segment_number} leaves its key slice")
    region = hd.sr.ImageRegion(
        graphic_type=_SCOORD_TYPE[outline.graphic_type],
        graphic_data=np.array(outline.points, dtype=float),
        source_image=hd.sr.SourceImageForRegion.from_source_image(key_slice),
    )
    measurements = []
    spacing = key_slice.get("PixelSpacing")
    if spacing is not None and len(spacing) == 2:
        area = outline.area(float(spacing[0]), float(spacing[1]))
        measurements.append(hd.sr.Measurement(name=AREA, value=area, unit=SQUARE_MILLIMETER))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=segment.tracking_uid, identifier=segment.tracking_id
        ),
        referenced_region=region,
        finding_type=segment.type,
        finding_category=segment.category,
        finding_sites=_finding_sites(segment),
        algorithm_id=algorithm_identification(algorithm),
        measurements=measurements or None,
    )


def build_measurement_report(
    source: Sequence[Dataset],
    segmentation: Dataset,
    segments: Sequence[SegmentResult],
    algorithm: Algorithm,
    provenance: Provenance,
    *,
    created: datetime.datetime | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The measurement report of *segments* of *segmentation* (the SEG of the series *source*,
    whose de-identified datasets are given; headers suffice, key slices must be among them).

    *algorithm* computed the measurements (e.g. pyradiomics with its parameter-file hash);
    the models behind the segments' outputs are named in their own outputs.
    """
    if not segments:
        raise ValueError("a measurement report needs at least one segment")
    if len({s.segment_number for s in segments}) != len(segments):
        raise ValueError("a segment is given twice")
    series = check_one_series(source)
    _check_segmentation(segmentation, series, segments)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source}
    ordered = sorted(segments, key=lambda s: s.segment_number)
    key_slices: dict[str, Dataset] = {}
    for segment in ordered:
        if segment.key_slice is not None:
            if segment.key_slice not in by_uid:
                raise ValueError(f"key slice of segment {segment.segment_number} is not a source")
            key_slices[segment.key_slice] = by_uid[segment.key_slice]
    groups: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    ] = [_volumetric(s, segmentation, series, algorithm) for s in ordered]
    groups += [
        _planar(s, s.region, key_slices[s.key_slice], algorithm)
        for s in ordered
        if s.region is not None and s.key_slice is not None
    ]
    models = {o.algorithm: None for s in ordered for o in s.model_outputs}
    algorithms = [algorithm, *(m for m in models if m != algorithm)]
    identity = Identity.of(
        ResultKind.MEASUREMENTS, series, algorithms, str(segmentation.SOPInstanceUID), repr(ordered)
    )
    report = hd.sr.MeasurementReport(
        observation_context=device_observer_context(provenance),
        procedure_reported=procedure_reported(source[0]),
        imaging_measurements=groups,
        referenced_images=list(key_slices.values()) or None,
    )
    content = report[0]
    with single_component_names(), adopt_content(content):
        sr = hd.sr.Comprehensive3DSR(
            evidence=[*key_slices.values(), segmentation],
            content=content,
            series_instance_uid=identity.series_instance_uid,
            series_number=identity.series_number,
            sop_instance_uid=identity.sop_instance_uid,
            instance_number=1,
            manufacturer=provenance.manufacturer,
            is_complete=False,
            is_final=False,
            is_verified=False,
            contributing_equipment=[contributing_equipment(provenance, a) for a in algorithms],
            series_description=identity.series_description,
            manufacturer_model_name=provenance.model_name,
            software_versions=provenance.software_version,
            device_serial_number=provenance.device_serial_number,
        )
    declare_private_schemes(sr)
    stamp(sr, created)
    return sr

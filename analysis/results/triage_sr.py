"""The triage result of a series as a Comprehensive 3D SR (PS3.3 A.35.13) with TID 1500.

Content tree (PS3.16 TID 1500 Measurement Report, root ``(126000, DCM, "Imaging Measurement
Report")`` so that OHIF lists it)::

    Imaging Measurement Report
      Language, Observer Type = Device (TID 1004: Radiogate), Procedure Reported (CID 100)
      Image Library: the flagged images only (one entry each; never the whole series)
      Imaging Measurements
        Measurement Group (TID 1501, study level)
          Tracking Identifier "Triage", Tracking Unique Identifier (derived from the series)
          Finding (121071, DCM) = the reason code
          Algorithm Identification (TID 4019): name, version, model-blake3=..., family
          Source of measurement: each flagged image
          Certainty of Finding (111012, DCM) NUM in % (UCUM), the model score, INFERRED FROM
              an Image Region SCOORD (closed POLYLINE round the whole image) on each flagged
              image - the model scored whole slices - or, when none is flagged, on the middle
              image of the series, which the lane is about as a whole
          Priority (260870009, SCT) = CID 7035 ACR Category 1/2/3 Actionable Finding, when the
              finding is actionable
          Triage lane (TRIAGE-LANE, 99RADIOGATE) = Critical / Urgent / Routine lane

The region is there for viewers as much as for readers: OHIF v3 fails on a measurement group of
a TID 1500 report that it cannot place on an image (a group with no SCOORD and no NUM inferred
from one; docs/viewers.md), and lists the certainty with the region drawn on its image.

Completion PARTIAL, Verification UNVERIFIED and Preliminary Flag PRELIMINARY (PS3.3 C.17.2):
no radiologist has confirmed it. The triage algorithm is a Contributing Equipment item.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from analysis.results._common import (
    Identity,
    ResultKind,
    adopt_content,
    algorithm_identification,
    contributing_equipment,
    declare_private_schemes,
    derived_uid,
    device_observer_context,
    flagged_datasets,
    procedure_reported,
    single_component_names,
    stamp,
)
from analysis.results.codes import (
    ACR_CATEGORY,
    CERTAINTY_OF_FINDING,
    LANE,
    PERCENT,
    PRIORITY,
    TRIAGE_LANE,
)
from analysis.results.model import Algorithm, Provenance, TriageFinding

__all__ = ["TRIAGE_TRACKING_ID", "build_triage_sr"]

TRIAGE_TRACKING_ID = "Triage"


def _whole_image(ds: Dataset) -> hd.sr.CoordinatesForMeasurement:
    """A closed POLYLINE round the whole of *ds* (image coordinates, PS3.3 C.18.6.1.1)."""
    rows, cols = float(ds.Rows), float(ds.Columns)
    corners = [(0.0, 0.0), (cols, 0.0), (cols, rows), (0.0, rows), (0.0, 0.0)]
    return hd.sr.CoordinatesForMeasurement(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array(corners),
        source_image=hd.sr.SourceImageForRegion.from_source_image(ds),
    )


def _anchors(source: Sequence[Dataset], flagged: Sequence[Dataset]) -> list[Dataset]:
    """The images the certainty is placed on: the flagged ones, else the series' middle one
    (by Instance Number, then SOP Instance UID)."""
    if flagged:
        return list(flagged)
    ordered = sorted(source, key=lambda ds: (int(ds.get("InstanceNumber") or 0),
                                             str(ds.SOPInstanceUID)))  # fmt: skip
    return [ordered[len(ordered) // 2]]


def _group(
    finding: TriageFinding,
    algorithm: Algorithm,
    flagged: Sequence[Dataset],
    anchors: Sequence[Dataset],
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    evaluations = []
    if finding.category is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(PRIORITY, ACR_CATEGORY[finding.category]))
    evaluations.append(hd.sr.QualitativeEvaluation(TRIAGE_LANE, LANE[finding.lane]))
    certainty = hd.sr.Measurement(
        name=CERTAINTY_OF_FINDING,
        value=finding.certainty,
        unit=PERCENT,
        referenced_coordinates=[_whole_image(ds) for ds in anchors],
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid("triage-finding", finding.series_instance_uid),
            identifier=TRIAGE_TRACKING_ID,
        ),
        finding_type=finding.reason,
        algorithm_id=algorithm_identification(algorithm),
        measurements=[certainty],
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in flagged]
        or None,
    )


def build_triage_sr(
    source: Sequence[Dataset],
    finding: TriageFinding,
    algorithm: Algorithm,
    provenance: Provenance,
    *,
    created: datetime.datetime | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The triage SR of *finding* on the series *source* (its de-identified datasets; headers
    suffice, every flagged image must be among them).

    The SR inherits patient and study from the source; its evidence is the flagged images (the
    whole source when none is flagged, e.g. a rule-based triage).
    """
    flagged = flagged_datasets(source, finding)
    anchors = _anchors(source, flagged)
    series = finding.series_instance_uid
    identity = Identity.of(ResultKind.TRIAGE, series, [algorithm], repr(finding))
    report = hd.sr.MeasurementReport(
        observation_context=device_observer_context(provenance),
        procedure_reported=procedure_reported(source[0]),
        imaging_measurements=[_group(finding, algorithm, flagged, anchors)],
        referenced_images=anchors,
    )
    content = report[0]
    with single_component_names(), adopt_content(content):
        sr = hd.sr.Comprehensive3DSR(
            evidence=flagged or list(source),
            content=content,
            series_instance_uid=identity.series_instance_uid,
            series_number=identity.series_number,
            sop_instance_uid=identity.sop_instance_uid,
            instance_number=1,
            manufacturer=provenance.manufacturer,
            is_complete=False,
            is_final=False,
            is_verified=False,
            contributing_equipment=[contributing_equipment(provenance, algorithm)],
            series_description=identity.series_description,
            manufacturer_model_name=provenance.model_name,
            software_versions=provenance.software_version,
            device_serial_number=provenance.device_serial_number,
        )
    declare_private_schemes(sr)
    stamp(sr, created)
    return sr

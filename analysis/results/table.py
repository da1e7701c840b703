"""A study's measurements as table rows with the columns of NCI Imaging Data Commons'
``quantitative_measurements`` table, plus Radiogate's provenance columns.

IDC derives that table from TID 1500 measurement reports: one row per NUM content item of a
measurement group (PS3.16 TID 1411 / TID 1410 row "Measurement", TID 300), with the group's
tracking identifiers, referenced segment, finding and finding site. :func:`measurement_rows`
gives exactly the rows IDC's query would extract from the report that
:func:`analysis.results.build_measurement_report` writes for the same segments, in the same
group order (volumetric groups by segment number from 0, then the planar groups of the segments
that have a key-slice region), so that the report and the table agree by construction (checked
by the tests, which read the report back).

Columns (:data:`IDC_COLUMNS`, in the order of IDC's BigQuery schema; coded values are records of
CodeValue, CodingSchemeDesignator, [CodingSchemeVersion,] CodeMeaning as in that schema):

=============================  ===========================================================
``PatientID``                  the (de-identified) Patient ID of the report
``SOPInstanceUID``             the report's SOP Instance UID
``SeriesInstanceUID``          the report's series
``SeriesDescription``          the report's Series Description
``measurementGroup_number``    the group within the report, from 0
``segmentationInstanceUID``    the SEG's SOP Instance UID (Referenced Segment, 121191) (*)
``segmentationSeriesUID``      the SEG's Series Instance UID (*)
``segmentationSegmentNumber``  the segment number in the SEG (*)
``sourceSegmentedSeriesUID``   the image series that was segmented (121232) (*)
``trackingIdentifier``         Tracking Identifier (112039)
``trackingUniqueIdentifier``   Tracking Unique Identifier (112040)
``Quantity``                   the NUM's concept name
``derivationModifier``         its Derivation (121401), CID 7464
``Value``                      its numeric value
``Units``                      its unit (UCUM)
``finding``                    the group's Finding (121071)
``findingSite``                the group's Finding Site (363698007)
``lateralityModifier``         the finding site's Laterality (272741003)
=============================  ===========================================================

(*) empty for the rows of a planar group (TID 1410 references an image region on the key
slice, not a segment), as in IDC's table; the tracking identifiers link them to the segment.

Provenance (:data:`PROVENANCE_COLUMNS`): ``StudyInstanceUID``; ``algorithmName`` and
``algorithmVersion`` of what produced the value (the feature extractor, or the model for a
model output); ``parameterFileBlake3`` (the extractor's parameter file; for a model output, that
of its input features); ``pyradiomicsVersion``; ``modelBlake3`` (model outputs); ``imputed``
(True when the value was supplied by an imputer: Measurement Method IMPUTED in the report).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from analysis.results.model import Algorithm, SegmentResult

__all__ = [
    "CODE_COLUMNS",
    "CSV_COLUMNS",
    "IDC_COLUMNS",
    "PROVENANCE_COLUMNS",
    "CodedValue",
    "MeasurementRow",
    "ReportReference",
    "measurement_rows",
]

#: Record columns and their fields, in IDC's order (Quantity and derivationModifier have no
#: CodingSchemeVersion in IDC's schema).
CODE_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "Quantity": ("CodeValue", "CodingSchemeDesignator", "CodeMeaning"),
    "derivationModifier": ("CodeValue", "CodingSchemeDesignator", "CodeMeaning"),
    "Units": ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning"),
    "finding": ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning"),
    "findingSite": ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning"),
    "lateralityModifier": (
        "CodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "CodeMeaning",
    ),
}
IDC_COLUMNS: tuple[str, ...] = (
    "PatientID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "measurementGroup_number",
    "segmentationInstanceUID",
    "segmentationSeriesUID",
    "segmentationSegmentNumber",
    "sourceSegmentedSeriesUID",
    "trackingIdentifier",
    "trackingUniqueIdentifier",
    "Quantity",
    "derivationModifier",
    "Value",
    "Units",
    "finding",
    "findingSite",
    "lateralityModifier",
)
PROVENANCE_COLUMNS: tuple[str, ...] = (
    "StudyInstanceUID",
    "algorithmName",
    "algorithmVersion",
    "parameterFileBlake3",
    "pyradiomicsVersion",
    "modelBlake3",
    "imputed",
)
#: Flat column names (records as ``Quantity.CodeValue`` ...), for formats without records (CSV).
CSV_COLUMNS: tuple[str, ...] = tuple(
    f"{column}.{part}" if column in CODE_COLUMNS else column
    for column in (*IDC_COLUMNS, *PROVENANCE_COLUMNS)
    for part in CODE_COLUMNS.get(column, ("",))
)


@dataclass(frozen=True)
class CodedValue:
    """One coded value as IDC's records hold it."""

    value: str
    scheme: str
    meaning: str
    version: str | None = None

    @classmethod
    def of(cls, code: Code | None) -> CodedValue | None:
        if code is None:
            return None
        return cls(code.value, code.scheme_designator, code.meaning, code.scheme_version)

    def record(self, column: str) -> dict[str, str | None]:
        """The record of *column* (its fields only)."""
        full = {
            "CodeValue": self.value,
            "CodingSchemeDesignator": self.scheme,
            "CodingSchemeVersion": self.version,
            "CodeMeaning": self.meaning,
        }
        return {part: full[part] for part in CODE_COLUMNS[column]}


@dataclass(frozen=True)
class ReportReference:
    """What identifies the report, its SEG and the segmented series (all in the same study)."""

    patient_id: str
    study_instance_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    series_description: str
    segmentation_instance_uid: str
    segmentation_series_uid: str
    source_series_uid: str

    @classmethod
    def of(cls, report: Dataset, segmentation: Dataset) -> ReportReference:
        """From the measurement report and its SEG as built (in memory; nothing is read)."""
        referenced = [str(s.SeriesInstanceUID) for s in segmentation.ReferencedSeriesSequence]
        if len(referenced) != 1:
            raise ValueError("the segmentation must reference exactly one source series")
        if report.StudyInstanceUID != segmentation.StudyInstanceUID:
            raise ValueError("the report and the segmentation are of different studies")
        return cls(
            patient_id=str(report.PatientID),
            study_instance_uid=str(report.StudyInstanceUID),
            sop_instance_uid=str(report.SOPInstanceUID),
            series_instance_uid=str(report.SeriesInstanceUID),
            series_description=str(report.get("SeriesDescription", "")),
            segmentation_instance_uid=str(segmentation.SOPInstanceUID),
            segmentation_series_uid=str(segmentation.SeriesInstanceUID),
            source_series_uid=referenced[0],
        )


@dataclass(frozen=True)
class MeasurementRow:
    """One row: a NUM of the report with its group's context and Radiogate's provenance."""

    reference: ReportReference
    group: int
    segment_number: int | None
    """None in a planar group (TID 1410 references an image region, not a segment): the
    segmentation and source series columns are empty there too, as in IDC."""
    tracking_id: str
    tracking_uid: str
    quantity: CodedValue
    derivation: CodedValue | None
    value: float
    units: CodedValue
    finding: CodedValue
    finding_site: CodedValue | None
    laterality: CodedValue | None
    algorithm_name: str
    algorithm_version: str
    parameter_blake3: str | None
    pyradiomics_version: str | None
    model_blake3: str | None
    imputed: bool

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"value of {self.quantity.meaning!r} is not finite")

    def record(self) -> dict[str, object]:
        """The row by column name (:data:`IDC_COLUMNS` then :data:`PROVENANCE_COLUMNS`),
        coded values as records (dicts of their fields), absent ones as None."""
        ref = self.reference
        volumetric = self.segment_number is not None
        coded = self._coded()
        plain: dict[str, object] = {
            "PatientID": ref.patient_id,
            "SOPInstanceUID": ref.sop_instance_uid,
            "SeriesInstanceUID": ref.series_instance_uid,
            "SeriesDescription": ref.series_description,
            "measurementGroup_number": self.group,
            "segmentationInstanceUID": ref.segmentation_instance_uid if volumetric else None,
            "segmentationSeriesUID": ref.segmentation_series_uid if volumetric else None,
            "segmentationSegmentNumber": self.segment_number,
            "sourceSegmentedSeriesUID": ref.source_series_uid if volumetric else None,
            "trackingIdentifier": self.tracking_id,
            "trackingUniqueIdentifier": self.tracking_uid,
            "Value": self.value,
            "StudyInstanceUID": ref.study_instance_uid,
            "algorithmName": self.algorithm_name,
            "algorithmVersion": self.algorithm_version,
            "parameterFileBlake3": self.parameter_blake3,
            "pyradiomicsVersion": self.pyradiomics_version,
            "modelBlake3": self.model_blake3,
            "imputed": self.imputed,
        }
        out: dict[str, object] = {}
        for column in (*IDC_COLUMNS, *PROVENANCE_COLUMNS):
            if column in CODE_COLUMNS:
                value = coded[column]
                out[column] = None if value is None else value.record(column)
            else:
                out[column] = plain[column]
        return out

    def flat(self) -> dict[str, object]:
        """The row by :data:`CSV_COLUMNS` (records spread over dotted columns)."""
        coded = self._coded()
        out: dict[str, object] = {}
        for column, value in self.record().items():
            if column in CODE_COLUMNS:
                record = coded[column]
                fields = record.record(column) if record is not None else {}
                for part in CODE_COLUMNS[column]:
                    out[f"{column}.{part}"] = fields.get(part)
            else:
                out[column] = value
        return out

    def _coded(self) -> dict[str, CodedValue | None]:
        return {
            "Quantity": self.quantity,
            "derivationModifier": self.derivation,
            "Units": self.units,
            "finding": self.finding,
            "findingSite": self.finding_site,
            "lateralityModifier": self.laterality,
        }


_AREA: Code = codes.SCT.Area
_SQUARE_MILLIMETER: Code = codes.UCUM.SquareMillimeter


def measurement_rows(
    reference: ReportReference,
    segments: Sequence[SegmentResult],
    extractor: Algorithm,
    *,
    pyradiomics_version: str | None = None,
    pixel_spacing: Mapping[str, tuple[float, float]] | None = None,
) -> list[MeasurementRow]:
    """The rows of the report built from *segments* measured by *extractor* (see the module
    doc). *pixel_spacing* gives the Pixel Spacing (row, column; mm) of each key slice that has
    one, by SOP Instance UID: the report adds an Area to a planar group only then."""
    if len({s.segment_number for s in segments}) != len(segments):
        raise ValueError("a segment is given twice")
    ordered = sorted(segments, key=lambda s: s.segment_number)
    spacing = pixel_spacing or {}
    rows: list[MeasurementRow] = []

    def row(
        group: int, segment: SegmentResult, concept: Code, value: float, unit: Code, *,
        derivation: Code | None = None, algorithm: Algorithm = extractor, imputed: bool = False,
        planar: bool = False,
    ) -> MeasurementRow:  # fmt: skip
        return MeasurementRow(
            reference=reference,
            group=group,
            segment_number=None if planar else segment.segment_number,
            tracking_id=segment.tracking_id,
            tracking_uid=segment.tracking_uid,
            quantity=_coded(concept),
            derivation=CodedValue.of(derivation),
            value=float(value),
            units=_coded(unit),
            finding=_coded(segment.type),
            finding_site=CodedValue.of(segment.finding_site),
            laterality=None if segment.finding_site is None else CodedValue.of(segment.laterality),
            algorithm_name=algorithm.name,
            algorithm_version=algorithm.version,
            parameter_blake3=algorithm.parameter_hash or extractor.parameter_hash,
            pyradiomics_version=pyradiomics_version,
            model_blake3=algorithm.model_hash if algorithm is not extractor else None,
            imputed=imputed,
        )

    for group, segment in enumerate(ordered):
        for m in segment.measurements:
            rows.append(
                row(
                    group,
                    segment,
                    m.concept,
                    m.value,
                    m.unit,
                    derivation=m.derivation,
                    imputed=m.imputed,
                )
            )
        for o in segment.model_outputs:
            rows.append(row(group, segment, o.concept, o.value, o.unit, algorithm=o.algorithm))
    group = len(ordered)
    for segment in ordered:
        if segment.region is None or segment.key_slice is None:
            continue
        if segment.key_slice in spacing:
            area = segment.region.area(*spacing[segment.key_slice])
            rows.append(row(group, segment, _AREA, area, _SQUARE_MILLIMETER, planar=True))
        group += 1
    return rows


def _coded(code: Code) -> CodedValue:
    coded = CodedValue.of(code)
    assert coded is not None
    return coded

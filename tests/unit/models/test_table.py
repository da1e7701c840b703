"""The tabular export rows: IDC's quantitative_measurements columns, and exactly the rows IDC's
query extracts from the measurement report built from the same segments (read back from its
bytes and walked here the way that query walks it)."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset

from analysis.results.table import CSV_COLUMNS, IDC_COLUMNS, PROVENANCE_COLUMNS, ReportReference
from tests.unit.models.conftest import study_rows
from tests.unit.results.synthetic import EXTRACTOR

#: The columns of IDC's BigQuery schema (ImagingDataCommons/etl_flow, derived_data_views/schema/
#: quantitative_measurements.json), in its order.
IDC_SCHEMA = [
    "PatientID", "SOPInstanceUID", "SeriesInstanceUID", "SeriesDescription",
    "measurementGroup_number", "segmentationInstanceUID", "segmentationSeriesUID",
    "segmentationSegmentNumber", "sourceSegmentedSeriesUID", "trackingIdentifier",
    "trackingUniqueIdentifier", "Quantity", "derivationModifier", "Value", "Units", "finding",
    "findingSite", "lateralityModifier",
]  # fmt: skip


def _concept(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return (str(code.CodeValue), str(code.CodingSchemeDesignator))


def _code(item: Dataset | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {
        "CodeValue": item.CodeValue,
        "CodingSchemeDesignator": item.CodingSchemeDesignator,
        "CodingSchemeVersion": item.get("CodingSchemeVersion"),
        "CodeMeaning": item.CodeMeaning,
    }


def _children(item: Dataset, concept: tuple[str, str]) -> list[Dataset]:
    return [c for c in item.get("ContentSequence", []) if _concept(c) == concept]


def idc_rows(report: Dataset) -> list[dict[str, Any]]:
    """What IDC's quantitative_measurements query makes of *report*: every NUM directly in a
    measurement group of Imaging Measurements (126010), with the group's context."""
    (measurements,) = _children(report, ("126010", "DCM"))
    out = []
    for number, group in enumerate(_children(measurements, ("125007", "DCM"))):
        (tracking,) = _children(group, ("112039", "DCM"))
        (tracking_uid,) = _children(group, ("112040", "DCM"))
        (finding,) = _children(group, ("121071", "DCM"))
        sites = _children(group, ("363698007", "SCT"))
        laterality = _children(sites[0], ("272741003", "SCT")) if sites else []
        segment = _children(group, ("121191", "DCM"))
        source = _children(group, ("121232", "DCM"))
        for num in group.ContentSequence:
            if num.ValueType != "NUM":
                continue
            value = num.MeasuredValueSequence[0]
            derivation = _children(num, ("121401", "DCM"))
            method = _children(num, ("370129005", "SCT"))
            out.append(
                {
                    "PatientID": report.PatientID,
                    "SOPInstanceUID": report.SOPInstanceUID,
                    "SeriesInstanceUID": report.SeriesInstanceUID,
                    "SeriesDescription": report.SeriesDescription,
                    "measurementGroup_number": number,
                    "segmentationInstanceUID": (
                        segment[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                        if segment
                        else None
                    ),
                    "segmentationSegmentNumber": (
                        int(segment[0].ReferencedSOPSequence[0].ReferencedSegmentNumber)
                        if segment
                        else None
                    ),
                    "sourceSegmentedSeriesUID": source[0].UID if source else None,
                    "trackingIdentifier": tracking.TextValue,
                    "trackingUniqueIdentifier": tracking_uid.UID,
                    "Quantity": _code(num.ConceptNameCodeSequence[0]),
                    "derivationModifier": (
                        _code(derivation[0].ConceptCodeSequence[0]) if derivation else None
                    ),
                    "Value": float(value.NumericValue),
                    "Units": _code(value.MeasurementUnitsCodeSequence[0]),
                    "finding": _code(finding.ConceptCodeSequence[0]),
                    "findingSite": _code(sites[0].ConceptCodeSequence[0]) if sites else None,
                    "lateralityModifier": (
                        _code(laterality[0].ConceptCodeSequence[0]) if laterality else None
                    ),
                    "imputed": bool(method)
                    and method[0].ConceptCodeSequence[0].CodeValue == "IMPUTED",
                }
            )
    return out


def test_the_columns_are_idcs_then_ours() -> None:
    assert list(IDC_COLUMNS) == IDC_SCHEMA
    assert PROVENANCE_COLUMNS == (
        "StudyInstanceUID", "algorithmName", "algorithmVersion", "parameterFileBlake3",
        "pyradiomicsVersion", "modelBlake3", "imputed",
    )  # fmt: skip
    assert list(CSV_COLUMNS[:6]) == IDC_SCHEMA[:6] and "Quantity.CodeValue" in CSV_COLUMNS
    assert "Units.CodingSchemeVersion" in CSV_COLUMNS
    assert "Quantity.CodingSchemeVersion" not in CSV_COLUMNS  # as IDC's schema has it


def test_rows_are_what_idc_extracts_from_the_report(study: dict[str, Any]) -> None:
    rows = study_rows(study)
    expected = idc_rows(study["report"])
    assert len(rows) == len(expected) > 10
    seg_series = study["segmentation"].SeriesInstanceUID
    for row, idc in zip(rows, expected, strict=True):
        record = row.record()
        assert list(record) == [*IDC_COLUMNS, *PROVENANCE_COLUMNS]
        for column, value in idc.items():
            if column == "imputed":
                assert record["imputed"] is value
            elif column in ("Quantity", "derivationModifier") and value is not None:
                assert record[column] == {
                    k: v for k, v in value.items() if k != "CodingSchemeVersion"
                }
            else:
                assert record[column] == value, column
        planar = idc["segmentationInstanceUID"] is None
        assert record["segmentationSeriesUID"] == (None if planar else seg_series)
        assert record["StudyInstanceUID"] == study["report"].StudyInstanceUID


def test_provenance_columns(study: dict[str, Any]) -> None:
    rows = [r.record() for r in study_rows(study)]
    measured = [r for r in rows if r["modelBlake3"] is None]
    modelled = [r for r in rows if r["modelBlake3"] is not None]
    assert {r["algorithmName"] for r in measured} == {EXTRACTOR.name}
    assert {r["parameterFileBlake3"] for r in rows} == {EXTRACTOR.parameter_hash}
    assert {r["pyradiomicsVersion"] for r in rows} == {"3.0.1"}
    (risk,) = modelled
    assert risk["algorithmName"] == "nodule-risk" and risk["modelBlake3"] == "d" * 64
    (imputed,) = [r for r in rows if r["imputed"]]
    quantity = imputed["Quantity"]
    assert isinstance(quantity, dict) and quantity["CodeMeaning"] == "Joint Entropy of GLCM"


def test_rows_flatten_for_csv(study: dict[str, Any]) -> None:
    row = study_rows(study)[1]
    flat = row.flat()
    assert list(flat) == list(CSV_COLUMNS)
    assert flat["Quantity.CodeValue"] == "112031" and flat["derivationModifier.CodeValue"]
    assert flat["Units.CodeValue"] == "[hnsf'U]"


def test_reference_checks() -> None:
    report, segmentation = Dataset(), Dataset()
    report.StudyInstanceUID, segmentation.StudyInstanceUID = "1.2.3", "1.2.4"
    item = Dataset()
    item.SeriesInstanceUID = "1.2.3.4"
    segmentation.ReferencedSeriesSequence = [item]
    with pytest.raises(ValueError, match="different studies"):
        ReportReference.of(report, segmentation)

"""The result model validates itself: each rule can fail, with a message naming the field."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from analysis.results import (
    ActionableCategory,
    Algorithm,
    Attribution,
    GraphicType,
    Lane,
    Measurement,
    ModelOutput,
    PlanarRegion,
    Provenance,
    SegmentResult,
    TriageFinding,
)
from tests.unit.results.synthetic import EXTRACTOR, TRIAGE_MODEL

HASH = "0123456789abcdef" * 4
HU = codes.UCUM.HounsfieldUnit


def _finding(**changes: Any) -> TriageFinding:
    values: dict[str, Any] = {
        "lane": Lane.URGENT,
        "category": ActionableCategory.CATEGORY_2,
        "certainty": 50.0,
        "reason": codes.SCT.Nodule,
        "flagged": ("1.2.3.4",),
        "series_instance_uid": "1.2.3",
    }
    return TriageFinding(**{**values, **changes})


def _lesion(**changes: Any) -> SegmentResult:
    values: dict[str, Any] = {
        "segment_number": 1,
        "label": "Nodule",
        "category": codes.SCT.MorphologicallyAbnormalStructure,
        "type": codes.SCT.Nodule,
        "tracking_uid": generate_uid(),
        "tracking_id": "nodule 1",
        "key_slice": "1.2.3.4",
        "region": PlanarRegion(GraphicType.POLYGON, ((1, 1), (5, 1), (5, 5))),
    }
    return SegmentResult(**{**values, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_hash": None, "parameter_hash": None}, "neither a model nor a parameter hash"),
        ({"model_hash": "ABC"}, "64 lowercase hex"),
        ({"model_hash": HASH.upper()}, "64 lowercase hex"),
        ({"name": ""}, "algorithm name is empty"),
        ({"name": "x" * 65}, "Long String"),
        ({"version": "1\\2"}, "Long String"),
        ({"family": "AI"}, "pydicom Code"),
    ],
)
def test_algorithm_rules(changes: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        dataclasses.replace(Algorithm("m", "1", model_hash=HASH), **changes)


def test_algorithm_parameters_name_each_hash() -> None:
    both = Algorithm("m", "1", model_hash=HASH, parameter_hash="f" * 64)
    assert both.parameters == {"model-blake3": HASH, "parameters-blake3": "f" * 64}
    assert EXTRACTOR.parameters == {"parameters-blake3": "c" * 64}
    assert TRIAGE_MODEL.demonstration


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"certainty": 100.5}, "percentage"),
        ({"certainty": -1}, "percentage"),
        ({"certainty": math.nan}, "finite"),
        ({"certainty": True}, "finite"),
        ({"flagged": ("1.2.3.4", "1.2.3.4")}, "repeat"),
        ({"flagged": ("1.2.x",)}, "not a valid UID"),
        ({"series_instance_uid": "01.2"}, "not a valid UID"),
        ({"lane": Lane.ROUTINE}, "category 2 finding cannot be in the routine lane"),
        ({"lane": Lane.URGENT, "category": 1}, "category 1 finding cannot be in the urgent"),
        ({"reason": "nodule"}, "pydicom Code"),
        ({"lane": "stat"}, "not a valid Lane"),
    ],
)
def test_triage_finding_rules(changes: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        _finding(**changes)


def test_triage_finding_accepts_spellings_and_escalation() -> None:
    finding = _finding(lane="CRITICAL", category=3, flagged=["1.2.3.4"])
    assert finding.lane is Lane.CRITICAL
    assert finding.category is ActionableCategory.CATEGORY_3
    assert finding.flagged == ("1.2.3.4",)
    assert _finding(lane=" Routine ", category=None).lane is Lane.ROUTINE


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((codes.DCM.AttenuationCoefficient, 1.0, codes.UCUM.Millimeter), r"\[hnsf'U\]"),
        ((codes.SCT.Volume, 1.0, Code("mm3", "SCT", "x")), "not a UCUM code"),
        ((codes.SCT.Volume, math.inf, codes.UCUM.CubicMillimeter), "finite"),
        (("Volume", 1.0, codes.UCUM.CubicMillimeter), "pydicom Code"),
    ],
)
def test_measurement_rules(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        Measurement(*args)


def test_model_output_rules() -> None:
    with pytest.raises(ValueError, match="name a feature twice"):
        ModelOutput(
            codes.SCT.Volume, 1.0, codes.UCUM.NoUnits, EXTRACTOR,
            (Attribution("a", 1.0), Attribution("a", 2.0)),
        )  # fmt: skip
    with pytest.raises(ValueError, match="not a UCUM code"):
        ModelOutput(codes.SCT.Volume, 1.0, codes.SCT.Volume, EXTRACTOR)
    with pytest.raises(ValueError, match="empty"):
        Attribution(" ", 1.0)
    with pytest.raises(ValueError, match="finite"):
        Attribution("a", math.nan)


def test_polygons_are_closed_and_ellipses_have_four_points() -> None:
    polygon = PlanarRegion("POLYGON", ((1, 1), (5, 1), (5, 5)))  # type: ignore[arg-type]
    assert polygon.graphic_type is GraphicType.POLYGON
    assert polygon.points == ((1.0, 1.0), (5.0, 1.0), (5.0, 5.0), (1.0, 1.0))
    assert PlanarRegion(GraphicType.POLYGON, polygon.points).points == polygon.points
    assert polygon.fits(5, 5) and not polygon.fits(4, 64)
    assert polygon.area(1.0, 1.0) == pytest.approx(8.0)  # right triangle 4 x 4 pixels
    assert polygon.area(0.5, 2.0) == pytest.approx(8.0)  # rows 0.5 mm, columns 2 mm
    ellipse = PlanarRegion(GraphicType.ELLIPSE, ((0, 2), (4, 2), (2, 1), (2, 3)))
    assert ellipse.area(1.0, 1.0) == pytest.approx(math.pi * 2 * 1)
    assert ellipse.area(3.0, 1.0) == pytest.approx(math.pi * 2 * 3)  # minor axis is vertical
    with pytest.raises(ValueError, match="three distinct points"):
        PlanarRegion(GraphicType.POLYGON, ((1, 1), (5, 1), (1, 1)))
    with pytest.raises(ValueError, match="four points"):
        PlanarRegion(GraphicType.ELLIPSE, ((1, 1), (5, 1), (3, 0)))
    with pytest.raises(ValueError, match="never negative"):
        PlanarRegion(GraphicType.POLYGON, ((-1, 1), (5, 1), (5, 5)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"segment_number": 0}, "1-65535"),
        ({"segment_number": 65536}, "1-65535"),
        ({"category": codes.SCT.Nodule}, "not in CID 7150"),
        ({"type": codes.DCM.Kurtosis}, "not in CID 7151"),
        ({"laterality": codes.SCT.Lung}, "not in CID 244"),
        ({"tracking_uid": "tracking"}, "not a valid UID"),
        ({"tracking_id": ""}, "tracking ID is empty"),
        ({"region": None}, "has no key-slice region"),
        ({"key_slice": None}, "needs the key slice"),
        (
            {"measurements": (Measurement(codes.SCT.Volume, 1, codes.UCUM.CubicMillimeter),) * 2},
            "measurement twice",
        ),
    ],
)
def test_segment_rules(changes: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        _lesion(**changes)


def test_an_organ_needs_no_region_and_the_same_concept_may_differ_by_derivation() -> None:
    lung = _lesion(
        category=codes.SCT.AnatomicalStructure, type=codes.SCT.Lung, region=None, key_slice=None,
        laterality=codes.SCT.Left,
        measurements=[
            Measurement(codes.DCM.AttenuationCoefficient, -800, HU, codes.SCT.Mean),
            Measurement(codes.DCM.AttenuationCoefficient, 90, HU, codes.SCT.StandardDeviation),
        ],
    )  # fmt: skip
    assert not lung.is_lesion and isinstance(lung.measurements, tuple)
    assert _lesion().is_lesion


def test_provenance_rules() -> None:
    assert Provenance("1.0").manufacturer == "Radiogate"
    with pytest.raises(ValueError, match="software version is empty"):
        Provenance("")
    with pytest.raises(ValueError, match="Long String"):
        Provenance("1", device_serial_number="x" * 65)

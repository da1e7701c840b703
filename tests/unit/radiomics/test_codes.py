"""The feature -> DICOM concept table: every code exists where it claims to (PS3.16 CID 218,
CID 7464), units are UCUM and fit their quantity, every pyradiomics feature is mapped once, and
measurements come out in IBSI conventions."""

from __future__ import annotations

import re
from typing import Any

import pytest
import radiomics  # type: ignore[import-untyped]
from pydicom.sr.codedict import Collection

from analysis.radiomics.codes import (
    PRIVATE_SCHEME,
    UNITS,
    Concept,
    Conversion,
    feature_codes,
    ibsi_value,
    measurements,
)
from analysis.radiomics.features import Segment, SegmentFeatures, extract
from analysis.radiomics.params import load_parameters
from analysis.radiomics.volume import Volume

CID218 = Collection("CID218")
CID7464 = Collection("CID7464")


def _in(collection: Collection, concept: Concept) -> bool:
    return any(
        (c.value, c.scheme_designator) == (concept.value, concept.scheme)
        for c in (getattr(collection, k) for k in collection.dir())
    )


def test_every_pyradiomics_feature_is_mapped_once() -> None:
    expected = {
        f"{cls}_{name}"
        for cls, feature_class in radiomics.getFeatureClasses().items()
        if cls != "shape2D"
        for name, deprecated in feature_class.getFeatureNames().items()
        if not deprecated
    }
    assert set(feature_codes()) == expected
    assert len(expected) == 107


def test_every_standard_code_exists_in_its_context_group() -> None:
    for name, code in feature_codes().items():
        if code.concept.scheme == PRIVATE_SCHEME.designator:
            continue
        assert _in(CID218, code.concept), name
        if code.derivation is not None:
            assert _in(CID7464, code.derivation), name
        if code.concept.scheme == "IBSI":
            assert code.concept.value == code.ibsi


def test_the_pyradiomics_community_table_errors_are_not_repeated() -> None:
    """GLSZM zone emphases carry GLSZM codes, not the GLDZM ones (S1RA, K26C)."""
    table = feature_codes()
    assert table["glszm_LowGrayLevelZoneEmphasis"].concept.value == "XMSY"
    assert table["glszm_HighGrayLevelZoneEmphasis"].concept.value == "5GN9"
    used = {c.concept.value for c in table.values()}
    assert not used & {"S1RA", "K26C", "0GBI", "MB4I"}
    for name, code in table.items():
        if code.concept.scheme != "IBSI":
            continue
        meaning = code.concept.meaning.lower()
        family = name.split("_")[0]
        if "glcm" in meaning:
            assert family == "glcm", name
        if "ngtdm" in meaning:
            assert family == "ngtdm", name
        if "ngldm" in meaning or "dependence" in meaning:
            assert family == "gldm", name
        if "zone" in meaning:
            assert family == "glszm", name
        if "run" in meaning:
            assert family == "glrlm", name


def test_intensity_statistics_are_attenuation_with_a_derivation() -> None:
    table = feature_codes()
    derivations = {
        "firstorder_Mean": ("373098007", "SCT"),
        "firstorder_Median": ("373099004", "SCT"),
        "firstorder_Minimum": ("255605001", "SCT"),
        "firstorder_Maximum": ("56851009", "SCT"),
        "firstorder_Skewness": ("126051", "DCM"),
        "firstorder_Kurtosis": ("126052", "DCM"),
    }
    for name, (value, scheme) in derivations.items():
        code = table[name]
        assert code.concept == Concept("112031", "DCM", "Attenuation Coefficient")
        assert code.derivation is not None
        assert (code.derivation.value, code.derivation.scheme) == (value, scheme)
    assert table["firstorder_Kurtosis"].conversion is Conversion.EXCESS_KURTOSIS


def test_private_codes_are_valid_and_stable() -> None:
    private = {n: c for n, c in feature_codes().items() if c.concept.scheme == "99RADIOGATE"}
    assert PRIVATE_SCHEME.designator.startswith("99")
    values = [c.concept.value for c in private.values()]
    assert len(values) == len(set(values))
    for code in private.values():
        assert re.fullmatch(r"[A-Z0-9-]{1,16}", code.concept.value)  # SH
        assert 0 < len(code.concept.meaning) <= 64  # LO
    # pinned: a private code, once published, never changes meaning
    assert private["firstorder_10Percentile"].concept.value == "FO-P10"
    assert private["glcm_MCC"].concept.value == "GLCM-MCC"


_UCUM_ATOMS = {"mm": ("L", 1), "[hnsf'U]": ("HU", 1)}


def _dimension(unit: str) -> dict[str, int]:
    """Dimension of a UCUM term built from mm and [hnsf'U] with exponents, '.' and a leading '/'."""
    if unit == "1":
        return {}
    sign = 1
    if unit.startswith("/"):
        sign, unit = -1, unit[1:]
    out: dict[str, int] = {}
    for term in unit.split("."):
        match = re.fullmatch(r"(mm|\[hnsf'U\])(\d?)", term)
        assert match, f"not UCUM here: {unit!r}"
        dim, _ = _UCUM_ATOMS[match.group(1)]
        out[dim] = out.get(dim, 0) + sign * int(match.group(2) or 1)
    return out


def _expected_dimension(name: str) -> dict[str, int]:
    cls, feature = name.split("_", 1)
    if cls == "shape":
        if "Volume" in feature and "Ratio" not in feature:
            return {"L": 3}
        if feature == "SurfaceArea":
            return {"L": 2}
        if feature == "SurfaceVolumeRatio":
            return {"L": -1}
        if "Length" in feature or "Diameter" in feature:
            return {"L": 1}
        return {}
    if cls == "firstorder":
        if feature in {"Skewness", "Kurtosis", "Entropy", "Uniformity"}:
            return {}
        if feature == "Variance" or feature == "Energy":
            return {"HU": 2}
        if feature == "TotalEnergy":
            return {"HU": 2, "L": 3}
        return {"HU": 1}
    return {}  # texture features of discretised grey levels


def test_units_are_ucum_and_fit_their_quantity() -> None:
    for name, code in feature_codes().items():
        assert code.unit.scheme == "UCUM"
        assert code.unit.value in UNITS
        assert _dimension(code.unit.value) == _expected_dimension(name), name


def test_conversions() -> None:
    assert ibsi_value(Conversion.EXCESS_KURTOSIS, 2.6453795, 74) == pytest.approx(-0.3546205)
    assert ibsi_value(Conversion.UNBIASED_AXIS_LENGTH, 9.2449049, 74) == pytest.approx(
        9.308, abs=5e-4
    )
    assert ibsi_value(Conversion.NONE, 1.5, 74) == 1.5


@pytest.fixture(scope="module")
def tumour_features(ct_volume: Volume, tumour_mask: Any) -> SegmentFeatures:
    (result,) = extract(ct_volume, [Segment("tumour", tumour_mask)], load_parameters("ct_ibsi"))
    return result


def test_measurements_of_a_ct_segment(tumour_features: SegmentFeatures) -> None:
    mapped, unmapped = measurements(tumour_features)
    assert unmapped == []
    assert len(mapped) == 107
    by_name = {m.feature: m for m in mapped}
    kurtosis = by_name["firstorder_Kurtosis"]
    assert kurtosis.value == pytest.approx(
        tumour_features.values["original_firstorder_Kurtosis"] - 3
    )
    assert kurtosis.derivation == Concept("126052", "DCM", "Kurtosis")
    major = by_name["shape_MajorAxisLength"]
    n = tumour_features.voxel_count
    assert major.value == pytest.approx(
        tumour_features.values["original_shape_MajorAxisLength"] * (n / (n - 1)) ** 0.5
    )
    assert major.unit == Concept("mm", "UCUM", "millimeter")
    sphericity = by_name["shape_Sphericity"]
    assert sphericity.concept == Concept("QCFX", "IBSI", "Sphericity")
    with pytest.raises(ValueError, match="CT only"):
        measurements(tumour_features, modality="MR")

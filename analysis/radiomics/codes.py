"""pyradiomics feature names -> DICOM concepts for the measurements of a TID 1500 report.

One audited table (``data/feature_codes.tsv``), checked when loaded:

* features IBSI defines and PS3.16 codes get their **IBSI concept from CID 218** (Quantitative
  Image Feature; scheme designator ``IBSI``), meaning as pydicom's CID 218 spells it. A row may
  only name an IBSI code that CID 218 holds;
* intensity statistics have no IBSI code in DICOM: they are ``(112031, DCM, "Attenuation
  Coefficient")`` with a derivation from CID 7464 (Mean, Median, Minimum, Maximum, Variance,
  Root Mean Square, Skewness, Kurtosis), in Hounsfield units: CT only;
* everything else is under the private scheme ``99RADIOGATE`` (:data:`PRIVATE_SCHEME`), one stable
  code per feature, declared by the report in the Coding Scheme Identification Sequence
  (0008,0110; PS3.3 C.12.1.1.2);
* units are UCUM (PS3.16 CID 7181 uses the UCUM designator): ``mm``, ``mm2``, ``mm3``, ``/mm``,
  ``[hnsf'U]`` and its powers, ``1`` for dimensionless values.

Values follow IBSI conventions in the report (:func:`ibsi_value`): pyradiomics' kurtosis is the
plain fourth standardised moment (IBSI's excess kurtosis + 3), and its axis lengths use the
covariance of voxel positions divided by N where IBSI divides by N - 1.

pyradiomics' community table (``featuresDict_IBSIv7.tsv``) is not used: it files several GLSZM
rows under GLCM and gives GLDZM codes (S1RA, K26C) to GLSZM features (XMSY, 5GN9 here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources

from pydicom.sr.codedict import Collection

from analysis.radiomics.features import SegmentFeatures

__all__ = [
    "PRIVATE_SCHEME",
    "UNITS",
    "CodingScheme",
    "Concept",
    "Conversion",
    "FeatureCode",
    "Measurement",
    "feature_codes",
    "ibsi_value",
    "measurements",
]


@dataclass(frozen=True)
class Concept:
    """A coded concept (Code Value, Coding Scheme Designator, Code Meaning; PS3.3 8.8)."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class CodingScheme:
    """An item of the Coding Scheme Identification Sequence (0008,0110)."""

    designator: str
    name: str
    version: str
    responsible_organization: str


PRIVATE_SCHEME = CodingScheme(
    designator="99RADIOGATE",
    name="Radiogate radiomics features",
    version="1",
    responsible_organization="Radiogate",
)

#: UCUM code -> meaning, the only units the table may use.
UNITS: Mapping[str, str] = {
    "1": "no units",
    "mm": "millimeter",
    "mm2": "square millimeter",
    "mm3": "cubic millimeter",
    "/mm": "per millimeter",
    "[hnsf'U]": "Hounsfield unit",
    "[hnsf'U]2": "Hounsfield unit squared",
    "[hnsf'U]2.mm3": "Hounsfield unit squared cubic millimeter",
}


class Conversion(StrEnum):
    """pyradiomics value -> IBSI value."""

    NONE = "none"
    EXCESS_KURTOSIS = "excess_kurtosis"  # IBSI IPH6 = pyradiomics kurtosis - 3
    UNBIASED_AXIS_LENGTH = "unbiased_axis_length"  # x sqrt(N / (N - 1))


@dataclass(frozen=True)
class FeatureCode:
    pyradiomics: str  # without the image type, e.g. "glcm_JointAverage"
    ibsi: str | None
    ibsi_also: tuple[str, ...]
    concept: Concept
    derivation: Concept | None
    unit: Concept
    conversion: Conversion


@dataclass(frozen=True)
class Measurement:
    """One value ready for a TID 1500 NUM item (TID 1411 / 300): concept, value, unit, optional
    derivation (Derivation (121401, DCM) content item)."""

    feature: str
    value: float
    concept: Concept
    unit: Concept
    derivation: Concept | None


def _collection(cid: int) -> Mapping[tuple[str, str], Concept]:
    coll = Collection(f"CID{cid}")
    out = {}
    for keyword in coll.dir():
        code = getattr(coll, keyword)
        out[(code.scheme_designator, code.value)] = Concept(
            code.value, code.scheme_designator, code.meaning
        )
    return out


@cache
def cid218() -> Mapping[tuple[str, str], Concept]:
    """PS3.16 CID 218 Quantitative Image Feature, as pydicom ships it."""
    return _collection(218)


@cache
def cid7464() -> Mapping[tuple[str, str], Concept]:
    """PS3.16 CID 7464 General Region of Interest Measurement Modifier (derivations)."""
    return _collection(7464)


def _parse_row(fields: list[str]) -> FeatureCode:
    name, ibsi, also, scheme, code, meaning, derivation, unit, conversion = fields
    if scheme == "IBSI":
        if code != ibsi:
            raise ValueError(f"{name}: IBSI concept {code} differs from its IBSI code {ibsi}")
        found = cid218().get(("IBSI", code))
        if found is None:
            raise ValueError(f"{name}: IBSI code {code} is not in CID 218")
        concept = found
    elif scheme == PRIVATE_SCHEME.designator:
        if not (code and meaning) or len(code) > 16 or len(meaning) > 64:
            raise ValueError(f"{name}: private code needs a code (SH) and a meaning (LO)")
        concept = Concept(code, scheme, meaning)
    else:
        found = cid218().get((scheme, code))
        if found is None:
            raise ValueError(f"{name}: ({code}, {scheme}) is not in CID 218")
        concept = found
    deriv = None
    if derivation:
        d_scheme, d_code = derivation.split(":", 1)
        deriv = cid7464().get((d_scheme, d_code))
        if deriv is None:
            raise ValueError(f"{name}: derivation {derivation} is not in CID 7464")
    if unit not in UNITS:
        raise ValueError(f"{name}: unit {unit!r} is not one of {sorted(UNITS)}")
    return FeatureCode(
        pyradiomics=name,
        ibsi=ibsi or None,
        ibsi_also=tuple(a for a in also.split(",") if a),
        concept=concept,
        derivation=deriv,
        unit=Concept(unit, "UCUM", UNITS[unit]),
        conversion=Conversion(conversion),
    )


@cache
def feature_codes() -> Mapping[str, FeatureCode]:
    """The table, by pyradiomics name without image type (``"shape_Sphericity"``)."""
    text = resources.files("analysis.radiomics").joinpath("data", "feature_codes.tsv").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    header, rows = lines[0].split("\t"), lines[1:]
    table: dict[str, FeatureCode] = {}
    for line in rows:
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ValueError(f"feature_codes.tsv: {len(fields)} fields in {line!r}")
        row = _parse_row(fields)
        if row.pyradiomics in table:
            raise ValueError(f"feature_codes.tsv: {row.pyradiomics} twice")
        table[row.pyradiomics] = row
    return table


def ibsi_value(conversion: Conversion, value: float, voxel_count: int) -> float:
    """*value* (pyradiomics convention) in IBSI convention; *voxel_count* is the number of voxels
    of the morphological mask the shape was computed on."""
    if conversion is Conversion.EXCESS_KURTOSIS:
        return value - 3.0
    if conversion is Conversion.UNBIASED_AXIS_LENGTH:
        if voxel_count < 2:
            return math.nan
        return value * math.sqrt(voxel_count / (voxel_count - 1))
    return value


def measurements(
    result: SegmentFeatures, modality: str = "CT"
) -> tuple[list[Measurement], list[str]]:
    """The mapped measurements of one segment (IBSI-convention values), and the names of the
    features the table does not map (other image types, features it does not know).

    Intensity statistics are attenuation coefficients: only CT results can be mapped.
    """
    if modality != "CT":
        raise ValueError(f"intensity concepts are defined for CT only, not {modality}")
    table = feature_codes()
    mapped: list[Measurement] = []
    unmapped: list[str] = []
    for key, value in result.values.items():
        image_type, _, name = key.partition("_")
        code = table.get(name) if image_type == "original" else None
        if code is None:
            unmapped.append(key)
            continue
        converted = ibsi_value(code.conversion, value, result.voxel_count)
        if not math.isfinite(converted):
            unmapped.append(key)
            continue
        mapped.append(Measurement(name, converted, code.concept, code.unit, code.derivation))
    return mapped, unmapped

"""Radiogate against the IBSI chapter 1 reference values (Zwanenburg et al., Radiology 2020).

The reference table (one row per feature, data set and texture aggregation, with tolerance) is
parsed by :func:`read_reference`; :func:`phantom_values` computes every aggregation for the
digital phantom with pyradiomics, through Radiogate's extraction:

========================  ======================================================================
IBSI aggregation          how
========================  ======================================================================
(none), 3D, 3D averaged   the 3-D extraction (GLCM/GLRLM: features per direction, averaged)
3D merged                 ``weightingNorm: no_weighting`` (direction matrices summed)
2.5D direction-merged     ``force2D``: in-plane directions, each matrix summed over slices
2.5D merged, 2.5D         ``force2D`` + ``no_weighting``; ``force2D`` (GLSZM, NGTDM, NGLDM)
2D averaged, 2D           each slice on its own (``force2D``), features averaged over slices
2D slice-merged           each slice with ``no_weighting``, averaged over slices
========================  ======================================================================

Per-slice runs discretise with the bin origin of the 3-D ROI (IBSI discretises the volume once).
:func:`compare` converts values to IBSI conventions (:func:`analysis.radiomics.codes.ibsi_value`)
and judges each reference row: within tolerance, a :data:`DEVIATIONS` entry (a known difference,
each with its reason), or not computed (pyradiomics has no such feature). The reference gives a
tolerance for morphological features only; every other value is quoted to 3 significant digits,
so a value passes when it rounds to the reference: ``|x - ref| <= max(tolerance, half a unit of
the third significant digit)``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from analysis.radiomics.codes import feature_codes, ibsi_value
from analysis.radiomics.features import SegmentFeatures, extract_crop
from analysis.radiomics.params import ParameterSet
from analysis.radiomics.preprocess import crop_segment
from analysis.radiomics.volume import Volume

__all__ = [
    "BIN_ORIGIN_DEPENDENT",
    "DEVIATIONS",
    "PYRADIOMICS_DEVIATIONS",
    "Aggregation",
    "Comparison",
    "Reference",
    "Status",
    "compare",
    "pass_table",
    "phantom_values",
    "read_reference",
]

PHANTOM = "dig. phantom"


class Aggregation(StrEnum):
    NONE = ""
    D2 = "2D"
    D2_AVERAGED = "2D, averaged"
    D2_SLICE_MERGED = "2D, slice-merged"
    D25 = "2.5D"
    D25_DIRECTION_MERGED = "2.5D, direction-merged"
    D25_MERGED = "2.5D, merged"
    D3 = "3D"
    D3_AVERAGED = "3D, averaged"
    D3_MERGED = "3D, merged"


class Status(StrEnum):
    PASSED = "pass"
    DEVIATION = "deviation"  # outside tolerance, listed in DEVIATIONS with its reason
    FAIL = "FAIL"  # outside tolerance and not documented: a regression
    NOT_COMPUTED = "not computed"  # pyradiomics has no such feature


#: (IBSI code, aggregation) -> why Radiogate's value differs from the reference. Every entry is
#: asserted to be outside tolerance, and nothing else is (tests/unit/radiomics/test_ibsi.py).
#: Empty: on the digital phantom every feature Radiogate computes is within tolerance.
DEVIATIONS: Mapping[tuple[str, str], str] = {}

#: IBSI code -> why pyradiomics alone (its bin origin, its conventions) misses the phantom's
#: reference; Radiogate converts these (:class:`analysis.radiomics.codes.Conversion`).
PYRADIOMICS_DEVIATIONS: Mapping[str, str] = {
    "IPH6": "pyradiomics kurtosis is the fourth standardised moment; IBSI's is excess "
    "kurtosis (moment - 3)",
    "P9VJ": "pyradiomics divides the covariance of voxel positions by N, IBSI by N - 1: "
    "axis lengths are sqrt((N - 1) / N) too short",
    "7J51": "as minor axis length (covariance divided by N)",
}

#: pyradiomics features (class_feature) whose value depends on where fixed-bin-size bins are
#: counted from: they use grey-level *numbers* (averages, emphases weighted by i or 1/i, Ng),
#: not only differences between them. Measured: these and no others change with the origin.
BIN_ORIGIN_DEPENDENT: frozenset[str] = frozenset(
    {
        "glcm_Autocorrelation",
        "glcm_Idmn",
        "glcm_Idn",
        "glcm_JointAverage",
        "glcm_SumAverage",
        "gldm_HighGrayLevelEmphasis",
        "gldm_LargeDependenceHighGrayLevelEmphasis",
        "gldm_LargeDependenceLowGrayLevelEmphasis",
        "gldm_LowGrayLevelEmphasis",
        "gldm_SmallDependenceHighGrayLevelEmphasis",
        "gldm_SmallDependenceLowGrayLevelEmphasis",
        "glrlm_HighGrayLevelRunEmphasis",
        "glrlm_LongRunHighGrayLevelEmphasis",
        "glrlm_LongRunLowGrayLevelEmphasis",
        "glrlm_LowGrayLevelRunEmphasis",
        "glrlm_ShortRunHighGrayLevelEmphasis",
        "glrlm_ShortRunLowGrayLevelEmphasis",
        "glszm_HighGrayLevelZoneEmphasis",
        "glszm_LargeAreaHighGrayLevelEmphasis",
        "glszm_LargeAreaLowGrayLevelEmphasis",
        "glszm_LowGrayLevelZoneEmphasis",
        "glszm_SmallAreaHighGrayLevelEmphasis",
        "glszm_SmallAreaLowGrayLevelEmphasis",
        "ngtdm_Busyness",
    }
)


@dataclass(frozen=True)
class Reference:
    family: str
    feature: str
    code: str
    data: str
    aggregation: Aggregation
    value: float
    tolerance: float
    consensus: str

    @property
    def allowed(self) -> float:
        """The tolerance, or half a unit of the third significant digit if larger."""
        if self.value == 0:
            return max(self.tolerance, 5e-4)
        digit = 10.0 ** (math.floor(math.log10(abs(self.value))) - 2)
        return max(self.tolerance, 0.5 * digit * (1 + 1e-9))


@dataclass(frozen=True)
class Comparison:
    reference: Reference
    feature: str | None  # pyradiomics feature (image type and class included)
    value: float | None  # IBSI convention
    status: Status
    note: str = ""

    @property
    def difference(self) -> float | None:
        return None if self.value is None else self.value - self.reference.value


def read_reference(text: str, data: str = PHANTOM) -> list[Reference]:
    """Rows of the IBSI chapter 1 reference table (CSV text) for one data set."""
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        if row["data"] != data or not row["value"]:
            continue
        rows.append(
            Reference(
                family=row["family"],
                feature=row["feature"],
                code=row["ibsi_code"],
                data=row["data"],
                aggregation=Aggregation(row["aggregation"]),
                value=float(row["value"]),
                tolerance=float(row["tolerance"] or 0.0),
                consensus=row["consensus"],
            )
        )
    return rows


_CONFIG_OF: Mapping[Aggregation, str] = {
    Aggregation.NONE: "3d",
    Aggregation.D3: "3d",
    Aggregation.D3_AVERAGED: "3d",
    Aggregation.D3_MERGED: "3d_merged",
    Aggregation.D25: "2.5d",
    Aggregation.D25_DIRECTION_MERGED: "2.5d",
    Aggregation.D25_MERGED: "2.5d_merged",
    Aggregation.D2: "2d",
    Aggregation.D2_AVERAGED: "2d",
    Aggregation.D2_SLICE_MERGED: "2d_merged",
}
_MERGED: dict[str, Any] = {"weightingNorm": "no_weighting"}
_FORCE_2D: dict[str, Any] = {"force2D": True, "force2Ddimension": 0}
#: configuration -> (pyradiomics settings, per slice)
_CONFIGS: Mapping[str, tuple[dict[str, Any], bool]] = {
    "3d_merged": (_MERGED, False),
    "2.5d": (_FORCE_2D, False),
    "2.5d_merged": ({**_FORCE_2D, **_MERGED}, False),
    "2d": (_FORCE_2D, True),
    "2d_merged": ({**_FORCE_2D, **_MERGED}, True),
}


def _per_slice(
    volume: Volume, mask: npt.NDArray[np.bool_], params: ParameterSet, origin: float | None
) -> SegmentFeatures:
    """Each slice of the ROI on its own, features averaged over slices (IBSI 2D)."""
    runs: list[SegmentFeatures] = []
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        one = np.zeros_like(mask)
        one[z] = mask[z]
        crop = crop_segment(volume.array, one, volume.geometry, params.crop_margin_voxels, None)
        assert crop is not None
        runs.append(extract_crop(f"slice {z}", crop, params, bin_origin=origin))
    names = set().union(*(r.values for r in runs))
    values = {}
    missing = {}
    for name in sorted(names):
        per = [r.values.get(name) for r in runs]
        if any(v is None for v in per):
            missing[name] = "missing in a slice"
        else:
            values[name] = float(np.mean([v for v in per if v is not None]))
    first = runs[0]
    return SegmentFeatures(
        segment="per-slice",
        values=values,
        missing=missing,
        voxel_count=int(mask.sum()),
        spacing_mm=first.spacing_mm,
        bin_origin=origin,
        pyradiomics_version=first.pyradiomics_version,
        parameters_name=params.name,
        parameters_blake3=params.blake3,
        settings=params.settings,
    )


def phantom_values(
    volume: Volume, mask: npt.NDArray[np.bool_], params: ParameterSet
) -> dict[str, SegmentFeatures]:
    """Features of *mask* for every aggregation configuration (keys of the module table)."""
    crop = crop_segment(
        volume.array, mask, volume.geometry, params.crop_margin_voxels, params.resampling
    )
    if crop is None:
        raise ValueError("empty mask")
    base = extract_crop("3d", crop, params)
    out = {"3d": base}
    for name, (settings, per_slice) in _CONFIGS.items():
        variant = params.variant(name, **settings)
        if per_slice:
            out[name] = _per_slice(volume, mask, variant, base.bin_origin)
        else:
            out[name] = extract_crop(name, crop, variant)
    return out


def _by_code() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, code in feature_codes().items():
        for ibsi in (code.ibsi, *code.ibsi_also):
            if ibsi:
                found.setdefault(ibsi, []).append(name)
    return found


def compare(
    references: Sequence[Reference],
    results: Mapping[str, SegmentFeatures],
    *,
    convert: bool = True,
    deviations: Mapping[tuple[str, str], str] = DEVIATIONS,
) -> list[Comparison]:
    """Judge every reference row against the matching configuration's features (values in IBSI
    conventions unless *convert* is False: pyradiomics' own)."""
    by_code = _by_code()
    table = feature_codes()
    out = []
    for ref in references:
        names = by_code.get(ref.code, [])
        if not names:
            out.append(
                Comparison(ref, None, None, Status.NOT_COMPUTED, "no enabled pyradiomics feature")
            )
            continue
        (name,) = names
        result = results[_CONFIG_OF[ref.aggregation]]
        key = f"original_{name}"
        raw: Any = result.values.get(key)
        if raw is None:
            reason = result.missing.get(key) or result.missing.get("*") or "not extracted"
            out.append(Comparison(ref, key, None, Status.FAIL, reason))
            continue
        value = float(raw)
        if convert:
            value = ibsi_value(table[name].conversion, value, result.voxel_count)
        known = deviations.get((ref.code, ref.aggregation.value))
        if abs(value - ref.value) <= ref.allowed:
            status = Status.PASSED
        else:
            status = Status.DEVIATION if known else Status.FAIL
        out.append(Comparison(ref, key, value, status, known or ""))
    return out


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def pass_table(comparisons: Sequence[Comparison]) -> str:
    """Markdown: a summary per family and aggregation, then one row per reference value."""
    lines = [
        "| family | aggregation | pass | deviation | FAIL | not computed |",
        "|---|---|--:|--:|--:|--:|",
    ]
    groups: dict[tuple[str, str], dict[Status, int]] = {}
    for c in comparisons:
        key = (c.reference.family, c.reference.aggregation.value or "—")
        groups.setdefault(key, dict.fromkeys(Status, 0))[c.status] += 1
    for (family, aggregation), counts in groups.items():
        lines.append(
            f"| {family} | {aggregation} | {counts[Status.PASSED]} | {counts[Status.DEVIATION]} "
            f"| {counts[Status.FAIL]} | {counts[Status.NOT_COMPUTED]} |"
        )
    lines += [
        "",
        "| family | feature | IBSI | aggregation | reference | tolerance | Radiogate | status |",
        "|---|---|---|---|--:|--:|--:|---|",
    ]
    for c in comparisons:
        r = c.reference
        status = c.status.value + (
            f": {c.note}" if c.note and c.status is not Status.PASSED else ""
        )
        lines.append(
            f"| {r.family} | {r.feature} | {r.code} | {r.aggregation.value or '—'} | "
            f"{r.value:g} | {r.allowed:.2g} | {_fmt(c.value)} | {status} |"
        )
    return "\n".join(lines) + "\n"

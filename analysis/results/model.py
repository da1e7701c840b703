"""What the analysis pipeline hands over to the result builders: frozen, self-validating values.

Each class checks on construction what the DICOM encoding will need (PS3.5 value lengths for
the VRs the values end up in, UID syntax, UCUM units, context-group membership), so that a bad
value fails here, with a message naming the field, and not halfway through building an object.

* :class:`Algorithm` - TID 4019 Algorithm Identification and the Segmentation Algorithm
  Identification Sequence (PS3.3 C.8.20.2); its BLAKE3 hashes become Algorithm Parameters.
* :class:`TriageFinding` - the triage result of one series (lane, CID 7035 category, certainty).
* :class:`Measurement` - one TID 300 measurement (concept, value, UCUM unit, CID 7464 derivation).
* :class:`SegmentResult` - one segment: SEG Segment Description (PS3.3 C.8.20.4) and the TID
  1411 / TID 1410 groups of the measurement report.
* :class:`Provenance` - General Equipment (PS3.3 C.7.5.1) of every object; no institution.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from pydicom.sr.codedict import Collection, codes
from pydicom.sr.coding import Code
from pydicom.uid import RE_VALID_UID

__all__ = [
    "ActionableCategory",
    "Algorithm",
    "Attribution",
    "GraphicType",
    "Lane",
    "Measurement",
    "ModelOutput",
    "PlanarRegion",
    "Provenance",
    "SegmentResult",
    "TriageFinding",
    "in_cid",
]

_BLAKE3_HEX = re.compile(r"[0-9a-f]{64}")
_LO_MAX = 64  # PS3.5 6.2: Long String
LESION_CATEGORY: Code = codes.SCT.MorphologicallyAbnormalStructure


def in_cid(code: Code, cid: int) -> bool:
    """Whether *code* is a member of context group *cid* as pydicom's PS3.16 tables list it."""
    return code in Collection(f"CID{cid}")


def _check_lo(value: str, what: str) -> None:
    if not value or not value.strip():
        raise ValueError(f"{what} is empty")
    if len(value) > _LO_MAX or "\\" in value or any(c in value for c in "\r\n\f"):
        raise ValueError(f"{what} must fit a Long String (<= 64 characters, no backslash)")


def _check_uid(value: str, what: str) -> None:
    """PS3.5 9.1: digits and dots, no leading zero in a component, at most 64 characters."""
    if not isinstance(value, str) or len(value) > 64 or not RE_VALID_UID.fullmatch(value):
        raise ValueError(f"{what} is not a valid UID: {value!r}")


def _check_code(value: object, what: str) -> None:
    if not isinstance(value, Code):
        raise TypeError(f"{what} must be a pydicom Code, not {type(value).__name__}")


def _check_finite(value: float, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, not {value!r}")


class _Lenient:
    """Enumerated values accept their value in any case ("Critical", "CRITICAL")."""

    @classmethod
    def _missing_(cls, value: object) -> object:
        if isinstance(value, str):
            for member in cls:  # type: ignore[attr-defined]
                if member.value == value.strip().lower():
                    return member
        return None


class Lane(_Lenient, StrEnum):
    """Radiogate's worklist lane, most urgent first."""

    CRITICAL = "critical"
    URGENT = "urgent"
    ROUTINE = "routine"

    @property
    def rank(self) -> int:
        """0 for the most urgent lane."""
        return list(Lane).index(self)


class ActionableCategory(IntEnum):
    """ACR actionable finding categories (CID 7035): communicate within minutes, hours, days."""

    CATEGORY_1 = 1
    CATEGORY_2 = 2
    CATEGORY_3 = 3

    @property
    def least_lane(self) -> Lane:
        """The least urgent lane a finding of this category may be triaged to."""
        return {1: Lane.CRITICAL, 2: Lane.URGENT, 3: Lane.ROUTINE}[self.value]


@dataclass(frozen=True)
class Algorithm:
    """An algorithm as TID 4019 identifies it, with the BLAKE3 hashes of what it ran with.

    ``model_hash`` is the hash of the model file (ONNX, pickled estimator), ``parameter_hash``
    the hash of the parameter file (e.g. the pyradiomics settings); at least one is required so
    that every result can be traced to exact inputs. ``demonstration`` marks a model that is
    not for clinical use: every object it contributes to says so in its Series Description.
    """

    name: str
    version: str
    model_hash: str | None = None
    parameter_hash: str | None = None
    demonstration: bool = False
    family: Code = field(default=codes.DCM.ArtificialIntelligence)  # CID 7162

    def __post_init__(self) -> None:
        _check_lo(self.name, "algorithm name")
        _check_lo(self.version, "algorithm version")
        _check_code(self.family, "algorithm family")
        if self.model_hash is None and self.parameter_hash is None:
            raise ValueError(f"algorithm {self.name!r} has neither a model nor a parameter hash")
        for what, value in (("model", self.model_hash), ("parameter", self.parameter_hash)):
            if value is not None and not _BLAKE3_HEX.fullmatch(value):
                raise ValueError(f"{what} hash must be 64 lowercase hex digits (BLAKE3)")

    @property
    def parameters(self) -> dict[str, str]:
        """The hashes as named Algorithm Parameters (TID 4019, PS3.3 C.8.20.2)."""
        out = {}
        if self.model_hash is not None:
            out["model-blake3"] = self.model_hash
        if self.parameter_hash is not None:
            out["parameters-blake3"] = self.parameter_hash
        return out


@dataclass(frozen=True)
class TriageFinding:
    """The triage result of one series.

    ``certainty`` is the model score in percent (0-100). ``category`` is the ACR actionable
    finding category, or None when the finding is not actionable; the lane may be more urgent
    than the category (a rule can escalate) but never less. ``reason`` codes what was found
    (or the rule that fired). ``flagged`` are the SOP Instance UIDs of the key images, all in
    ``series_instance_uid``.
    """

    lane: Lane
    category: ActionableCategory | None
    certainty: float
    reason: Code
    flagged: tuple[str, ...]
    series_instance_uid: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "lane", Lane(self.lane))
        if self.category is not None:
            object.__setattr__(self, "category", ActionableCategory(self.category))
        _check_finite(self.certainty, "certainty")
        if not 0 <= self.certainty <= 100:
            raise ValueError(f"certainty is a percentage (0-100), not {self.certainty}")
        _check_code(self.reason, "reason")
        _check_uid(self.series_instance_uid, "series instance UID")
        object.__setattr__(self, "flagged", tuple(self.flagged))
        for uid in self.flagged:
            _check_uid(uid, "flagged SOP instance UID")
        if len(set(self.flagged)) != len(self.flagged):
            raise ValueError("flagged SOP instance UIDs repeat")
        if self.category is not None and self.lane.rank > self.category.least_lane.rank:
            raise ValueError(
                f"a category {self.category.value} finding cannot be in the {self.lane} lane"
            )


@dataclass(frozen=True)
class Measurement:
    """One numeric measurement (TID 300) with its concept already chosen.

    ``unit`` is a UCUM code (CID 7181 and friends); ``derivation`` a CID 7464 modifier (Mean,
    Standard Deviation, ...) where the concept is a quantity such as Attenuation Coefficient;
    ``imputed`` marks a value the model's imputer supplied because the feature could not be
    computed (written as Measurement Method = (IMPUTED, 99RADIOGATE), see ``codes.IMPUTED``).
    """

    concept: Code
    value: float
    unit: Code
    derivation: Code | None = None
    finding_site: Code | None = None
    imputed: bool = False

    def __post_init__(self) -> None:
        _check_code(self.concept, "measurement concept")
        _check_finite(self.value, f"value of {self.concept.meaning!r}")
        _check_code(self.unit, "unit")
        if self.unit.scheme_designator != "UCUM":
            raise ValueError(f"unit of {self.concept.meaning!r} is not a UCUM code: {self.unit}")
        if self.derivation is not None:
            _check_code(self.derivation, "derivation")
        if self.finding_site is not None:
            _check_code(self.finding_site, "finding site")
        if self.concept == codes.DCM.AttenuationCoefficient and not (
            self.unit.value.startswith("[hnsf'U]") or self.unit.value == "1"
        ):
            # HU, its powers (variance), or no unit (skewness, kurtosis: CID 7464 derivations)
            raise ValueError("Attenuation Coefficient is measured in [hnsf'U] (or its powers)")

    @property
    def key(self) -> tuple[Code, Code | None]:
        """What identifies the measurement within a segment: concept and derivation."""
        return (self.concept, self.derivation)


@dataclass(frozen=True)
class Attribution:
    """How much one input feature contributed to a model output (e.g. a SHAP value)."""

    feature: str
    contribution: float

    def __post_init__(self) -> None:
        if not self.feature.strip():
            raise ValueError("attribution feature name is empty")
        _check_finite(self.contribution, f"contribution of {self.feature!r}")


@dataclass(frozen=True)
class ModelOutput:
    """A model's output for one segment, with its top attributions (largest first)."""

    concept: Code
    value: float
    unit: Code
    algorithm: Algorithm
    attributions: tuple[Attribution, ...] = ()

    def __post_init__(self) -> None:
        _check_code(self.concept, "model output concept")
        _check_finite(self.value, f"value of {self.concept.meaning!r}")
        if not isinstance(self.unit, Code) or self.unit.scheme_designator != "UCUM":
            raise ValueError(f"unit of {self.concept.meaning!r} is not a UCUM code")
        object.__setattr__(self, "attributions", tuple(self.attributions))
        names = [a.feature for a in self.attributions]
        if len(set(names)) != len(names):
            raise ValueError(f"attributions of {self.concept.meaning!r} name a feature twice")


class GraphicType(_Lenient, StrEnum):
    """Shapes of a lesion outline; a polygon is written as a closed SCOORD POLYLINE, an
    ellipse as an ELLIPSE (PS3.3 C.18.6.1.2)."""

    POLYGON = "polygon"
    ELLIPSE = "ellipse"


@dataclass(frozen=True)
class PlanarRegion:
    """A lesion's outline on its key slice in image coordinates: (column, row) pairs, with
    (0, 0) the top left corner of the top left pixel (PS3.3 C.18.6.1.1).

    A polygon is closed here if the caller left it open (a closed POLYLINE repeats its first
    point last, C.18.6.1.2); an ellipse is the two end points of its major axis, then of its
    minor axis.
    """

    graphic_type: GraphicType
    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "graphic_type", GraphicType(self.graphic_type))
        points = tuple((float(c), float(r)) for c, r in self.points)
        for c, r in points:
            _check_finite(c, "region column")
            _check_finite(r, "region row")
            if c < 0 or r < 0:
                raise ValueError("region coordinates are image coordinates, never negative")
        if self.graphic_type is GraphicType.POLYGON:
            if points and points[0] != points[-1]:
                points = (*points, points[0])
            if len(set(points)) < 3:
                raise ValueError("a polygon needs at least three distinct points")
        elif len(points) != 4:
            raise ValueError("an ellipse is four points (major axis, then minor axis)")
        object.__setattr__(self, "points", points)

    def area(self, row_spacing: float, column_spacing: float) -> float:
        """The enclosed area in mm² for pixels of *row_spacing* x *column_spacing* mm (Pixel
        Spacing order, PS3.3 10.7.1.3): shoelace formula for a polygon, pi/4 x major x minor
        axis length for an ellipse."""
        xy = [(c * column_spacing, r * row_spacing) for c, r in self.points]
        if self.graphic_type is GraphicType.ELLIPSE:
            major = math.dist(xy[0], xy[1])
            minor = math.dist(xy[2], xy[3])
            return math.pi / 4 * major * minor
        twice = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(xy))
        return abs(twice) / 2

    def fits(self, rows: int, columns: int) -> bool:
        """Whether every point lies within an image of *rows* x *columns* pixels."""
        return all(c <= columns and r <= rows for c, r in self.points)


@dataclass(frozen=True)
class SegmentResult:
    """One segmented structure and what was measured on it.

    ``category`` / ``type`` come from CID 7150 / CID 7151, ``laterality`` from CID 244 (written
    as the type's modifier in SEG and with the finding site in SR). The tracking UID and ID are
    shared by the SEG segment and the SR groups. A lesion (category Morphologically Abnormal
    Structure) needs a key slice and a planar region: OHIF draws only groups with image
    coordinates.
    """

    segment_number: int
    label: str
    category: Code
    type: Code
    tracking_uid: str
    tracking_id: str
    measurements: tuple[Measurement, ...] = ()
    laterality: Code | None = None
    finding_site: Code | None = None
    key_slice: str | None = None
    region: PlanarRegion | None = None
    model_outputs: tuple[ModelOutput, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.segment_number, bool) or not 1 <= self.segment_number <= 65535:
            raise ValueError(f"segment number must be 1-65535, not {self.segment_number}")
        _check_lo(self.label, "segment label")
        _check_lo(self.tracking_id, "tracking ID")
        _check_uid(self.tracking_uid, "tracking UID")
        _check_code(self.category, "segment category")
        _check_code(self.type, "segment type")
        if not in_cid(self.category, 7150):
            raise ValueError(f"segment category {self.category} is not in CID 7150")
        if not in_cid(self.type, 7151):
            raise ValueError(f"segment type {self.type} is not in CID 7151")
        if self.laterality is not None and not in_cid(self.laterality, 244):
            raise ValueError(f"laterality {self.laterality} is not in CID 244")
        if self.finding_site is not None:
            _check_code(self.finding_site, "finding site")
        object.__setattr__(self, "measurements", tuple(self.measurements))
        object.__setattr__(self, "model_outputs", tuple(self.model_outputs))
        keys = [m.key for m in self.measurements]
        if len(set(keys)) != len(keys):
            raise ValueError(f"segment {self.segment_number} has a measurement twice")
        if self.key_slice is not None:
            _check_uid(self.key_slice, "key slice SOP instance UID")
        if self.region is not None and self.key_slice is None:
            raise ValueError("a planar region needs the key slice it is drawn on")
        if self.is_lesion and self.region is None:
            raise ValueError(f"lesion segment {self.segment_number} has no key-slice region")

    @property
    def is_lesion(self) -> bool:
        """Whether the segment is a lesion (category Morphologically Abnormal Structure)."""
        return bool(self.category == LESION_CATEGORY)


@dataclass(frozen=True)
class Provenance:
    """The equipment that writes the objects (General Equipment, PS3.3 C.7.5.1).

    No institution name or address: the objects go to a de-identified archive. The serial
    number identifies the Radiogate installation (Type 1 in Enhanced General Equipment).
    """

    software_version: str
    manufacturer: str = "Radiogate"
    model_name: str = "Radiogate"
    device_serial_number: str = "0"

    def __post_init__(self) -> None:
        _check_lo(self.software_version, "software version")
        _check_lo(self.manufacturer, "manufacturer")
        _check_lo(self.model_name, "model name")
        _check_lo(self.device_serial_number, "device serial number")

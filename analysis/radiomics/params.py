"""Versioned radiomics parameter sets: a YAML file shipped in the package, identified by its
BLAKE3.

A file has two sections:

* ``radiogate``: what Radiogate does around pyradiomics (IBSI-style resampling, mask
  interpolation, rounding, the origin of fixed-bin-size discretisation, crop margin);
* ``pyradiomics``: handed to ``radiomics.featureextractor.RadiomicsFeatureExtractor`` unchanged
  (``imageType``, ``featureClass``, ``setting``), validated by pyradiomics' own schema when an
  extractor is built. Its resampling (``resampledPixelSpacing``) is refused: pyradiomics aligns the
  new grid on the origin corner, IBSI on the image centre (see docs/ibsi.md); Radiogate resamples.

:attr:`ParameterSet.blake3` hashes the exact bytes the set was parsed from; every result carries it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from typing import Any

import blake3
import yaml

__all__ = [
    "BinOrigin",
    "Interpolation",
    "ParameterSet",
    "Resampling",
    "load_parameters",
    "parse_parameters",
    "shipped_parameter_sets",
]

_PACKAGE = "analysis.radiomics"
_DATA = "data"


class Interpolation(StrEnum):
    NEAREST = "nearest"
    LINEAR = "linear"
    BSPLINE = "bspline"


class BinOrigin(StrEnum):
    """Where fixed-bin-size bins start: IBSI counts them from the re-segmentation minimum (or the
    ROI minimum without re-segmentation); pyradiomics from the multiple of the bin width at or
    below the ROI minimum (so its grey level 1 is always the ROI's lowest bin)."""

    IBSI = "ibsi"
    PYRADIOMICS = "pyradiomics"


@dataclass(frozen=True)
class Resampling:
    spacing_mm: tuple[float, float, float]
    interpolation: Interpolation = Interpolation.LINEAR
    round_intensities: bool = True
    mask_interpolation: Interpolation = Interpolation.LINEAR
    mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        if len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0:
            raise ValueError(f"resampling.spacing_mm: three positive values, not {self.spacing_mm}")
        if self.mask_interpolation is Interpolation.BSPLINE:
            raise ValueError("resampling.mask_interpolation: nearest or linear")
        if not 0.0 < self.mask_threshold <= 1.0:
            raise ValueError("resampling.mask_threshold: in (0, 1]")


@dataclass(frozen=True)
class ParameterSet:
    """A parsed parameter file; :meth:`variant` derives one with other pyradiomics settings."""

    name: str
    text: bytes
    modality: str
    resampling: Resampling | None
    bin_origin: BinOrigin
    crop_margin_voxels: int
    pyradiomics: dict[str, Any] = field(repr=False)

    @property
    def blake3(self) -> str:
        return blake3.blake3(self.text).hexdigest()

    @property
    def settings(self) -> dict[str, Any]:
        """pyradiomics' ``setting`` section (a copy)."""
        return dict(self.pyradiomics.get("setting") or {})

    def variant(
        self, name: str, radiogate: dict[str, Any] | None = None, **settings: Any
    ) -> ParameterSet:
        """The same set with pyradiomics *settings* (and *radiogate* keys) overridden, serialised
        anew (so its hash is that of the variant, never the parent's)."""
        doc = yaml.safe_load(self.text)
        doc["radiogate"].update(radiogate or {})
        doc.setdefault("pyradiomics", {}).setdefault("setting", {}).update(settings)
        header = f"# variant {name} of {self.name} ({self.blake3})\n"
        text = (header + yaml.safe_dump(doc, sort_keys=True)).encode()
        return parse_parameters(text, name)


def _resampling(raw: Any) -> Resampling | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("radiogate.resampling: a mapping or empty")
    unknown = set(raw) - {
        "spacing_mm",
        "interpolation",
        "round_intensities",
        "mask_interpolation",
        "mask_threshold",
    }
    if unknown:
        raise ValueError(f"radiogate.resampling: unknown keys {sorted(unknown)}")
    return Resampling(
        spacing_mm=tuple(float(v) for v in raw["spacing_mm"]),  # type: ignore[arg-type]
        interpolation=Interpolation(raw.get("interpolation", "linear")),
        round_intensities=bool(raw.get("round_intensities", True)),
        mask_interpolation=Interpolation(raw.get("mask_interpolation", "linear")),
        mask_threshold=float(raw.get("mask_threshold", 0.5)),
    )


def parse_parameters(text: bytes, name: str) -> ParameterSet:
    """Parse and check a parameter file's bytes (pyradiomics' part is checked by pyradiomics)."""
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or set(doc) != {"radiogate", "pyradiomics"}:
        raise ValueError(f"{name}: needs exactly the sections 'radiogate' and 'pyradiomics'")
    ours = doc["radiogate"] or {}
    unknown = set(ours) - {"version", "modality", "resampling", "bin_origin", "crop_margin_voxels"}
    if unknown:
        raise ValueError(f"{name}: unknown radiogate keys {sorted(unknown)}")
    if ours.get("version") != 1:
        raise ValueError(f"{name}: radiogate.version must be 1")
    pyrad = copy.deepcopy(doc["pyradiomics"] or {})
    setting = pyrad.get("setting") or {}
    if setting.get("resampledPixelSpacing") is not None:
        raise ValueError(f"{name}: resample in radiogate.resampling, not pyradiomics")
    if setting.get("binCount") is None and not setting.get("binWidth"):
        raise ValueError(f"{name}: set pyradiomics setting binWidth (or binCount)")
    margin = int(ours.get("crop_margin_voxels", 2))
    if margin < 1:
        raise ValueError(f"{name}: crop_margin_voxels must be at least 1")
    return ParameterSet(
        name=name,
        text=text,
        modality=str(ours.get("modality", "CT")),
        resampling=_resampling(ours.get("resampling")),
        bin_origin=BinOrigin(ours.get("bin_origin", "ibsi")),
        crop_margin_voxels=margin,
        pyradiomics=pyrad,
    )


def shipped_parameter_sets() -> list[str]:
    """Names of the parameter files in the package."""
    folder = resources.files(_PACKAGE).joinpath(_DATA)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_parameters(name: str = "ct_ibsi") -> ParameterSet:
    """A parameter set shipped in the package (``analysis/radiomics/data/<name>.yaml``)."""
    if name not in shipped_parameter_sets():
        raise ValueError(f"no parameter set {name!r}; shipped: {shipped_parameter_sets()}")
    text = resources.files(_PACKAGE).joinpath(_DATA, f"{name}.yaml").read_bytes()
    return parse_parameters(text, name)

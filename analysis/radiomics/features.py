"""pyradiomics features per segment, under a versioned parameter set.

For each segment: crop the image and mask to the segment's bounding box plus a margin (and, when
the parameter set asks for it, interpolate that crop on the IBSI grid: :mod:`.preprocess`), then
run pyradiomics' extractor (:mod:`._extractor`) on the crop. pyradiomics would otherwise copy and
filter the whole image for every segment; on the crop the cost follows the segment's size.

Segments run in a process pool when ``processes > 1`` (or in an ``Executor`` the caller owns and
reuses); only the crops travel to the workers. Every result names the pyradiomics version and the
parameter set's name and BLAKE3. A feature that pyradiomics cannot compute for a segment (NaN, a
failing class, a segment too small) is listed in :attr:`SegmentFeatures.missing` with the reason;
the other segments and features are unaffected.

Values keep pyradiomics' names and conventions (``original_firstorder_Kurtosis`` is pyradiomics'
kurtosis); :func:`analysis.radiomics.ibsi.ibsi_values` converts to IBSI conventions and
:mod:`.codes` maps to DICOM concepts.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import radiomics  # type: ignore[import-untyped]

from analysis.radiomics.params import BinOrigin, ParameterSet, parse_parameters
from analysis.radiomics.preprocess import Crop, CropPlan, apply_crop, plan_crop, to_sitk
from analysis.radiomics.volume import Geometry, Volume

__all__ = [
    "PYRADIOMICS_VERSION",
    "Segment",
    "SegmentFeatures",
    "extract",
    "extract_crop",
]

PYRADIOMICS_VERSION: str = str(radiomics.__version__).lstrip("v")


@dataclass(frozen=True)
class Segment:
    """A named region: a boolean mask on the image's grid."""

    name: str
    mask: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class SegmentFeatures:
    """Features of one segment: ``values`` by pyradiomics name, ``missing`` feature -> reason
    (``"*"`` when the whole segment failed). ``voxel_count`` and ``spacing_mm`` describe the
    mask the features were computed on (after interpolation)."""

    segment: str
    values: Mapping[str, float]
    missing: Mapping[str, str]
    voxel_count: int
    spacing_mm: tuple[float, float, float]
    bin_origin: float | None
    pyradiomics_version: str
    parameters_name: str
    parameters_blake3: str
    settings: Mapping[str, Any] = field(default_factory=dict, repr=False)


_EXTRACTORS: dict[str, Any] = {}


def _extractor(params: ParameterSet) -> Any:
    """One extractor per parameter set and process (building one validates the settings)."""
    from analysis.radiomics._extractor import Extractor

    key = params.blake3
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = Extractor(params.pyradiomics)
    return _EXTRACTORS[key]


def _bin_origin(params: ParameterSet, crop: Crop) -> float | None:
    if params.bin_origin is BinOrigin.PYRADIOMICS:
        return None
    reseg = params.settings.get("resegmentRange")
    if reseg:
        return float(reseg[0])
    return float(crop.image[crop.mask].min())


def extract_crop(
    name: str, crop: Crop, params: ParameterSet, *, bin_origin: float | str | None = "auto"
) -> SegmentFeatures:
    """Features of one prepared crop (the worker's job; also used for per-slice IBSI runs,
    which pass the 3-D ROI's *bin_origin*)."""
    origin = _bin_origin(params, crop) if bin_origin == "auto" else bin_origin
    result = SegmentFeatures(
        segment=name,
        values={},
        missing={},
        voxel_count=int(crop.mask.sum()),
        spacing_mm=crop.geometry.spacing,
        bin_origin=origin if isinstance(origin, float) else None,
        pyradiomics_version=PYRADIOMICS_VERSION,
        parameters_name=params.name,
        parameters_blake3=params.blake3,
        settings=params.settings,
    )
    extractor = _extractor(params)
    extractor.bin_origin = result.bin_origin
    try:
        # a feature pyradiomics cannot compute comes back as NaN (reported as missing below),
        # often with numpy's "mean of empty slice" warning on the way
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            raw = extractor.execute(
                to_sitk(crop.image, crop.geometry),
                to_sitk(crop.mask.astype(np.uint8), crop.geometry),
            )
    except Exception as error:
        return replace(result, missing={"*": f"{type(error).__name__}: {error}"})
    values: dict[str, float] = {}
    missing: dict[str, str] = dict(extractor.failures)
    for key, value in raw.items():
        if key.startswith("diagnostics_"):
            continue
        number = float(value)
        if math.isfinite(number):
            values[key] = number
        else:
            missing[key] = "not a finite value"
    return replace(result, values=values, missing=missing)


_Task = tuple[
    str, npt.NDArray[Any] | None, npt.NDArray[np.bool_] | None, CropPlan | None, bytes, str
]


def _run(task: _Task) -> SegmentFeatures:
    """Worker entry point: interpolate the cut-out region and extract. The parameter set
    travels as its bytes (re-parsed: same hash)."""
    name, image, mask, plan, text, params_name = task
    params = parse_parameters(text, params_name)
    if plan is None or image is None or mask is None:
        return _empty(name, params)
    return extract_crop(name, apply_crop(image, mask, plan, params.resampling), params)


def _empty(name: str, params: ParameterSet) -> SegmentFeatures:
    return SegmentFeatures(
        segment=name,
        values={},
        missing={"*": "empty mask"},
        voxel_count=0,
        spacing_mm=params.resampling.spacing_mm if params.resampling else (0.0, 0.0, 0.0),
        bin_origin=None,
        pyradiomics_version=PYRADIOMICS_VERSION,
        parameters_name=params.name,
        parameters_blake3=params.blake3,
        settings=params.settings,
    )


def extract(
    volume: Volume,
    segments: Sequence[Segment],
    params: ParameterSet,
    *,
    processes: int = 1,
    executor: concurrent.futures.Executor | None = None,
) -> list[SegmentFeatures]:
    """Features of every segment of *volume*, in the order given.

    With ``processes > 1`` (and no *executor*) a pool of that many spawned processes runs the
    segments; *executor* lets a long-lived caller reuse its own pool.
    """
    geometry: Geometry = volume.geometry
    tasks: list[_Task] = []
    for segment in segments:
        if segment.mask.shape != volume.array.shape:
            raise ValueError(f"segment {segment.name!r}: mask shape differs from the image")
        plan = plan_crop(
            volume.array.shape, segment.mask, geometry, params.crop_margin_voxels, params.resampling
        )
        if plan is None:
            tasks.append((segment.name, None, None, None, params.text, params.name))
        else:
            image, mask = volume.array[plan.region].copy(), segment.mask[plan.region].copy()
            tasks.append((segment.name, image, mask, plan, params.text, params.name))
    if executor is not None:
        return list(executor.map(_run, tasks))
    if processes <= 1 or len(tasks) <= 1:
        return [_run(task) for task in tasks]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(processes, len(tasks)), mp_context=context
    ) as pool:
        return list(pool.map(_run, tasks))

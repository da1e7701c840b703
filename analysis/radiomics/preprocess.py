"""Cropping and IBSI image interpolation, done before pyradiomics sees a segment.

IBSI reference manual, section 2.4 (interpolation) and 2.5 (re-segmentation):

* the interpolated grid keeps the **centre** of the original grid: along each axis
  ``n_new = ceil(n * s / s_new)`` voxels, the first one at original (continuous) index
  ``(n - 1) / 2 - (n_new - 1) / 2 * s_new / s``. pyradiomics (``imageoperations.resampleImage``)
  instead keeps the origin corner, which shifts the grid by up to half a voxel;
* intensities interpolated from integer data (CT) are rounded to the nearest integer;
* the mask is interpolated like an image (linear) and voxels with a value >= 0.5 kept, where
  pyradiomics uses nearest neighbour.

A segment is processed on its bounding box only: the voxels of the full interpolated grid that
cover the box plus a margin are computed, from an original crop that covers them with room for
the interpolation kernel. The result is the same as interpolating the whole image and cropping
afterwards (the grid comes from the whole image), at the cost of the segment's box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from analysis.radiomics._sitk import sitk
from analysis.radiomics.params import Interpolation, Resampling
from analysis.radiomics.volume import Geometry

__all__ = [
    "Crop",
    "CropPlan",
    "apply_crop",
    "bounding_box",
    "crop_segment",
    "ibsi_grid",
    "plan_crop",
    "to_sitk",
]

_INTERPOLATORS = {
    Interpolation.NEAREST: sitk.sitkNearestNeighbor,
    Interpolation.LINEAR: sitk.sitkLinear,
    Interpolation.BSPLINE: sitk.sitkBSpline,
}
_KERNEL_MARGIN = 3  # original voxels beyond the needed region (cubic B-spline support is 2)


@dataclass(frozen=True)
class Crop:
    """A segment's image and mask on its (possibly interpolated) box, ``[slice, row, column]``."""

    image: npt.NDArray[Any]
    mask: npt.NDArray[np.bool_]
    geometry: Geometry


def bounding_box(mask: npt.NDArray[np.bool_]) -> tuple[tuple[int, int], ...] | None:
    """Inclusive ``(first, last)`` index per axis of the true voxels, or None when empty."""
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        box.append((int(hit[0]), int(hit[-1])))
    return tuple(box)


def to_sitk(array: npt.NDArray[Any], geometry: Geometry) -> Any:
    """A SimpleITK image of *array* (``[slice, row, column]``) with *geometry*."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def _sub_geometry(geometry: Geometry, start_zyx: npt.ArrayLike) -> Geometry:
    origin = geometry.index_to_patient(np.asarray(start_zyx, dtype=np.float64))[0]
    return Geometry(geometry.spacing, tuple(float(v) for v in origin), geometry.direction)  # type: ignore[arg-type]


def ibsi_grid(
    shape_zyx: tuple[int, ...], geometry: Geometry, spacing_mm: tuple[float, float, float]
) -> tuple[tuple[int, int, int], npt.NDArray[np.float64]]:
    """Size ``(z, y, x)`` of the IBSI interpolation grid of a whole image, and the continuous
    original index ``(z, y, x)`` of its first voxel (grid centres aligned)."""
    old = np.asarray(geometry.spacing[::-1], dtype=np.float64)  # z, y, x
    new = np.asarray(spacing_mm[::-1], dtype=np.float64)
    n = np.asarray(shape_zyx, dtype=np.float64)
    n_new = np.ceil(n * old / new - 1e-9).astype(int)
    first = (n - 1) / 2.0 - (n_new - 1) / 2.0 * new / old
    return (int(n_new[0]), int(n_new[1]), int(n_new[2])), first


@dataclass(frozen=True)
class CropPlan:
    """What to cut from the original arrays (``region``, with geometry ``source``) and, when
    interpolating, the output grid (``target`` geometry and ``target_size_zyx``)."""

    region: tuple[slice, slice, slice]
    source: Geometry
    target: Geometry | None = None
    target_size_zyx: tuple[int, int, int] | None = None


def plan_crop(
    shape_zyx: tuple[int, ...],
    mask: npt.NDArray[np.bool_],
    geometry: Geometry,
    margin: int,
    resampling: Resampling | None,
) -> CropPlan | None:
    """The segment's box plus *margin* voxels (of the output grid), or None for an empty mask."""
    box = bounding_box(mask)
    if box is None:
        return None
    if resampling is None:
        lo = [max(a - margin, 0) for a, _ in box]
        hi = [min(b + margin + 1, n) for (_, b), n in zip(box, shape_zyx, strict=True)]
        region = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        return CropPlan(region, _sub_geometry(geometry, lo))

    n_new, first = ibsi_grid(shape_zyx, geometry, resampling.spacing_mm)
    ratio = np.asarray(resampling.spacing_mm[::-1]) / np.asarray(geometry.spacing[::-1])
    box_lo = np.asarray([a for a, _ in box], dtype=np.float64)
    box_hi = np.asarray([b for _, b in box], dtype=np.float64)
    # new-grid index j sits at original index first + j * ratio
    j_lo = np.maximum(np.floor((box_lo - first) / ratio).astype(int) - margin, 0)
    j_hi = np.minimum(np.ceil((box_hi - first) / ratio).astype(int) + margin, np.asarray(n_new) - 1)
    size = j_hi - j_lo + 1
    need_lo = first + j_lo * ratio
    need_hi = first + j_hi * ratio
    o_lo = [max(math.floor(v) - _KERNEL_MARGIN, 0) for v in need_lo]
    o_hi = [
        min(math.ceil(v) + _KERNEL_MARGIN + 1, n) for v, n in zip(need_hi, shape_zyx, strict=True)
    ]
    region = (slice(o_lo[0], o_hi[0]), slice(o_lo[1], o_hi[1]), slice(o_lo[2], o_hi[2]))
    origin = geometry.index_to_patient(first + j_lo * ratio)[0]
    target = Geometry(
        spacing=resampling.spacing_mm,
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=geometry.direction,
    )
    target_size = (int(size[0]), int(size[1]), int(size[2]))
    return CropPlan(region, _sub_geometry(geometry, o_lo), target, target_size)


def apply_crop(
    image: npt.NDArray[Any],
    mask: npt.NDArray[np.bool_],
    plan: CropPlan,
    resampling: Resampling | None,
) -> Crop:
    """Interpolate the cut-out *image* and *mask* (``plan.region`` of the originals) on the
    plan's grid, IBSI style (see the module doc); a plain copy without interpolation."""
    if plan.target is None or plan.target_size_zyx is None or resampling is None:
        return Crop(np.array(image), np.array(mask, dtype=bool), plan.source)
    z, y, x = plan.target_size_zyx
    reference = sitk.Image([x, y, z], sitk.sitkUInt8)
    reference.SetSpacing(plan.target.spacing)
    reference.SetOrigin(plan.target.origin)
    reference.SetDirection(plan.target.direction)
    # the crop goes in as it is (int16 for CT): SimpleITK interpolates in double whatever the
    # pixel type and writes float64, so a float64 copy first (8 bytes a voxel, twice: numpy's
    # and SimpleITK's) would give the same values for four times the memory
    src = to_sitk(image, plan.source)
    moved = sitk.Resample(
        src, reference, sitk.Transform(), _INTERPOLATORS[resampling.interpolation], 0.0,
        sitk.sitkFloat64,
    )  # fmt: skip
    values = sitk.GetArrayFromImage(moved)
    if resampling.round_intensities:
        values = np.rint(values)
    src_mask = to_sitk(mask.view(np.uint8) if mask.dtype == np.bool_ else mask, plan.source)
    moved_mask = sitk.Resample(
        src_mask, reference, sitk.Transform(), _INTERPOLATORS[resampling.mask_interpolation], 0.0,
        sitk.sitkFloat32,
    )  # fmt: skip
    # IBSI keeps >= 0.5; float32 interpolation of exactly 0.5 may land a hair below
    new_mask = sitk.GetArrayFromImage(moved_mask) >= resampling.mask_threshold - 1e-6
    return Crop(values, new_mask, plan.target)


def crop_segment(
    image: npt.NDArray[Any],
    mask: npt.NDArray[np.bool_],
    geometry: Geometry,
    margin: int,
    resampling: Resampling | None,
) -> Crop | None:
    """:func:`plan_crop` and :func:`apply_crop` in one process; None for an empty mask."""
    plan = plan_crop(image.shape, mask, geometry, margin, resampling)
    if plan is None:
        return None
    return apply_crop(image[plan.region], mask[plan.region], plan, resampling)

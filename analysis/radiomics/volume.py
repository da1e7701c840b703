"""A CT volume from its slices: geometry from the Image Plane Module, values in Hounsfield units.

Inputs are plain values per slice (:class:`SliceInput`), the attributes of the Image Plane Module
(PS3.3 C.7.6.2) and the rescale of the CT Image Module (PS3.3 C.8.2.1):

* Image Position (Patient) (0020,0032) and Image Orientation (Patient) (0020,0037);
* Pixel Spacing (0028,0030): *row* spacing first (between rows, i.e. along a column), then column
  spacing (PS3.3 10.7.1.3);
* Rescale Slope / Intercept (0028,1053 / 0028,1052): HU = stored value x slope + intercept.

:func:`slice_input` reads those from a pydicom Dataset without changing it (the one place that
knows DICOM keywords). The volume is built as PS3.3 C.7.6.2.1.1 prescribes: slices are sorted by
their position projected on the slice normal (row cosine x column cosine); the slice spacing is
measured from those positions, never taken from Slice Thickness (0018,0050) or Spacing Between
Slices (0018,0088), which describe acquisition, not geometry. A series that cannot make one regular
grid (missing, duplicate or unevenly spaced positions, mixed orientation, size or pixel spacing,
positions off the normal: gantry tilt) is refused with :class:`QualityFlag` values saying why,
instead of a volume whose geometry would be wrong.

Arrays are indexed ``[slice, row, column]`` (SimpleITK's ``GetArrayFromImage`` order). Geometry is
given in ITK order ``(x = column, y = row, z = slice)``: :attr:`Geometry.spacing` in mm,
:attr:`Geometry.origin` the centre of the first voxel in patient coordinates (LPS, PS3.3
C.7.6.2.1.1), :attr:`Geometry.direction` the 3x3 matrix whose *columns* are the unit vectors of
the x, y and z index axes (row-major flattening, as ``SimpleITK.Image.SetDirection`` takes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Geometry",
    "QualityFlag",
    "SliceInput",
    "Volume",
    "VolumeResult",
    "build_volume",
    "slice_input",
]

#: Two positions closer than this along the normal are the same slice (mm).
DUPLICATE_TOLERANCE_MM = 1e-3
#: Slice gaps may differ from their median by this fraction before the spacing counts as uneven.
UNEVEN_TOLERANCE = 0.01
#: Direction cosines that differ by more than this are a different orientation.
ORIENTATION_TOLERANCE = 1e-4
#: In-plane offset between consecutive slice positions (mm) that is still "along the normal".
TILT_TOLERANCE_MM = 0.01

_INT16 = np.iinfo(np.int16)


class QualityFlag(StrEnum):
    """Why a series does not make one regular volume (each one refuses the volume)."""

    NO_SLICES = "no_slices"
    MISSING_POSITION = "missing_position"  # Image Position (Patient) absent on a slice
    MISSING_ORIENTATION = "missing_orientation"
    MISSING_PIXEL_SPACING = "missing_pixel_spacing"
    INVALID_ORIENTATION = "invalid_orientation"  # cosines not unit length or not orthogonal
    INCONSISTENT_ORIENTATION = "inconsistent_orientation"
    INCONSISTENT_SIZE = "inconsistent_size"  # Rows/Columns differ between slices
    INCONSISTENT_PIXEL_SPACING = "inconsistent_pixel_spacing"
    DUPLICATE_POSITION = "duplicate_position"  # two slices at one position
    UNEVEN_SPACING = "uneven_spacing"  # a gap (missing slice) or irregular positions
    POSITIONS_OFF_NORMAL = "positions_off_normal"  # gantry tilt / sheared stack
    NOT_2D = "not_2d"  # a pixel array that is not one greyscale frame


@dataclass(frozen=True)
class SliceInput:
    """One CT slice as plain values (see the module doc for the attributes they come from)."""

    pixels: npt.NDArray[Any]
    image_position: tuple[float, float, float] | None
    image_orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0


@dataclass(frozen=True)
class Geometry:
    """Voxel grid in patient space (ITK order; see the module doc)."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be three positive values, not {self.spacing}")
        if len(self.origin) != 3 or len(self.direction) != 9:
            raise ValueError("origin needs 3 values and direction 9")

    @property
    def direction_matrix(self) -> npt.NDArray[np.float64]:
        """Columns are the x, y, z index axes in patient coordinates."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def index_to_patient(self, index_zyx: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Patient coordinates (mm) of voxel centres given as ``[slice, row, column]`` rows."""
        idx = np.atleast_2d(np.asarray(index_zyx, dtype=np.float64))[:, ::-1]
        scaled = idx * np.asarray(self.spacing)
        out: npt.NDArray[np.float64] = np.asarray(self.origin) + scaled @ self.direction_matrix.T
        return out


@dataclass(frozen=True)
class Volume:
    """A regular 3-D grid of values (``[slice, row, column]``) with its geometry."""

    array: npt.NDArray[Any]
    geometry: Geometry

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a volume is 3-D, not {self.array.ndim}-D")


@dataclass(frozen=True)
class VolumeResult:
    """The volume, or ``None`` with the flags that refused it; :attr:`order` maps each volume
    slice to the index of its :class:`SliceInput` (so callers can keep their UIDs in step)."""

    volume: Volume | None
    flags: frozenset[QualityFlag] = field(default_factory=frozenset)
    order: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.volume is not None


def _float_tuple(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def slice_input(ds: Any) -> SliceInput:
    """The :class:`SliceInput` of a pydicom ``Dataset`` (read only; decodes Pixel Data)."""
    position = _float_tuple(ds.get("ImagePositionPatient"), 3)
    orientation = _float_tuple(ds.get("ImageOrientationPatient"), 6)
    spacing = _float_tuple(ds.get("PixelSpacing"), 2)
    return SliceInput(
        pixels=ds.pixel_array,
        image_position=position,  # type: ignore[arg-type]
        image_orientation=orientation,  # type: ignore[arg-type]
        pixel_spacing=spacing,  # type: ignore[arg-type]
        rescale_slope=float(ds.get("RescaleSlope", 1.0)),
        rescale_intercept=float(ds.get("RescaleIntercept", 0.0)),
    )


def _check_slices(slices: Sequence[SliceInput]) -> set[QualityFlag]:
    flags: set[QualityFlag] = set()
    if any(s.pixels.ndim != 2 for s in slices):
        flags.add(QualityFlag.NOT_2D)
    if any(s.image_position is None for s in slices):
        flags.add(QualityFlag.MISSING_POSITION)
    if any(s.image_orientation is None for s in slices):
        flags.add(QualityFlag.MISSING_ORIENTATION)
    if any(s.pixel_spacing is None for s in slices):
        flags.add(QualityFlag.MISSING_PIXEL_SPACING)
    elif len({s.pixel_spacing for s in slices}) > 1:
        spacings = np.asarray([s.pixel_spacing for s in slices], dtype=np.float64)
        if not np.allclose(spacings, spacings[0], rtol=1e-5):
            flags.add(QualityFlag.INCONSISTENT_PIXEL_SPACING)
    if len({s.pixels.shape for s in slices}) > 1:
        flags.add(QualityFlag.INCONSISTENT_SIZE)
    orientations = [s.image_orientation for s in slices if s.image_orientation is not None]
    if orientations:
        first_o = np.asarray(orientations[0])
        if any(np.abs(np.asarray(o) - first_o).max() > ORIENTATION_TOLERANCE for o in orientations):
            flags.add(QualityFlag.INCONSISTENT_ORIENTATION)
        row, col = first_o[:3], first_o[3:]
        unit = abs(np.linalg.norm(row) - 1) < 1e-3 and abs(np.linalg.norm(col) - 1) < 1e-3
        if not unit or abs(float(row @ col)) > 1e-3:
            flags.add(QualityFlag.INVALID_ORIENTATION)
    return flags


def _to_hu(slices: Sequence[SliceInput], order: Sequence[int]) -> npt.NDArray[Any]:
    """Stack in *order* and rescale; int16 when every value is an integer HU in range (CT
    almost always), float32 otherwise. One output array, filled slice by slice."""
    integral = all(
        float(s.rescale_slope).is_integer() and float(s.rescale_intercept).is_integer()
        for s in slices
    ) and all(np.issubdtype(s.pixels.dtype, np.integer) for s in slices)
    if integral:
        lo = min(int(s.pixels.min()) * s.rescale_slope + s.rescale_intercept for s in slices)
        hi = max(int(s.pixels.max()) * s.rescale_slope + s.rescale_intercept for s in slices)
        lo, hi = min(lo, hi), max(lo, hi)  # a negative slope swaps them
        integral = _INT16.min <= lo and hi <= _INT16.max
    dtype = np.int16 if integral else np.float32
    rows, cols = slices[0].pixels.shape
    out = np.empty((len(order), rows, cols), dtype=dtype)
    for k, i in enumerate(order):
        s = slices[i]
        if integral:
            out[k] = s.pixels.astype(np.int32) * int(s.rescale_slope) + int(s.rescale_intercept)
        else:
            out[k] = s.pixels.astype(np.float64) * s.rescale_slope + s.rescale_intercept
    return out


def build_volume(slices: Sequence[SliceInput]) -> VolumeResult:
    """Sort, check and stack *slices* into a volume in HU (PS3.3 C.7.6.2.1.1); see the module doc.

    A single slice gets the z spacing 1 mm (nothing measures it); everything that would make the
    grid irregular returns ``VolumeResult(None, flags)``.
    """
    if not slices:
        return VolumeResult(None, frozenset({QualityFlag.NO_SLICES}))
    flags = _check_slices(slices)
    if flags:
        return VolumeResult(None, frozenset(flags))
    orientation = np.asarray(slices[0].image_orientation, dtype=np.float64)
    row_cos, col_cos = orientation[:3], orientation[3:]
    normal = np.cross(row_cos, col_cos)
    positions = np.asarray([s.image_position for s in slices], dtype=np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along_sorted = along[order]
    gaps = np.diff(along_sorted)
    if gaps.size and gaps.min() < DUPLICATE_TOLERANCE_MM:
        flags.add(QualityFlag.DUPLICATE_POSITION)
    elif gaps.size:
        median = float(np.median(gaps))
        if np.abs(gaps - median).max() > UNEVEN_TOLERANCE * median:
            flags.add(QualityFlag.UNEVEN_SPACING)
        # consecutive positions must step along the normal only (no shear / gantry tilt)
        steps = np.diff(positions[order], axis=0)
        in_plane = steps - np.outer(steps @ normal, normal)
        if np.linalg.norm(in_plane, axis=1).max() > TILT_TOLERANCE_MM:
            flags.add(QualityFlag.POSITIONS_OFF_NORMAL)
    if flags:
        return VolumeResult(None, frozenset(flags))
    row_spacing, col_spacing = slices[0].pixel_spacing  # type: ignore[misc]
    z_spacing = float(np.mean(gaps)) if gaps.size else 1.0
    direction = np.column_stack([row_cos, col_cos, normal])
    geometry = Geometry(
        spacing=(float(col_spacing), float(row_spacing), z_spacing),
        origin=tuple(float(v) for v in positions[order[0]]),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction.ravel()),
    )
    order_t = tuple(int(i) for i in order)
    return VolumeResult(Volume(_to_hu(slices, order_t), geometry), frozenset(), order_t)

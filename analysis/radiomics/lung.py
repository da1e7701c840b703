"""Classical lung segmentation of a chest CT and the lung measures derived from it.

No learned model: a threshold, connected components and morphology, in the order of Hu, Hoffman
and Reinhardt (IEEE TMI 20(6), 2001), with the airway step of Kiraly et al. (Acad. Radiol. 9(10),
2002):

1. **air**: voxels below ``air_threshold_hu`` (default -500 HU, between lung parenchyma
   around -850 and soft tissue around 40);
2. **outside air** is removed slice by slice: air components that touch the in-plane border of
   the image (the air around the patient). In-plane only, because the lungs themselves touch the
   first and last slices of a chest CT;
3. **candidates**: 3-D components (face connectivity) of the remaining air, kept when they hold at
   least ``min_lung_fraction`` of the largest one and ``min_lung_ml`` (drops bowel gas, the
   stomach bubble, table gaps);
4. **airways**: the trachea is found as a small, round, central air region in the most superior
   slices of the candidates; the airway lumen is grown from it below a threshold raised from
   -1000 HU in steps until the grown volume leaks (more than doubles). Grown voxels that lie in
   the mediastinum, i.e. not enclosed in-plane by lung parenchyma, are the trachea and the main
   bronchi and are removed; intrapulmonary bronchi stay in the lung as anatomy has them;
5. **left and right**: the two largest 3-D components when the lungs are apart; when they touch
   (a single component, e.g. at the anterior junction line) they are split slice by slice at the
   least populated column near their middle (the mid-sagittal plane). Left is the patient's
   left, +x in DICOM patient coordinates (LPS, PS3.3 C.7.6.2.1.1);
6. **morphology** per lung on its bounding box: a closing (vessels and the fissures' partial
   volume) and a slice-by-slice hole fill (vessels fully inside the lung).

The derived measures (:func:`lung_measures`) follow the QIBA lung density profile terms: lung
volume (mL), %LAA-950 (percentage of lung voxels *below* -950 HU), Perc15 (the 15th percentile of
the lung's HU histogram, linear interpolation between order statistics, numpy's default), and the
mean lung density (HU), per lung and for both lungs.

Memory: the volume stays int16; masks are bool or uint8; the int32 label images cover only the
candidates' bounding box, and their sizes and members are found a slice at a time (no int64
copy for ``np.bincount``, no temporaries of ``np.isin``); 2-D steps go slice by slice. A
500-slice 512x512 CT (262 MB of int16) peaks well under 2 GB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage  # type: ignore[import-untyped]

from analysis.radiomics.volume import Geometry, Volume

__all__ = [
    "LungFlag",
    "LungLabel",
    "LungMeasures",
    "LungSegmentation",
    "LungSettings",
    "RegionMeasures",
    "lung_measures",
    "segment_lungs",
]

Mask = npt.NDArray[np.bool_]
_FACES = ndimage.generate_binary_structure(3, 1)
_FACES_2D = ndimage.generate_binary_structure(2, 1)


class LungLabel(IntEnum):
    """Values of :attr:`LungSegmentation.labels`."""

    BACKGROUND = 0
    RIGHT = 1
    LEFT = 2


class LungFlag(StrEnum):
    """What the segmentation noticed; none of them is silent."""

    NO_LUNG = "no_lung"  # no air component large enough
    ONE_LUNG = "one_lung"  # only one lung-sized component, no split possible
    LUNGS_SPLIT = "lungs_split"  # one component split at the mid-sagittal plane
    NO_TRACHEA = "no_trachea"  # no trachea in the superior slices: airways not removed
    AIRWAY_LEAK = "airway_leak"  # the airway lumen leaked at the lowest threshold
    NOT_AXIAL = "not_axial"  # slices are not axial: airway step skipped


@dataclass(frozen=True)
class LungSettings:
    """Thresholds and sizes (HU, mL, mm); defaults suit adult chest CT."""

    air_threshold_hu: int = -500
    min_lung_ml: float = 50.0
    min_lung_fraction: float = 0.1
    trachea_area_mm2: tuple[float, float] = (50.0, 800.0)
    trachea_search_mm: float = 60.0  # from the most superior slice holding candidates
    airway_thresholds_hu: tuple[int, ...] = (-990, -975, -960, -945, -930, -915, -900)
    airway_leak_ml: float = 50.0
    airway_max_ml: float = 400.0
    airway_region_fraction: float = 0.15  # of an in-plane air region, for it to be airway
    closing_radius_mm: float = 2.0


@dataclass(frozen=True)
class LungSegmentation:
    """``labels`` is uint8 on the volume's grid (:class:`LungLabel` values)."""

    labels: npt.NDArray[np.uint8]
    flags: frozenset[LungFlag]
    airway_threshold_hu: int | None

    def mask(self, which: LungLabel | None = None) -> Mask:
        """One lung, or both when *which* is None."""
        if which is None:
            return np.asarray(self.labels != LungLabel.BACKGROUND)
        return np.asarray(self.labels == which)


@dataclass(frozen=True)
class RegionMeasures:
    voxels: int
    volume_ml: float
    laa950_percent: float
    perc15_hu: float
    mean_hu: float


@dataclass(frozen=True)
class LungMeasures:
    right: RegionMeasures | None
    left: RegionMeasures | None
    total: RegionMeasures | None


def _remove_outside_air(air: Mask) -> None:
    """In place: clear, slice by slice, the air components touching the in-plane border."""
    for z in range(air.shape[0]):
        labels, n = ndimage.label(air[z], structure=_FACES_2D)
        if n == 0:
            continue
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        border = border[border != 0]
        if border.size:
            air[z] &= ~np.isin(labels, border)


def _bbox(mask: Mask, margin: int = 0) -> tuple[slice, ...] | None:
    if not mask.any():
        return None
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        lo = max(int(hit[0]) - margin, 0)
        hi = min(int(hit[-1]) + 1 + margin, mask.shape[axis])
        out.append(slice(lo, hi))
    return tuple(out)


def _label(mask: Mask, structure: npt.NDArray[Any] = _FACES) -> tuple[npt.NDArray[Any], int]:
    """Connected components of *mask*, int32 labels. Not uint16: scipy numbers the runs of
    each line before merging them, and past 65535 runs (a few hundred CT slices) it labels
    again into int32 and compares, seven bytes a voxel at once instead of four."""
    labels, n = ndimage.label(mask, structure=structure)
    return labels, int(n)


def _sizes(labels: npt.NDArray[Any], n: int) -> npt.NDArray[np.int64]:
    """Voxels per label (index = label), counted a slice at a time: ``np.bincount`` of the
    whole image would first make an int64 copy of it (twice the int32 labels)."""
    sizes = np.zeros(n + 1, dtype=np.int64)
    for plane in labels:
        sizes += np.bincount(plane.ravel(), minlength=n + 1)
    return sizes


def _members(labels: npt.NDArray[Any], ids: Any) -> Mask:
    """The voxels whose label is one of *ids* (a few labels: one comparison each, where
    ``np.isin`` would build temporaries the size of the labels)."""
    out = np.zeros(labels.shape, dtype=bool)
    for z in range(labels.shape[0]):  # temporaries of one slice
        for i in ids:
            out[z] |= labels[z] == i
    return out


def _large_components(mask: Mask, voxel_ml: float, settings: LungSettings) -> tuple[Any, list[int]]:
    """3-D labels of *mask* and the labels of lung-sized components, largest first."""
    labels, n = _label(mask)
    if n == 0:
        return labels, []
    sizes = _sizes(labels, n)
    sizes[0] = 0
    biggest = int(sizes.max())
    keep = [
        int(i)
        for i in np.argsort(sizes)[::-1]
        if sizes[i] > 0
        and sizes[i] * voxel_ml >= settings.min_lung_ml
        and sizes[i] >= settings.min_lung_fraction * biggest
    ]
    return labels, keep


def _superior_order(geometry: Geometry) -> tuple[int, bool]:
    """+1 when slice index grows towards the head (patient +z), -1 otherwise; and whether the
    slices are axial enough for a slice-by-slice airway search."""
    z_axis = geometry.direction_matrix[:, 2]
    return (1 if z_axis[2] >= 0 else -1), abs(float(z_axis[2])) > 0.8


def _find_trachea(
    cand: Mask, geometry: Geometry, settings: LungSettings
) -> tuple[int, Mask] | None:
    """(slice index, 2-D seed mask) of the trachea: in the superior slices, a candidate 2-D region
    of trachea size, round, nearest the middle column of the candidates."""
    step, _ = _superior_order(geometry)
    sx, sy, sz = geometry.spacing
    pixel_mm2 = sx * sy
    lo_a, hi_a = settings.trachea_area_mm2
    occupied = np.flatnonzero(cand.any(axis=(1, 2)))
    if occupied.size == 0:
        return None
    top = int(occupied[-1] if step > 0 else occupied[0])
    n_search = max(1, math.ceil(settings.trachea_search_mm / sz))
    cols = np.flatnonzero(cand.any(axis=(0, 1)))
    middle = (cols[0] + cols[-1]) / 2.0
    width = cols[-1] - cols[0] + 1
    for k in range(n_search):
        z = top - k * step
        if not 0 <= z < cand.shape[0]:
            break
        labels, _ = ndimage.label(cand[z], structure=_FACES_2D)
        best: tuple[float, int] | None = None
        for i, sl in enumerate(ndimage.find_objects(labels), start=1):
            region = labels[sl] == i
            area = float(region.sum()) * pixel_mm2
            if not lo_a <= area <= hi_a:
                continue
            h = (sl[0].stop - sl[0].start) * sy
            w = (sl[1].stop - sl[1].start) * sx
            if max(h, w) > 2.0 * min(h, w):  # elongated: not a trachea cross-section
                continue
            centre = (sl[1].start + sl[1].stop) / 2.0
            offset = abs(centre - middle)
            if offset > 0.2 * width:
                continue
            if best is None or offset < best[0]:
                best = (offset, i)
        if best is not None:
            return z, labels == best[1]
    return None


def _grow_airways(
    hu: npt.NDArray[Any],
    cand: Mask,
    trachea: tuple[int, Mask],
    voxel_ml: float,
    settings: LungSettings,
) -> tuple[Mask | None, int | None, bool]:
    """Airway lumen grown from the seed below increasing thresholds; the last tree before the
    grown volume leaks (more than doubles by more than ``airway_leak_ml``, or exceeds
    ``airway_max_ml``). Returns (tree, threshold, leaked at the first threshold)."""
    seed_z, seed = trachea
    grown: Mask | None = None
    chosen: int | None = None
    previous_ml = 0.0
    for threshold in settings.airway_thresholds_hu:
        lumen = hu < threshold
        lumen &= cand
        seed_here = seed & lumen[seed_z]
        if not seed_here.any():
            continue
        labels, _ = _label(lumen)
        del lumen
        ids = np.unique(labels[seed_z][seed_here])
        tree = _members(labels, ids[ids != 0])
        del labels
        size_ml = int(tree.sum()) * voxel_ml
        jump = size_ml > 2 * previous_ml and size_ml - previous_ml > settings.airway_leak_ml
        if size_ml > settings.airway_max_ml or (grown is not None and jump):
            return grown, chosen, grown is None
        grown, chosen, previous_ml = tree, threshold, size_ml
    return grown, chosen, False


def _mediastinal(tree: Mask, cand: Mask, min_fraction: float) -> Mask:
    """The slice-wise air regions that are mostly airway lumen: trachea and main bronchi run
    through the mediastinum as their own in-plane regions, whereas intrapulmonary bronchi are a
    small part of a lung's region."""
    out = np.zeros_like(tree)
    for z in np.flatnonzero(tree.any(axis=(1, 2))):
        labels, _ = ndimage.label(cand[z], structure=_FACES_2D)
        ids = np.unique(labels[tree[z]])
        for i in ids[ids != 0]:
            region = labels == i
            if np.count_nonzero(tree[z] & region) >= min_fraction * np.count_nonzero(region):
                out[z] |= region
    return out


def _split_midline(component: Mask) -> tuple[Mask, Mask]:
    """Split one 3-D mask slice by slice at the least populated column in the middle 40 % of
    its extent; returns (lower-column part, higher-column part)."""
    low = np.zeros_like(component)
    cols = np.flatnonzero(component.any(axis=(0, 1)))
    c0, c1 = int(cols[0]), int(cols[-1])
    band_lo = c0 + int(0.3 * (c1 - c0))
    band_hi = max(c0 + int(0.7 * (c1 - c0)), band_lo + 1)
    for z in np.flatnonzero(component.any(axis=(1, 2))):
        profile = component[z, :, band_lo:band_hi].sum(axis=0)
        cut = band_lo + int(np.argmin(profile))
        low[z, :, :cut] = component[z, :, :cut]
    return low, component & ~low


def _runs(ball: Mask) -> dict[tuple[int, int], int]:
    """The (z, y) offsets of a symmetric structuring element, each with the half width of its
    x-run (the element's row at that offset is one centred run, as an ellipsoid's rows are)."""
    rz, ry, rx = (n // 2 for n in ball.shape)
    out: dict[tuple[int, int], int] = {}
    for iz, iy in np.ndindex(ball.shape[:2]):
        row = np.flatnonzero(ball[iz, iy])
        if row.size == 0:
            continue
        half = rx - int(row[0])
        if row.size != 2 * half + 1 or int(row[-1]) != rx + half:
            raise ValueError("the structuring element's rows are not centred runs")
        out[(iz - rz, iy - ry)] = half
    return out


def _shifted(array: npt.NDArray[Any], dz: int, dy: int) -> tuple[tuple[slice, ...], ...]:
    """(target, source) slices with ``target[p] = source[p + (dz, dy, 0)]`` inside the array."""
    nz, ny = array.shape[0], array.shape[1]
    target = (slice(max(-dz, 0), nz - max(dz, 0)), slice(max(-dy, 0), ny - max(dy, 0)))
    source = (slice(max(dz, 0), nz - max(-dz, 0)), slice(max(dy, 0), ny - max(-dy, 0)))
    return target, source


def _closing(mask: Mask, ball: Mask) -> Mask:
    """``ndimage.binary_closing(mask, ball)`` (outside the array is background) for a
    symmetric element made of centred x-runs, as the union of its runs: a dilation is the OR of
    the mask shifted by each (z, y) offset after a 1-D maximum over the run's width along x, an
    erosion the AND of 1-D minima; each 1-D filter costs the same whatever the width. The same
    voxels as scipy's, which tests every element of the ball at every voxel."""
    runs = _runs(ball)
    widths = sorted(set(runs.values()))

    def apply(source: Mask, dilate: bool) -> Mask:
        line = ndimage.maximum_filter1d if dilate else ndimage.minimum_filter1d
        data = source.view(np.uint8)
        along_x = {w: line(data, 2 * w + 1, axis=2, mode="constant", cval=0).view(bool)
                   for w in widths}  # fmt: skip
        out = np.zeros_like(source) if dilate else np.ones_like(source)
        for (dz, dy), w in runs.items():
            target, origin = _shifted(source, dz, dy)
            if dilate:
                out[target] |= along_x[w][origin]
            else:
                out[target] &= along_x[w][origin]
                # the offset reaches outside the array (background) from the other voxels
                out[: target[0].start] = False
                out[target[0].stop :] = False
                out[:, : target[1].start] = False
                out[:, target[1].stop :] = False
        return out

    return apply(apply(mask, dilate=True), dilate=False)


def _fill_holes(plane: Mask) -> Mask:
    """``ndimage.binary_fill_holes(plane)``: everything but the background components (edge
    connectivity) that reach the border. One labelling instead of scipy's propagation of the
    border inwards, which repeats a dilation until nothing changes."""
    labels, n = ndimage.label(~plane, structure=_FACES_2D)
    if n == 0:
        return plane.copy()
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    outside = np.zeros(n + 1, dtype=bool)
    outside[border] = True
    outside[0] = False
    return np.asarray(~outside[labels])


def _close_and_fill(mask: Mask, geometry: Geometry, radius_mm: float) -> Mask:
    """Closing with an ellipsoid of *radius_mm* (at least one voxel per axis) and a 2-D hole
    fill per slice, on the mask's bounding box."""
    out = np.zeros_like(mask)
    box = _bbox(mask, margin=2)
    if box is None:
        return out
    sx, sy, sz = geometry.spacing
    rz, ry, rx = (max(1, round(radius_mm / s)) for s in (sz, sy, sx))
    zz, yy, xx = np.ogrid[-rz : rz + 1, -ry : ry + 1, -rx : rx + 1]
    ball = (zz / rz) ** 2 + (yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0
    sub = mask[box]
    padded = np.pad(sub, ((rz, rz), (ry, ry), (rx, rx)))
    closed = _closing(padded, ball)[rz:-rz, ry:-ry, rx:-rx]
    for z in range(closed.shape[0]):
        closed[z] = _fill_holes(closed[z])
    out[box] = closed
    return out


def _centroid(mask: Mask) -> npt.NDArray[np.float64]:
    """``np.argwhere(mask).mean(axis=0)`` from the mask's projections on each axis (no list of
    every voxel's indices): the index sums are exact integers either way, divided by the count."""
    count = np.count_nonzero(mask)
    out = np.empty(mask.ndim, dtype=np.float64)
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        per_index = np.count_nonzero(mask, axis=other)
        out[axis] = int(np.dot(per_index.astype(np.int64), np.arange(mask.shape[axis]))) / count
    return out


def segment_lungs(volume: Volume, settings: LungSettings | None = None) -> LungSegmentation:
    """Left and right lung of a chest CT in HU (see the module doc for the steps)."""
    settings = settings or LungSettings()
    hu = volume.array
    geometry = volume.geometry
    voxel_ml = geometry.voxel_volume_mm3 / 1000.0
    flags: set[LungFlag] = set()
    labels_out = np.zeros(hu.shape, dtype=np.uint8)

    air = hu < settings.air_threshold_hu
    _remove_outside_air(air)
    box = _bbox(air, margin=1)
    if box is None:
        return LungSegmentation(labels_out, frozenset({LungFlag.NO_LUNG}), None)
    air_box, hu_box = air[box].copy(), hu[box]  # the whole image's mask goes
    del air
    labels, keep = _large_components(air_box, voxel_ml, settings)
    if not keep:
        return LungSegmentation(labels_out, frozenset({LungFlag.NO_LUNG}), None)
    cand = _members(labels, keep)
    del labels, air_box

    airway_threshold: int | None = None
    _, axial = _superior_order(geometry)
    if not axial:
        flags.add(LungFlag.NOT_AXIAL)
    else:
        trachea = _find_trachea(cand, geometry, settings)
        if trachea is None:
            flags.add(LungFlag.NO_TRACHEA)
        else:
            tree, airway_threshold, leaked = _grow_airways(
                hu_box, cand, trachea, voxel_ml, settings
            )
            if leaked:
                flags.add(LungFlag.AIRWAY_LEAK)
            if tree is not None:
                cand &= ~_mediastinal(tree, cand, settings.airway_region_fraction)

    labels, keep = _large_components(cand, voxel_ml, settings)
    del cand
    parts: list[Mask] = [labels == k for k in keep[:2]]
    del labels
    if not parts:
        return LungSegmentation(labels_out, frozenset(flags | {LungFlag.NO_LUNG}), None)
    if len(parts) == 1:
        low, high = _split_midline(parts[0])
        if low.sum() * voxel_ml >= settings.min_lung_ml and high.sum() * voxel_ml >= (
            settings.min_lung_ml
        ):
            parts = [low, high]
            flags.add(LungFlag.LUNGS_SPLIT)
        else:
            flags.add(LungFlag.ONE_LUNG)

    closed = [_close_and_fill(p, geometry, settings.closing_radius_mm) for p in parts]
    # patient left is +x (LPS): compare the parts' centroids in patient coordinates
    offset = [s.start for s in box]
    centroids_x = [float(geometry.index_to_patient(_centroid(p) + offset)[0, 0]) for p in closed]
    sub = labels_out[box]
    if len(closed) == 1:
        # one lung: its side from where it lies relative to the body's middle column
        middle = (hu.shape[2] - 1) / 2.0
        centre = _centroid(closed[0]) + offset
        centre_mid = centre.copy()
        centre_mid[2] = middle
        side_x = (
            geometry.index_to_patient(centre)[0, 0] - geometry.index_to_patient(centre_mid)[0, 0]
        )
        sub[closed[0]] = LungLabel.LEFT if side_x > 0 else LungLabel.RIGHT
    else:
        left_i = int(np.argmax(centroids_x))
        sub[closed[1 - left_i]] = LungLabel.RIGHT
        sub[closed[left_i] & (sub == LungLabel.BACKGROUND)] = LungLabel.LEFT
    return LungSegmentation(labels_out, frozenset(flags), airway_threshold)


def _region(hu: npt.NDArray[Any], mask: Mask, voxel_ml: float) -> RegionMeasures | None:
    values = hu[mask]
    if values.size == 0:
        return None
    return RegionMeasures(
        voxels=int(values.size),
        volume_ml=values.size * voxel_ml,
        laa950_percent=100.0 * int(np.count_nonzero(values < -950)) / values.size,
        perc15_hu=float(np.percentile(values, 15)),
        mean_hu=float(values.mean(dtype=np.float64)),
    )


def lung_measures(volume: Volume, segmentation: LungSegmentation) -> LungMeasures:
    """Volume (mL), %LAA-950, Perc15 (HU) and mean lung density (HU) per lung and in total."""
    voxel_ml = volume.geometry.voxel_volume_mm3 / 1000.0
    hu = volume.array
    return LungMeasures(
        right=_region(hu, segmentation.mask(LungLabel.RIGHT), voxel_ml),
        left=_region(hu, segmentation.mask(LungLabel.LEFT), voxel_ml),
        total=_region(hu, segmentation.mask(), voxel_ml),
    )

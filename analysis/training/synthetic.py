"""Synthetic critical findings inserted into real CT slices (the demonstration model's labels).

Two kinds of large finding, each a smooth-edged blob with plausible HU:

* ``air``: a large air collection, -1000 to -970 HU (free air measures close to -1000). In the
  lung's outer part (60 % when the slice has lung) it is pneumothorax-like: it replaces lung
  parenchyma and its vessels. In soft tissue it is like free air or a gas-filled cavity, and at
  least 40 mm across there, since the trachea, oesophagus and bowel hold normal air up to about
  25 mm.
* ``dense``: a large hyperdense region, 65 to 95 HU (acute clotted blood; unenhanced liver,
  spleen and muscle stay below about 65 HU), in soft tissue: haematoma-like. Not drawn in the
  lung by default, where a blob of soft-tissue density is what the heart, the great vessels, the
  diaphragm's dome and a tumour also look like; ``site=Site.LUNG`` still places one there.

A blob is an ellipse (axis ratio 0.55 to 1, any angle) whose radius varies smoothly with angle
(harmonics 2 to 4), with a soft edge (1 to 3 mm, tanh profile) and multiplied by the (smoothed)
region it grows in, so it never leaves the lung or the body. Its inside gets the finding's HU plus
noise with the slice's own noise level (estimated from soft tissue), spatially correlated over a
3x3 neighbourhood like reconstructed CT noise; the edge blends with the original pixels.

A placement is drawn again when the region clips the blob below ``min_area_mm2`` or when its
mean change of HU is below ``min_contrast_hu`` (air put into bowel gas, blood into an isodense
organ): a label must stand for something visible.

Masks come from thresholds and box filters only (numpy, no image library): the body is what lies
between tissue (> -400 HU, opened to drop the table) along both the row and the column; the lung
is low-attenuation body (< -400 HU, smoothed so that vessels inside it count).

The same generator makes the training data (``train_triage.py``) and the tests' findings; the
seed decides everything (``numpy.random.Generator``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

__all__ = [
    "Anatomy",
    "Finding",
    "FindingKind",
    "FindingSpec",
    "Site",
    "anatomy",
    "box_mean",
    "correlated_noise",
    "insert_finding",
    "insert_finding_with_mask",
]

Array = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


class FindingKind(StrEnum):
    AIR = "air"
    DENSE = "dense"


class Site(StrEnum):
    LUNG = "lung"
    SOFT_TISSUE = "soft_tissue"


@dataclass(frozen=True)
class FindingSpec:
    """Ranges the generator draws from (uniformly)."""

    diameter_mm: tuple[float, float] = (25.0, 70.0)
    air_soft_tissue_diameter_mm: tuple[float, float] = (40.0, 80.0)
    """Air in soft tissue starts larger: trachea, oesophagus and bowel gas are normal air
    collections up to about 25 mm across."""
    air_hu: tuple[float, float] = (-1000.0, -970.0)
    dense_hu: tuple[float, float] = (65.0, 95.0)
    edge_mm: tuple[float, float] = (1.0, 3.0)
    min_area_mm2: float = 400.0
    """A blob that the region clips below this area (about a 23 mm disc) is placed again."""
    min_contrast_hu: float = 40.0
    """A blob whose mean change (weighted by its edge) is below this is placed again: air put
    into bowel gas, or blood into an isodense organ, would be a label without a finding."""
    lung_probability: float = 0.6
    """Chance of the lung as the site of an air finding when the slice has enough lung."""


@dataclass(frozen=True)
class Finding:
    """What was inserted: kind, site, centre (row, column in pixels), nominal diameter, HU and
    the area it covers after clipping to its region (soft edge counted by its weight)."""

    kind: FindingKind
    site: Site
    centre: tuple[int, int]
    diameter_mm: float
    hu: float
    area_mm2: float


@dataclass(frozen=True)
class Anatomy:
    """Where findings may go on one slice, and its noise level."""

    body: Mask
    lung: Mask
    lung_centres: npt.NDArray[np.intp]
    """Flat indices of candidate centres in the lung's outer part."""
    soft_centres: npt.NDArray[np.intp]
    """Flat indices of candidate centres in soft tissue, away from the skin."""
    soft_region: Mask
    noise_hu: float


def box_mean(image: npt.NDArray[np.generic], radius: int) -> Array:
    """Mean over the (2*radius+1)^2 box around each pixel, the box cut at the image's edges."""
    values = np.asarray(image, dtype=np.float64)
    if radius < 1:
        return values.copy()
    out = values
    for axis in (0, 1):
        n = out.shape[axis]
        csum = np.cumsum(out, axis=axis)
        csum = np.concatenate([np.zeros_like(np.take(csum, [0], axis=axis)), csum], axis=axis)
        idx = np.arange(n)
        hi = np.minimum(idx + radius + 1, n)
        lo = np.maximum(idx - radius, 0)
        total = np.take(csum, hi, axis=axis) - np.take(csum, lo, axis=axis)
        count = (hi - lo).astype(np.float64)
        shape = [1, 1]
        shape[axis] = n
        out = total / count.reshape(shape)
    return out


def _px(mm: float, spacing: Sequence[float]) -> int:
    return max(1, round(mm / min(spacing)))


def _filled(mask: Mask) -> Mask:
    """Pixels with *mask* on both sides along their row and along their column."""
    rows = (
        np.maximum.accumulate(mask, axis=1) & np.maximum.accumulate(mask[:, ::-1], axis=1)[:, ::-1]
    )
    cols = np.maximum.accumulate(mask, axis=0) & np.maximum.accumulate(mask[::-1], axis=0)[::-1]
    return np.asarray(rows & cols, dtype=np.bool_)


def _noise_hu(slice_hu: Array, region: Mask) -> float:
    """Noise standard deviation from horizontal neighbour differences in soft tissue (robust:
    median absolute deviation), 10 HU when there is too little soft tissue."""
    pairs = region[:, 1:] & region[:, :-1]
    diffs = (slice_hu[:, 1:] - slice_hu[:, :-1])[pairs]
    if diffs.size < 500:
        return 10.0
    mad = float(np.median(np.abs(diffs - np.median(diffs))))
    return max(2.0, 1.4826 * mad / math.sqrt(2.0))


def anatomy(slice_hu: npt.NDArray[np.generic], pixel_spacing: Sequence[float]) -> Anatomy:
    """Body, lung, candidate centres and noise level of one slice (see the module docstring)."""
    hu = np.asarray(slice_hu, dtype=np.float64)
    tissue = hu > -400.0
    r_open = _px(4.0, pixel_spacing)
    opened = box_mean(box_mean(tissue, r_open) > 0.999, r_open) > 0.001
    body = _filled(opened)
    low = box_mean(hu < -400.0, _px(2.0, pixel_spacing)) > 0.5
    r_close = _px(4.0, pixel_spacing)  # closing: vessels up to 8 mm count as lung
    closed = box_mean(box_mean(low, r_close) > 0.001, r_close) > 0.999
    inner = box_mean(body, _px(8.0, pixel_spacing)) > 0.999
    lung = closed & inner
    lung_share = box_mean(lung, _px(12.0, pixel_spacing))
    lung_centres = np.flatnonzero(lung & (lung_share < 0.85) & (lung_share > 0.3))
    deep = box_mean(body, _px(15.0, pixel_spacing)) > 0.999
    soft = deep & ~(box_mean(lung, _px(3.0, pixel_spacing)) > 0.01) & (hu > -200.0) & (hu < 200.0)
    soft_region = inner & ~lung & (box_mean(hu, _px(2.0, pixel_spacing)) < 250.0)
    noise = _noise_hu(hu, body & (hu > -150.0) & (hu < 150.0))
    return Anatomy(body, lung, lung_centres, np.flatnonzero(soft), soft_region, noise)


Box = tuple[int, int, int, int]


def _blob(
    shape: tuple[int, int],
    centre: tuple[int, int],
    spacing: Sequence[float],
    *,
    radius_mm: float,
    edge_mm: float,
    rng: np.random.Generator,
) -> tuple[Array, Box]:
    """A smooth-edged, lobulated ellipse of weights in [0, 1] over its bounding box (rows r0:r1,
    columns c0:c1 of the slice), and that box."""
    ratio = rng.uniform(0.55, 1.0)
    angle = rng.uniform(0.0, math.pi)
    harmonics = [(k, rng.uniform(0.0, 0.12), rng.uniform(0.0, 2 * math.pi)) for k in (2, 3, 4)]
    reach = radius_mm * 1.6 / math.sqrt(ratio) + 3 * edge_mm
    r0 = max(0, centre[0] - math.ceil(reach / spacing[0]))
    r1 = min(shape[0], centre[0] + math.ceil(reach / spacing[0]) + 1)
    c0 = max(0, centre[1] - math.ceil(reach / spacing[1]))
    c1 = min(shape[1], centre[1] + math.ceil(reach / spacing[1]) + 1)
    y = (np.arange(r0, r1, dtype=np.float64)[:, None] - centre[0]) * spacing[0]
    x = (np.arange(c0, c1, dtype=np.float64)[None, :] - centre[1]) * spacing[1]
    u = (x * math.cos(angle) + y * math.sin(angle)) * math.sqrt(ratio)
    v = (-x * math.sin(angle) + y * math.cos(angle)) / math.sqrt(ratio)
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    radius = radius_mm * (1.0 + sum(a * np.cos(k * theta + p) for k, a, p in harmonics))
    return 0.5 * (1.0 + np.tanh((radius - rho) / edge_mm)), (r0, r1, c0, c1)


def _smoothed(mask: Mask, box: Box, radius: int) -> Array:
    """``box_mean(mask, radius)`` over *box* only (computed from the box and its margin)."""
    r0, r1, c0, c1 = box
    m0, m1 = max(0, r0 - radius), min(mask.shape[0], r1 + radius)
    n0, n1 = max(0, c0 - radius), min(mask.shape[1], c1 + radius)
    smooth = box_mean(mask[m0:m1, n0:n1], radius)
    return smooth[r0 - m0 : r1 - m0, c0 - n0 : c1 - n0]


def correlated_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> Array:
    """Gaussian noise of standard deviation *sigma*, correlated over 3x3 pixels."""
    white = rng.standard_normal((shape[0] + 2, shape[1] + 2))
    smooth = box_mean(white, 1)[1:-1, 1:-1]
    return smooth * (sigma / max(float(smooth.std()), 1e-9))


def insert_finding(
    slice_hu: npt.NDArray[np.generic],
    pixel_spacing: Sequence[float],
    rng: np.random.Generator,
    kind: FindingKind | None = None,
    site: Site | None = None,
    *,
    spec: FindingSpec | None = None,
    slice_anatomy: Anatomy | None = None,
) -> tuple[npt.NDArray[np.float32], Finding | None]:
    """*slice_hu* with one finding drawn from *spec* by *rng*, and the finding; the slice
    unchanged and ``None`` when no site on it can hold one (no body, too little lung or soft
    tissue). *kind* and *site* are drawn when not given; *slice_anatomy* saves recomputing the
    masks when the same slice gets many findings."""
    out, finding, _ = insert_finding_with_mask(
        slice_hu, pixel_spacing, rng, kind, site, spec=spec, slice_anatomy=slice_anatomy
    )
    return out, finding


def insert_finding_with_mask(
    slice_hu: npt.NDArray[np.generic],
    pixel_spacing: Sequence[float],
    rng: np.random.Generator,
    kind: FindingKind | None = None,
    site: Site | None = None,
    *,
    spec: FindingSpec | None = None,
    slice_anatomy: Anatomy | None = None,
    attempts: int = 20,
) -> tuple[npt.NDArray[np.float32], Finding | None, npt.NDArray[np.float32]]:
    """As :func:`insert_finding`, with the finding's weight per pixel (its share of each pixel's
    value: 1 inside, falling to 0 across the edge; all 0 when nothing was inserted)."""
    spec = spec or FindingSpec()
    hu = np.asarray(slice_hu, dtype=np.float64)
    spacing = (float(pixel_spacing[0]), float(pixel_spacing[1]))
    anat = slice_anatomy or anatomy(hu, spacing)
    none = np.zeros(hu.shape, dtype=np.float32)
    kind = kind or (FindingKind.AIR if rng.random() < 0.5 else FindingKind.DENSE)
    has_lung = anat.lung_centres.size > 0
    if site is None:
        in_lung = kind is FindingKind.AIR and has_lung and rng.random() < spec.lung_probability
        site = Site.LUNG if in_lung else Site.SOFT_TISSUE
    centres = anat.lung_centres if site is Site.LUNG else anat.soft_centres
    region = anat.lung if site is Site.LUNG else anat.soft_region
    if centres.size == 0:
        return hu.astype(np.float32), None, none
    edge_mm = rng.uniform(*spec.edge_mm)
    pixel_area = spacing[0] * spacing[1]
    for _ in range(attempts):
        flat = int(centres[rng.integers(centres.size)])
        centre = (flat // hu.shape[1], flat % hu.shape[1])
        sizes = spec.diameter_mm
        if kind is FindingKind.AIR and site is Site.SOFT_TISSUE:
            sizes = spec.air_soft_tissue_diameter_mm
        diameter = rng.uniform(*sizes)
        blob, box = _blob(
            hu.shape, centre, spacing, radius_mm=diameter / 2, edge_mm=edge_mm, rng=rng
        )
        weight = blob * _smoothed(region, box, _px(edge_mm, spacing))
        area = float(weight.sum()) * pixel_area
        if area < spec.min_area_mm2:
            continue
        r0, r1, c0, c1 = box
        under = hu[r0:r1, c0:c1]
        value = rng.uniform(*(spec.air_hu if kind is FindingKind.AIR else spec.dense_hu))
        contrast = float((np.abs(value - under) * weight).sum()) / float(weight.sum())
        if contrast < spec.min_contrast_hu:
            continue
        fill = value + correlated_noise(weight.shape, anat.noise_hu, rng)
        out = hu.copy()
        out[r0:r1, c0:c1] = under * (1.0 - weight) + fill * weight
        mask = none
        mask[r0:r1, c0:c1] = weight
        finding = Finding(kind, site, centre, diameter, value, area)
        return out.astype(np.float32), finding, mask
    return hu.astype(np.float32), None, none

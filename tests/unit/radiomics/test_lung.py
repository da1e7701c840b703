"""Lung segmentation on the real 48-slice chest CT, and the measures against an independent
computation that reads the DICOM files itself (pixel values, Pixel Spacing, positions)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage  # type: ignore[import-untyped]

from analysis.radiomics.lung import (
    LungFlag,
    LungLabel,
    LungSegmentation,
    lung_measures,
    segment_lungs,
)
from analysis.radiomics.volume import Geometry, Volume

ROOT = Path(__file__).resolve().parents[3]


def test_both_lungs_found_with_plausible_volumes(
    ct_volume: Volume, lungs: LungSegmentation
) -> None:
    assert lungs.flags == frozenset(), lungs.flags
    measures = lung_measures(ct_volume, lungs)
    assert measures.left is not None and measures.right is not None and measures.total is not None
    for lung in (measures.left, measures.right):
        assert 500 < lung.volume_ml < 4500
        assert -950 < lung.mean_hu < -650  # aerated lung
    assert measures.total.volume_ml == pytest.approx(
        measures.left.volume_ml + measures.right.volume_ml
    )
    assert 1500 < measures.total.volume_ml < 8000
    print(f"lung1: right {measures.right}, left {measures.left}")


def test_left_is_the_patients_left(ct_volume: Volume, lungs: LungSegmentation) -> None:
    """Patient left is +x (LPS): the left lung's centroid has the larger x."""
    x = {}
    for label in (LungLabel.LEFT, LungLabel.RIGHT):
        centre = np.argwhere(lungs.mask(label)).mean(axis=0)
        x[label] = ct_volume.geometry.index_to_patient(centre)[0, 0]
    assert x[LungLabel.LEFT] > x[LungLabel.RIGHT] + 100  # mm apart


def test_outside_air_and_trachea_are_excluded(ct_volume: Volume, lungs: LungSegmentation) -> None:
    """No lung voxel touches the image border, and the trachea (found here independently: an air
    region of trachea size near the middle column of the upper slices, with soft tissue around
    it) is not lung."""
    labels = lungs.labels
    assert not labels[:, 0, :].any() and not labels[:, -1, :].any()
    assert not labels[:, :, 0].any() and not labels[:, :, -1].any()
    pixel_mm2 = ct_volume.geometry.spacing[0] * ct_volume.geometry.spacing[1]
    found = 0
    for z in range(30, 48):
        regions, n = ndimage.label(ct_volume.array[z] < -900)
        for i in range(1, n + 1):
            region = regions == i
            rows, cols = np.nonzero(region)
            area = region.sum() * pixel_mm2
            central = 0.4 * 512 < cols.mean() < 0.6 * 512
            inside = rows.min() > 0 and rows.max() < 511 and cols.min() > 0 and cols.max() < 511
            ring = ndimage.binary_dilation(region, iterations=6) & ~ndimage.binary_dilation(
                region, iterations=3
            )
            in_tissue = (ct_volume.array[z][ring] > -500).mean() > 0.9
            if central and inside and in_tissue and 80 < area < 600:
                found += 1
                assert not labels[z][region].any(), f"trachea in the lung mask at slice {z}"
    assert found >= 10  # the trachea was there to be excluded


def _independent_measures(ct_files: list[Path], mask: np.ndarray) -> tuple[float, float, float]:
    """Volume (mL), %LAA-950 and Perc15 recomputed from the DICOM files: HU from each file's own
    rescale, voxel size from Pixel Spacing and the position gap, Perc15 from sorted values."""
    datasets = sorted(
        (pydicom.dcmread(f) for f in ct_files), key=lambda d: float(d.ImagePositionPatient[2])
    )
    gap = float(datasets[1].ImagePositionPatient[2]) - float(datasets[0].ImagePositionPatient[2])
    dy, dx = (float(v) for v in datasets[0].PixelSpacing)
    count = 0
    low = 0
    values = []
    for k, ds in enumerate(datasets):
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        inside = hu[mask[k]]
        count += inside.size
        low += int((inside < -950).sum())
        values.append(inside)
    ordered = np.sort(np.concatenate(values))
    rank = 0.15 * (ordered.size - 1)
    below = math.floor(rank)
    perc15 = ordered[below] + (rank - below) * (
        ordered[min(below + 1, ordered.size - 1)] - ordered[below]
    )
    return count * dx * dy * gap / 1000.0, 100.0 * low / count, float(perc15)


@pytest.mark.parametrize(
    "which", [LungLabel.LEFT, LungLabel.RIGHT, None], ids=["left", "right", "total"]
)
def test_measures_equal_an_independent_computation(
    ct_files: list[Path], ct_volume: Volume, lungs: LungSegmentation, which: LungLabel | None
) -> None:
    measures = lung_measures(ct_volume, lungs)
    region = {LungLabel.LEFT: measures.left, LungLabel.RIGHT: measures.right, None: measures.total}[
        which
    ]
    assert region is not None
    volume_ml, laa, perc15 = _independent_measures(ct_files, lungs.mask(which))
    assert region.volume_ml == pytest.approx(volume_ml, rel=1e-9)
    assert region.laa950_percent == pytest.approx(laa, rel=1e-9)
    assert region.perc15_hu == pytest.approx(perc15, abs=1e-9)
    assert 0.0 < laa < 30.0


def _synthetic_chest(touching: bool) -> Volume:
    """Air around a soft-tissue body holding two lung ellipsoids (-850 HU), apart or fused."""
    z, y, x = np.ogrid[:40, :96, :128]
    image = np.full((40, 96, 128), -1000, dtype=np.int16)
    body = ((y - 48) / 44.0) ** 2 + ((x - 64) / 60.0) ** 2 <= 1.0
    image[:, body[0] if body.ndim == 3 else body] = 40
    half_gap = 0 if touching else 6
    for centre in (64 - 24 - half_gap, 64 + 24 + half_gap):
        lung = ((z - 20) / 17.0) ** 2 + ((y - 48) / 30.0) ** 2 + ((x - centre) / 25.0) ** 2 <= 1.0
        image[lung] = -850
    return Volume(image, Geometry((1.5, 1.5, 2.5), (0.0, 0.0, 0.0)))


@pytest.mark.parametrize("touching", [False, True], ids=["apart", "fused"])
def test_synthetic_lungs_are_split_left_and_right(touching: bool) -> None:
    volume = _synthetic_chest(touching)
    seg = segment_lungs(volume)
    assert (LungFlag.LUNGS_SPLIT in seg.flags) is touching
    assert LungFlag.NO_TRACHEA in seg.flags  # none was drawn
    left, right = seg.mask(LungLabel.LEFT), seg.mask(LungLabel.RIGHT)
    # identity geometry: +x is patient left, so the higher columns are the left lung
    assert np.argwhere(left)[:, 2].mean() > np.argwhere(right)[:, 2].mean()
    truth = volume.array == -850
    assert (left.sum() + right.sum()) == pytest.approx(truth.sum(), rel=0.02)
    assert left.sum() == pytest.approx(right.sum(), rel=0.1)


@pytest.mark.parametrize("radii", [(1, 4, 4), (1, 1, 1), (2, 3, 5), (3, 2, 2), (1, 2, 7)])
@pytest.mark.parametrize("density", [0.05, 0.3, 0.6, 0.9])
def test_closing_by_runs_is_scipys_closing(radii: tuple[int, int, int], density: float) -> None:
    """The closing of the morphology step, done run by run, closes exactly the voxels scipy's
    binary_closing closes with the same ellipsoid, at the borders too."""
    from analysis.radiomics.lung import _closing

    rz, ry, rx = radii
    zz, yy, xx = np.ogrid[-rz : rz + 1, -ry : ry + 1, -rx : rx + 1]
    ball = (zz / rz) ** 2 + (yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0
    rng = np.random.default_rng(int(density * 100) + sum(radii))
    mask = rng.random((9, 31, 37)) < density
    expected = ndimage.binary_closing(mask, structure=ball)
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(_closing(mask, ball), expected)


@pytest.mark.parametrize("density", [0.0, 0.5, 0.7, 0.95, 1.0])
def test_hole_fill_is_scipys(density: float) -> None:
    """The per-slice hole fill fills exactly what scipy's binary_fill_holes fills."""
    from analysis.radiomics.lung import _fill_holes

    rng = np.random.default_rng(int(density * 100))
    holes = 0
    for _ in range(20):
        plane = ndimage.binary_opening(rng.random((40, 53)) < density) | (
            rng.random((40, 53)) < density / 3
        )
        expected = ndimage.binary_fill_holes(plane)
        holes += int((expected != plane).any())
        np.testing.assert_array_equal(_fill_holes(plane), expected)
    assert holes > 0 or density in (0.0, 1.0)


def test_centroid_is_the_mean_voxel_index() -> None:
    from analysis.radiomics.lung import _centroid

    rng = np.random.default_rng(8)
    for density in (0.001, 0.3, 0.9):
        mask = rng.random((13, 47, 61)) < density
        assert mask.any()
        np.testing.assert_array_equal(_centroid(mask), np.argwhere(mask).mean(axis=0))


def test_no_air_no_lung() -> None:
    volume = Volume(
        np.full((4, 8, 8), 40, dtype=np.int16), Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    )
    seg = segment_lungs(volume)
    assert seg.flags == frozenset({LungFlag.NO_LUNG})
    assert lung_measures(volume, seg).total is None


_CHILD = """
import json, resource, sys
import numpy as np
from analysis.radiomics.lung import lung_measures, segment_lungs
from analysis.radiomics.volume import Geometry, Volume
array = np.load(sys.argv[1])
volume = Volume(array, Geometry((0.5703125, 0.5703125, 5.0), (-146.0, -325.0, -777.5)))
seg = segment_lungs(volume)
m = lung_measures(volume, seg)
print(json.dumps({"rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "left": m.left is not None, "right": m.right is not None}))
"""


@pytest.mark.slow
def test_500_slice_ct_within_2_gb(ct_volume: Volume, tmp_path: Path) -> None:
    """A 500-slice 512x512 CT (the 48 slices repeated) is segmented and measured in a fresh
    process whose peak resident memory stays under 2 GB."""
    reps = math.ceil(500 / ct_volume.array.shape[0])
    big = np.concatenate([ct_volume.array] * reps)[:500]
    path = tmp_path / "ct500.npy"
    np.save(path, big)
    del big
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=280,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    report = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"500-slice CT: peak RSS {report['rss_kb'] / 1024:.0f} MiB")
    assert report["left"] and report["right"]
    assert report["rss_kb"] < 2 * 1024 * 1024

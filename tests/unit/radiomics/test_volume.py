"""Volume geometry from CT slices: sorting along the normal, spacing from positions, HU, and a
flag (no volume) for each way a series fails to make one regular grid."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from analysis.radiomics.volume import QualityFlag, SliceInput, Volume, build_volume, slice_input

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def make_slices(
    n: int = 5, spacing: float = 2.5, shape: tuple[int, int] = (4, 3)
) -> list[SliceInput]:
    """Axial slices, z from 10 upwards, pixel value = 100 * slice number + position in plane."""
    return [
        SliceInput(
            pixels=(np.arange(shape[0] * shape[1]).reshape(shape) + 100 * k).astype(np.uint16),
            image_position=(-5.0, 7.0, 10.0 + k * spacing),
            image_orientation=AXIAL,
            pixel_spacing=(0.8, 0.6),
            rescale_slope=1.0,
            rescale_intercept=-1024.0,
        )
        for k in range(n)
    ]


def test_shuffled_slices_are_sorted_and_geometry_comes_from_positions() -> None:
    slices = make_slices()
    order = [3, 0, 4, 1, 2]
    shuffled = [replace(slices[i], image_position=slices[i].image_position) for i in order]
    result = build_volume(shuffled)
    assert result.ok and result.flags == frozenset()
    volume = result.volume
    assert volume is not None
    assert [order[i] for i in result.order] == [0, 1, 2, 3, 4]
    assert volume.array.dtype == np.int16
    assert volume.array[:, 0, 0].tolist() == [100 * k - 1024 for k in range(5)]
    # column spacing (x) is Pixel Spacing's second value, row spacing (y) its first
    assert volume.geometry.spacing == (0.6, 0.8, 2.5)
    assert volume.geometry.origin == (-5.0, 7.0, 10.0)
    # voxel (slice 2, row 1, column 2) sits at origin + 2 columns + 1 row + 2 slices
    assert np.allclose(volume.geometry.index_to_patient([2, 1, 2])[0], [-5 + 1.2, 7 + 0.8, 15.0])


def test_slice_thickness_is_not_used_spacing_follows_positions() -> None:
    result = build_volume(make_slices(spacing=1.25))
    assert result.volume is not None and result.volume.geometry.spacing[2] == pytest.approx(1.25)


def test_descending_positions_and_oblique_orientation() -> None:
    """A stack ordered feet-first with a rotated plane still sorts along its own normal."""
    c, s = np.cos(0.3), np.sin(0.3)
    orientation = (c, s, 0.0, -s, c, 0.0)
    slices = [
        replace(sl, image_orientation=orientation, image_position=(0.0, 0.0, 50.0 - 3.0 * k))
        for k, sl in enumerate(make_slices())
    ]
    result = build_volume(slices)
    assert result.volume is not None
    assert result.order == (4, 3, 2, 1, 0)
    assert result.volume.geometry.spacing[2] == pytest.approx(3.0)
    assert np.allclose(result.volume.geometry.direction_matrix[:, 0], [c, s, 0])


def test_float_rescale_gives_float_hu() -> None:
    slices = [replace(s, rescale_slope=0.5, rescale_intercept=-1000.25) for s in make_slices()]
    volume = build_volume(slices).volume
    assert volume is not None and volume.array.dtype == np.float32
    assert volume.array[1, 0, 1] == pytest.approx(101 * 0.5 - 1000.25)


@pytest.mark.parametrize(
    ("damage", "flag"),
    [
        (lambda s: s[:2] + s[3:], QualityFlag.UNEVEN_SPACING),
        (lambda s: [*s, s[2]], QualityFlag.DUPLICATE_POSITION),
        (lambda s: [replace(s[0], image_position=None), *s[1:]], QualityFlag.MISSING_POSITION),
        (
            lambda s: [replace(s[0], image_orientation=None), *s[1:]],
            QualityFlag.MISSING_ORIENTATION,
        ),
        (lambda s: [replace(s[0], pixel_spacing=None), *s[1:]], QualityFlag.MISSING_PIXEL_SPACING),
        (
            lambda s: [replace(s[0], image_orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0)), *s[1:]],
            QualityFlag.INCONSISTENT_ORIENTATION,
        ),
        (
            lambda s: [replace(s[0], image_orientation=(1.0, 0.0, 0.0, 1.0, 0.0, 0.0)), *s[1:]],
            QualityFlag.INVALID_ORIENTATION,
        ),
        (lambda s: [replace(s[0], pixels=s[0].pixels[:3]), *s[1:]], QualityFlag.INCONSISTENT_SIZE),
        (
            lambda s: [replace(s[0], pixel_spacing=(0.8, 0.7)), *s[1:]],
            QualityFlag.INCONSISTENT_PIXEL_SPACING,
        ),
        (
            lambda s: [
                replace(x, image_position=(-5.0, 7.0 + 0.5 * k, x.image_position[2]))
                for k, x in enumerate(s)
            ],
            QualityFlag.POSITIONS_OFF_NORMAL,
        ),
        (lambda s: [replace(s[0], pixels=s[0].pixels[None]), *s[1:]], QualityFlag.NOT_2D),
        (lambda s: [], QualityFlag.NO_SLICES),
    ],
    ids=lambda v: v.value if isinstance(v, QualityFlag) else "",
)
def test_each_defect_is_flagged_and_refuses_the_volume(damage, flag: QualityFlag) -> None:  # type: ignore[no-untyped-def]
    result = build_volume(damage(make_slices()))
    assert not result.ok
    assert flag in result.flags


def test_small_position_jitter_is_tolerated() -> None:
    slices = make_slices()
    jittered = [
        replace(s, image_position=(-5.0, 7.0, s.image_position[2] + 0.001 * (k % 2)))  # type: ignore[index]
        for k, s in enumerate(slices)
    ]
    assert build_volume(jittered).ok


def test_real_ct_series(ct_files: list[Path], ct_volume: Volume) -> None:
    """The 48-slice CT: shuffled files give the same volume, in HU, 5 mm apart."""
    datasets = [pydicom.dcmread(f) for f in ct_files]
    shuffled = datasets[::-1][::2] + datasets[::-1][1::2]
    again = build_volume([slice_input(ds) for ds in shuffled]).volume
    assert again is not None
    assert np.array_equal(again.array, ct_volume.array)
    assert ct_volume.array.shape == (48, 512, 512)
    assert ct_volume.geometry.spacing == pytest.approx((0.5703125, 0.5703125, 5.0))
    ds = datasets[0]
    first = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    z0 = float(ds.ImagePositionPatient[2])
    k = round((z0 - ct_volume.geometry.origin[2]) / 5.0)
    assert np.array_equal(ct_volume.array[k], first)
    assert ct_volume.array.min() >= -1024

"""IBSI interpolation (reference manual 2.4): the grid keeps the image centre, intensities are
rounded, the mask is interpolated linearly and kept at >= 0.5, and a segment's crop gives the
voxels that interpolating the whole image would give."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.radiomics._sitk import sitk
from analysis.radiomics.params import Interpolation, Resampling
from analysis.radiomics.preprocess import bounding_box, crop_segment, ibsi_grid, to_sitk
from analysis.radiomics.volume import Geometry

# an oblique, anisotropic grid: every axis and the direction matter
C, S = np.cos(0.4), np.sin(0.4)
GEOMETRY = Geometry((0.7, 0.9, 2.5), (-30.0, 12.0, 100.0), (C, -S, 0.0, S, C, 0.0, 0.0, 0.0, 1.0))


def test_grid_keeps_the_centre() -> None:
    """IBSI manual example geometry: n voxels of s mm to s_new mm."""
    size, first = ibsi_grid((5, 4, 7), GEOMETRY, (1.0, 1.0, 1.0))
    old = np.array([2.5, 0.9, 0.7])
    new = np.ones(3)
    n = np.array([5, 4, 7])
    assert size == tuple(int(v) for v in np.ceil(n * old / new))
    # the centre of the new grid is the centre of the old one
    centre_old = (n - 1) / 2.0
    centre_new = first + (np.array(size) - 1) / 2.0 * new / old
    assert np.allclose(centre_new, centre_old)


def _whole_then_crop(image: np.ndarray, resampling: Resampling) -> tuple[np.ndarray, Geometry]:
    """Interpolate the whole image on the IBSI grid with SimpleITK directly."""
    size, first = ibsi_grid(image.shape, GEOMETRY, resampling.spacing_mm)
    origin = GEOMETRY.index_to_patient(first)[0]
    reference = sitk.Image([size[2], size[1], size[0]], sitk.sitkFloat64)
    reference.SetSpacing(resampling.spacing_mm)
    reference.SetOrigin(tuple(origin))
    reference.SetDirection(GEOMETRY.direction)
    out = sitk.Resample(
        to_sitk(image.astype(np.float64), GEOMETRY),
        reference,
        sitk.Transform(),
        sitk.sitkLinear,
        0.0,
    )
    return sitk.GetArrayFromImage(out), Geometry(
        resampling.spacing_mm, tuple(origin), GEOMETRY.direction
    )


def test_crop_equals_whole_image_interpolation() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(-1000, 400, (12, 30, 26)).astype(np.int16)
    mask = np.zeros(image.shape, dtype=bool)
    mask[4:8, 10:19, 7:15] = True
    resampling = Resampling((1.0, 1.0, 1.0))
    crop = crop_segment(image, mask, GEOMETRY, 2, resampling)
    assert crop is not None
    whole, whole_geometry = _whole_then_crop(image, resampling)
    # locate the crop in the whole grid from its origin
    offset = np.linalg.solve(
        whole_geometry.direction_matrix * np.asarray(whole_geometry.spacing),
        np.asarray(crop.geometry.origin) - np.asarray(whole_geometry.origin),
    )[::-1]
    start = np.rint(offset).astype(int)
    assert np.allclose(offset, start, atol=1e-6)
    region = tuple(slice(a, a + n) for a, n in zip(start, crop.image.shape, strict=True))
    assert np.all(crop.image == np.rint(crop.image))  # rounded
    # equal after rounding, except where the value sits on .5 and float noise decides
    differ = crop.image != np.rint(whole[region])
    assert np.abs(crop.image - whole[region]).max() <= 0.5 + 1e-6
    assert np.all(np.abs(np.abs(whole[region][differ] % 1) - 0.5) < 1e-6)
    assert differ.sum() <= 2


def test_mask_is_interpolated_linearly_and_kept_at_half() -> None:
    """A block resampled to half its spacing keeps the voxels whose linear interpolation reaches
    0.5; on a thin diagonal structure nearest neighbour keeps a different set."""
    geometry = Geometry((2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    image = np.zeros((6, 6, 6), dtype=np.int16)
    mask = np.zeros(image.shape, dtype=bool)
    mask[2:4, 2:4, 2:4] = True
    linear = crop_segment(image, mask, geometry, 3, Resampling((1.0, 1.0, 1.0)))
    nearest = crop_segment(
        image,
        mask,
        geometry,
        3,
        Resampling((1.0, 1.0, 1.0), mask_interpolation=Interpolation.NEAREST),
    )
    assert linear is not None and nearest is not None
    # along one axis the new voxels sit at old indices -0.25, 0.25, 0.75, ...: linear values
    # 0.25/0.75 around the block edges; >= 0.5 keeps the inner ones
    profile_linear = linear.mask.any(axis=(0, 1))
    profile_nearest = nearest.mask.any(axis=(0, 1))
    assert profile_linear.sum() == 4  # old indices 1.75 .. 3.25
    assert profile_nearest.sum() == 4
    # the two agree here, but not on a thin diagonal structure:
    thin = np.zeros((6, 6, 6), dtype=bool)
    for k in range(6):
        thin[k, k, 2] = True
    a = crop_segment(image, thin, geometry, 3, Resampling((1.0, 1.0, 1.0)))
    b = crop_segment(
        image,
        thin,
        geometry,
        3,
        Resampling((1.0, 1.0, 1.0), mask_interpolation=Interpolation.NEAREST),
    )
    assert a is not None and b is not None
    assert a.mask.sum() != b.mask.sum()


def test_without_resampling_the_crop_is_the_box_plus_margin() -> None:
    image = np.arange(10 * 10 * 10).reshape(10, 10, 10)
    mask = np.zeros(image.shape, dtype=bool)
    mask[0, 4, 5:7] = True
    crop = crop_segment(image, mask, GEOMETRY, 2, None)
    assert crop is not None
    assert bounding_box(mask) == ((0, 0), (4, 4), (5, 6))
    assert crop.image.shape == (3, 5, 6)  # clipped at slice 0
    assert np.array_equal(crop.image, image[0:3, 2:7, 3:9])
    assert np.allclose(crop.geometry.origin, GEOMETRY.index_to_patient([0, 2, 3])[0])
    assert crop_segment(image, np.zeros_like(mask), GEOMETRY, 2, None) is None


def test_bad_resampling_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="spacing_mm"):
        Resampling((1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="mask_interpolation"):
        Resampling((1.0, 1.0, 1.0), mask_interpolation=Interpolation.BSPLINE)


@pytest.mark.parametrize("interpolation", list(Interpolation))
@pytest.mark.parametrize("mask_interpolation", [Interpolation.NEAREST, Interpolation.LINEAR])
def test_integer_crop_interpolates_as_its_float64_copy(
    interpolation: Interpolation, mask_interpolation: Interpolation
) -> None:
    """CT crops reach SimpleITK as int16 and the masks as uint8: the values are those of the
    same crop converted to float64 (and float32) first, bit for bit, unrounded."""
    from analysis.radiomics.preprocess import apply_crop, plan_crop

    rng = np.random.default_rng(5)
    image = rng.integers(-1000, 400, (10, 27, 23)).astype(np.int16)
    mask = np.zeros(image.shape, dtype=bool)
    mask[3:7, 8:19, 5:16] = rng.random((4, 11, 11)) < 0.7
    resampling = Resampling((0.7, 1.3, 0.9), interpolation, False, mask_interpolation)
    plan = plan_crop(image.shape, mask, GEOMETRY, 2, resampling)
    assert plan is not None and plan.target is not None and plan.target_size_zyx is not None
    crop = apply_crop(image[plan.region], mask[plan.region], plan, resampling)

    z, y, x = plan.target_size_zyx
    reference = sitk.Image([x, y, z], sitk.sitkUInt8)
    reference.SetSpacing(plan.target.spacing)
    reference.SetOrigin(plan.target.origin)
    reference.SetDirection(plan.target.direction)
    kinds = {Interpolation.NEAREST: sitk.sitkNearestNeighbor, Interpolation.LINEAR: sitk.sitkLinear,
             Interpolation.BSPLINE: sitk.sitkBSpline}  # fmt: skip
    as_float = sitk.Resample(to_sitk(image[plan.region].astype(np.float64), plan.source),
                             reference, sitk.Transform(), kinds[interpolation], 0.0,
                             sitk.sitkFloat64)  # fmt: skip
    mask_float = sitk.Resample(to_sitk(mask[plan.region].astype(np.float32), plan.source),
                               reference, sitk.Transform(), kinds[mask_interpolation], 0.0,
                               sitk.sitkFloat32)  # fmt: skip
    expected = sitk.GetArrayFromImage(as_float)
    assert np.any(expected != np.rint(expected)) or interpolation is Interpolation.NEAREST
    np.testing.assert_array_equal(crop.image, expected)
    np.testing.assert_array_equal(crop.mask, sitk.GetArrayFromImage(mask_float) >= 0.5 - 1e-6)

"""pyradiomics per segment: crop + pool equal pyradiomics run directly; the shipped parameter
sets, their hashes and variants; missing features instead of crashes; the IBSI bin origin."""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
from importlib import resources
from typing import Any

import blake3
import numpy as np
import pytest
import radiomics  # type: ignore[import-untyped]
from radiomics import featureextractor
from scipy import ndimage  # type: ignore[import-untyped]

from analysis.radiomics import features
from analysis.radiomics._sitk import sitk
from analysis.radiomics.features import (
    PYRADIOMICS_VERSION,
    Segment,
    extract,
    extract_in_background,
)
from analysis.radiomics.ibsi import BIN_ORIGIN_DEPENDENT
from analysis.radiomics.params import (
    BinOrigin,
    load_parameters,
    parse_parameters,
    shipped_parameter_sets,
)
from analysis.radiomics.preprocess import crop_segment, to_sitk
from analysis.radiomics.volume import Geometry, Volume

#: pyradiomics' own example CT settings, no resampling: what "pyradiomics alone" computes.
PLAIN = b"""
radiogate:
  version: 1
  resampling:
  bin_origin: pyradiomics
  crop_margin_voxels: 2
pyradiomics:
  imageType:
    Original: {}
  featureClass:
    shape:
    firstorder:
    glcm:
    glrlm:
    glszm:
    gldm:
    ngtdm:
  setting:
    binWidth: 25
    label: 1
    additionalInfo: false
"""


def _direct(volume: Volume, mask: Any, settings: dict[str, Any]) -> dict[str, float]:
    """pyradiomics on the whole image, as its documentation shows it."""
    extractor = featureextractor.RadiomicsFeatureExtractor(settings)
    image = to_sitk(volume.array, volume.geometry)
    label = to_sitk(mask.astype(np.uint8), volume.geometry)
    return {k: float(v) for k, v in extractor.execute(image, label).items()}


def test_crop_and_pool_equal_pyradiomics_alone(ct_volume: Volume, tumour_mask: Any) -> None:
    """The lung1 tumour and a dilated copy, extracted in a pool of two processes on crops, equal
    pyradiomics run directly on the whole 512x512x48 image (every feature)."""
    params = parse_parameters(PLAIN, "plain")
    dilated = ndimage.binary_dilation(tumour_mask, iterations=2)
    results = extract(
        ct_volume,
        [Segment("tumour", tumour_mask), Segment("dilated", dilated)],
        params,
        processes=2,
    )
    for result, mask in zip(results, (tumour_mask, dilated), strict=True):
        direct = _direct(ct_volume, mask, params.pyradiomics)
        assert result.missing == {}
        assert set(result.values) == set(direct)
        assert len(direct) == 107
        for name, value in direct.items():
            assert result.values[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
        assert result.voxel_count == int(mask.sum())


def test_shipped_ct_parameters_on_the_tumour(ct_volume: Volume, tumour_mask: Any) -> None:
    params = load_parameters("ct_ibsi")
    (result,) = extract(ct_volume, [Segment("tumour", tumour_mask)], params)
    raw = resources.files("analysis.radiomics").joinpath("data", "ct_ibsi.yaml").read_bytes()
    assert result.parameters_blake3 == blake3.blake3(raw).hexdigest()
    assert result.parameters_name == "ct_ibsi"
    assert result.pyradiomics_version == PYRADIOMICS_VERSION == radiomics.__version__.lstrip("v")
    assert result.missing == {}
    assert len(result.values) == 107
    assert result.spacing_mm == (2.0, 2.0, 2.0)
    assert result.bin_origin == -1000.0
    # 2 mm voxels: the voxel count follows the tumour's volume
    tumour_ml = tumour_mask.sum() * np.prod(ct_volume.geometry.spacing) / 1000
    assert result.voxel_count * 8 / 1000 == pytest.approx(tumour_ml, rel=0.1)
    assert result.values["original_shape_VoxelVolume"] == pytest.approx(result.voxel_count * 8.0)


def test_features_that_depend_on_the_bin_origin(ct_volume: Volume, tumour_mask: Any) -> None:
    """IBSI bins from the re-segmentation minimum (-1000 HU), pyradiomics from the ROI's lowest
    bin: exactly the documented features differ, and joint average by the number of bins in
    between."""
    ibsi = load_parameters("ct_ibsi")
    plain = ibsi.variant("pyradiomics_origin", radiogate={"bin_origin": "pyradiomics"})
    assert plain.bin_origin is BinOrigin.PYRADIOMICS and plain.blake3 != ibsi.blake3
    segment = [Segment("tumour", tumour_mask)]
    (a,) = extract(ct_volume, segment, ibsi)
    (b,) = extract(ct_volume, segment, plain)
    differ = {
        k.removeprefix("original_")
        for k in a.values
        if not math.isclose(a.values[k], b.values[k], rel_tol=1e-9, abs_tol=1e-12)
    }
    assert differ == BIN_ORIGIN_DEPENDENT
    crop = crop_segment(ct_volume.array, tumour_mask, ct_volume.geometry, 2, ibsi.resampling)
    assert crop is not None
    roi = crop.image[crop.mask & (crop.image >= -1000) & (crop.image <= 400)]
    shift = math.floor((roi.min() + 1000) / 25)
    assert shift > 0
    joint = "original_glcm_JointAverage"
    assert a.values[joint] - b.values[joint] == pytest.approx(shift)


def test_a_failing_segment_or_feature_is_missing_not_a_crash() -> None:
    """A single voxel (pyradiomics refuses it), an empty mask, and a two-voxel segment whose
    robust mean absolute deviation is undefined: each reported, the others computed."""
    rng = np.random.default_rng(7)
    volume = Volume(
        rng.integers(-900, 100, (10, 20, 20)).astype(np.int16),
        Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
    )
    one = np.zeros(volume.array.shape, dtype=bool)
    one[5, 10, 10] = True
    two = one.copy()
    two[5, 10, 11] = True
    params = load_parameters("ibsi_phantom")
    results = extract(
        volume,
        [Segment("one", one), Segment("none", np.zeros_like(one)), Segment("two", two)],
        params,
    )
    assert [r.segment for r in results] == ["one", "none", "two"]
    assert set(results[0].missing) == {"*"} and "single voxel" in results[0].missing["*"]
    assert results[1].missing == {"*": "empty mask"}
    assert results[2].missing == {
        "original_firstorder_RobustMeanAbsoluteDeviation": "not a finite value"
    }
    assert len(results[2].values) == 106


def test_a_failing_feature_class_leaves_its_features_missing(
    ct_volume: Volume, tumour_mask: Any
) -> None:
    """A class whose computation raises (here: pyradiomics cannot bin an ROI holding a NaN) loses
    its own features only; shape features (no grey levels) are still there."""
    image = ct_volume.array.astype(np.float32)
    image[tuple(np.argwhere(tumour_mask)[0])] = np.nan
    params = parse_parameters(PLAIN, "plain")
    (result,) = extract(Volume(image, ct_volume.geometry), [Segment("tumour", tumour_mask)], params)
    failed = {k.split("_")[1] for k, reason in result.missing.items() if "Error" in reason}
    assert failed == {"glcm", "glrlm", "glszm", "gldm", "ngtdm"} | ({"firstorder"} & failed)
    assert {k for k in result.values if k.startswith("original_shape_")} == {
        f"original_shape_{n}" for n in _SHAPE
    }
    assert all(not k.startswith(("original_glcm", "original_glszm")) for k in result.values)


_SHAPE = {
    "Elongation", "Flatness", "LeastAxisLength", "MajorAxisLength", "Maximum2DDiameterColumn",
    "Maximum2DDiameterRow", "Maximum2DDiameterSlice", "Maximum3DDiameter", "MeshVolume",
    "MinorAxisLength", "Sphericity", "SurfaceArea", "SurfaceVolumeRatio", "VoxelVolume",
}  # fmt: skip


def test_a_caller_owned_executor_is_used(ct_volume: Volume, tumour_mask: Any) -> None:
    params = parse_parameters(PLAIN, "plain")
    segments = [Segment("tumour", tumour_mask)]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        (pooled,) = extract(ct_volume, segments, params, executor=pool)
    (inline,) = extract(ct_volume, segments, params)
    assert pooled.values == inline.values


@pytest.mark.parametrize("processes", [1, 2])
def test_features_extracted_in_the_background_equal_those_extracted_here(
    ct_volume: Volume, tumour_mask: Any, processes: int
) -> None:
    """One forked process (or a spawned pool of two) gives the features :func:`extract` gives
    in this process, segment for segment and in order (an empty one included)."""
    params = parse_parameters(PLAIN, "plain")
    grown = ndimage.binary_dilation(tumour_mask, iterations=2)
    segments = [Segment("grown", grown), Segment("none", np.zeros_like(grown)),
                Segment("tumour", tumour_mask)]  # fmt: skip
    with extract_in_background(ct_volume, segments, params, processes=processes) as pending:
        background = pending.result()
        assert pending.result() is background
    assert background == extract(ct_volume, segments, params)


def test_a_feature_process_that_fails_or_dies_is_reported(
    ct_volume: Volume, tumour_mask: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error in the forked process comes back as that error; a process that dies without
    an answer is a RuntimeError naming its exit code; leaving the block early ends it."""
    params = parse_parameters(PLAIN, "plain")
    segments = [Segment("tumour", tumour_mask)]

    def failing(task: Any) -> Any:
        raise LookupError("no such thing")

    monkeypatch.setattr(features, "_run", failing)
    with (
        extract_in_background(ct_volume, segments, params) as pending,
        pytest.raises(LookupError, match="no such thing"),
    ):
        pending.result()

    def dying(task: Any) -> Any:
        import os

        os._exit(7)

    monkeypatch.setattr(features, "_run", dying)
    with (
        extract_in_background(ct_volume, segments, params) as pending,
        pytest.raises(RuntimeError, match="exit code 7"),
    ):
        pending.result()

    def sleeping(task: Any) -> Any:
        import time

        time.sleep(60)

    monkeypatch.setattr(features, "_run", sleeping)
    with extract_in_background(ct_volume, segments, params) as pending:
        child = pending._child
    assert child is not None and child.exit_code == -9  # killed, and reaped


def test_shipped_parameter_sets_parse_and_hash_their_bytes() -> None:
    assert {"ct_ibsi", "ibsi_phantom"} <= set(shipped_parameter_sets())
    for name in shipped_parameter_sets():
        params = load_parameters(name)
        raw = resources.files("analysis.radiomics").joinpath("data", f"{name}.yaml").read_bytes()
        assert params.text == raw
        assert params.blake3 == blake3.blake3(raw).hexdigest()
        featureextractor.RadiomicsFeatureExtractor(params.pyradiomics)  # pyradiomics' schema
    with pytest.raises(ValueError, match="no parameter set"):
        load_parameters("nope")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"pyradiomics: {}\n", "exactly the sections"),
        (PLAIN.replace(b"version: 1", b"version: 2"), "version must be 1"),
        (
            PLAIN.replace(b"  label: 1", b"  resampledPixelSpacing: [1, 1, 1]"),
            "resample in radiogate",
        ),
        (PLAIN.replace(b"bin_origin: pyradiomics", b"bin_origin: zero"), "zero"),
        (PLAIN.replace(b"crop_margin_voxels: 2", b"crop_margin_voxels: 2\n  extra: 1"), "unknown"),
        (
            PLAIN.replace(b"  resampling:\n", b"  resampling:\n    spacing_mm: [1, 1]\n"),
            "spacing_mm",
        ),
    ],
)
def test_bad_parameter_files_are_refused(text: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_parameters(text, "bad")


def test_a_variant_has_its_own_hash_and_text() -> None:
    base = load_parameters("ct_ibsi")
    merged = base.variant("merged", weightingNorm="no_weighting")
    assert merged.blake3 != base.blake3
    assert merged.settings["weightingNorm"] == "no_weighting"
    assert base.blake3.encode() in merged.text  # names its parent
    assert merged.resampling == base.resampling


def test_pyradiomics_resampling_would_shift_the_grid() -> None:
    """Why Radiogate resamples itself: for a 5-voxel axis of 2 mm resampled to 3 mm, IBSI keeps
    the grid centre (first new voxel at original index -0.25), pyradiomics the origin corner."""
    image = sitk.GetImageFromArray(np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4))
    image.SetSpacing((2.0, 2.0, 2.0))
    mask = sitk.GetImageFromArray(np.ones((5, 4, 4), dtype=np.uint8))
    mask.CopyInformation(image)
    resampled, _ = radiomics.imageoperations.resampleImage(
        image, mask, resampledPixelSpacing=[3, 3, 3], padDistance=0
    )
    from analysis.radiomics.preprocess import ibsi_grid

    _, first = ibsi_grid((5, 4, 4), Geometry((2.0, 2.0, 2.0), (0.0, 0.0, 0.0)), (3.0, 3.0, 3.0))
    assert first[0] == pytest.approx(-0.25)  # (5 - 1) / 2 - (4 - 1) / 2 * 1.5
    ibsi_origin_z = first[0] * 2.0
    assert resampled.GetOrigin()[2] != pytest.approx(ibsi_origin_z)

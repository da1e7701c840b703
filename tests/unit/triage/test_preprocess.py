"""Preprocessing does exactly what the card says, and the same input gives the same bytes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from analysis.triage import DEFAULT_CARD, Layout, Preprocessing, Resample, Window, read_card
from analysis.triage.preprocess import axis_weights, preprocess, resample_to_spacing
from tests.unit.triage.conftest import CtSlice

SPEC = Preprocessing(
    windows=(Window(-600.0, 1500.0), Window(50.0, 100.0)),
    size=(64, 64),
    resample=Resample.SPACING,
    pixel_spacing_mm=2.0,
    pad_hu=-1024.0,
    clip_hu=(-1024.0, 3071.0),
    layout=Layout.NCHW,
    dtype="float32",
)


def _expected_window(hu: float, win: Window) -> float:
    return min(1.0, max(0.0, (hu - (win.center - win.width / 2)) / win.width))


def test_shipped_preprocessing_is_deterministic_and_has_the_cards_shape(
    lung1: list[CtSlice],
) -> None:
    card = read_card(DEFAULT_CARD)
    s = lung1[24]
    first = preprocess(s.hu, s.spacing, card.preprocessing)
    second = preprocess(s.hu.copy(), s.spacing, card.preprocessing)
    assert first.tobytes() == second.tobytes()
    assert first.shape == card.preprocessing.sample_shape
    assert first.dtype == np.dtype(card.preprocessing.dtype)
    assert first.min() >= 0.0 and first.max() <= 1.0


@pytest.mark.parametrize("hu", [-1100.0, -1000.0, -600.0, 0.0, 40.0, 70.0, 120.0, 2000.0])
def test_a_uniform_slice_maps_through_each_window(hu: float) -> None:
    out = preprocess(np.full((100, 100), hu), (2.0, 2.0), SPEC)
    clipped = min(max(hu, -1024.0), 3071.0)
    for channel, win in zip(out, SPEC.windows, strict=True):
        centre = channel[16:48, 16:48]  # inside the 200 mm slice, away from the padding
        assert np.allclose(centre, _expected_window(clipped, win), atol=1e-6)


def test_outside_the_slice_is_padding() -> None:
    out = preprocess(np.full((10, 10), 40.0), (2.0, 2.0), SPEC)  # 20 mm centred in 128 mm
    pad = _expected_window(-1024.0, SPEC.windows[0])
    assert np.allclose(out[0, :20, :], pad) and np.allclose(out[0, :, -20:], pad)
    assert np.allclose(out[0, 28:36, 28:36], _expected_window(40.0, SPEC.windows[0]))


def test_same_spacing_and_size_is_the_identity() -> None:
    rng = np.random.default_rng(5)
    hu = rng.normal(0, 300, size=(64, 64))
    out = resample_to_spacing(hu, (2.0, 2.0), 2.0, (64, 64), -1024.0)
    assert np.array_equal(out, hu)


def test_resampling_keeps_physical_size_and_centre() -> None:
    """A 40 mm square at the centre of a 0.5 mm slice is 20 pixels of 2 mm, still centred."""
    hu = np.full((400, 400), -1000.0)
    hu[160:240, 160:240] = 100.0
    out = resample_to_spacing(hu, (0.5, 0.5), 2.0, (64, 64), -1024.0)
    inside = out > -450.0
    rows, cols = np.nonzero(inside)
    assert inside.sum() == 400
    assert rows.min() == 22 and rows.max() == 41 and cols.min() == 22 and cols.max() == 41


def test_row_and_column_spacing_are_used_in_dicom_order() -> None:
    """Pixel Spacing is (row spacing, column spacing): rows 1 mm apart, columns 0.5 mm."""
    hu = np.full((80, 160), -1000.0)  # 80 mm x 80 mm
    hu[30:50, :] = 100.0  # a band 20 mm high
    out = resample_to_spacing(hu, (1.0, 0.5), 2.0, (64, 64), -1024.0)
    band_rows = np.flatnonzero((out > -450.0).any(axis=1))
    assert band_rows.size == 10


def test_shrinking_averages_instead_of_sampling() -> None:
    """A checkerboard of +-500 HU becomes its mean, not one of its squares."""
    hu = np.where((np.indices((256, 256)).sum(axis=0) % 2) == 0, 500.0, -500.0)
    out = resample_to_spacing(hu, (0.5, 0.5), 2.0, (64, 64), -1024.0)
    assert np.abs(out[8:56, 8:56]).max() < 1.0


@pytest.mark.parametrize(
    ("shape", "spacing", "target", "size"),
    [((512, 512), (0.57, 0.57), 4.0, (96, 96)), ((300, 420), (0.5, 0.9), 2.0, (64, 80)),
     ((40, 30), (5.0, 5.0), 1.0, (128, 128)), ((8, 8), (2.0, 2.0), 2.0, (64, 64))],
)  # fmt: skip
def test_resampling_is_the_weight_matrices_applied_on_both_sides(
    shape: tuple[int, int], spacing: tuple[float, float], target: float, size: tuple[int, int]
) -> None:
    """The gathered taps compute exactly rows_w @ slice @ cols_w.T inside the slice."""
    hu = np.random.default_rng(8).normal(0, 300, size=shape)
    rows_w, rows_in = axis_weights(shape[0], spacing[0], size[0], target)
    cols_w, cols_in = axis_weights(shape[1], spacing[1], size[1], target)
    dense = rows_w @ hu @ cols_w.T
    out = resample_to_spacing(hu, spacing, target, size, -1024.0)
    inside = rows_in[:, None] & cols_in[None, :]
    assert np.allclose(out[inside], dense[inside], rtol=0, atol=1e-9)
    assert np.all(out[~inside] == -1024.0)


def test_axis_weights_sum_to_one_inside_and_zero_outside() -> None:
    w, inside = axis_weights(100, 0.7, 64, 3.0)
    assert np.allclose(w[inside].sum(axis=1), 1.0)
    assert not w[~inside].any()
    assert inside.sum() == 24  # 70 mm / 3 mm


def test_clip_turns_reconstruction_padding_into_air() -> None:
    hu = np.full((32, 32), -3024.0)
    out = preprocess(hu, (2.0, 2.0), replace(SPEC, size=(32, 32)))
    assert np.allclose(out[0], _expected_window(-1024.0, SPEC.windows[0]))
    unclipped = preprocess(hu, (2.0, 2.0), replace(SPEC, size=(32, 32), clip_hu=None))
    assert np.allclose(unclipped[0], 0.0)


def test_channels_last_layout_and_half_precision() -> None:
    spec = replace(SPEC, layout=Layout.NHWC, dtype="float16")
    hu = np.random.default_rng(1).normal(0, 200, size=(90, 70))
    nchw = preprocess(hu, (1.5, 1.5), SPEC)
    nhwc = preprocess(hu, (1.5, 1.5), spec)
    assert nhwc.shape == (64, 64, 2) and nhwc.dtype == np.float16
    assert np.allclose(np.moveaxis(nhwc, -1, 0), nchw, atol=1e-3)


def test_resample_none_takes_the_slice_as_it_is() -> None:
    spec = replace(SPEC, resample=Resample.NONE, pixel_spacing_mm=None, size=(40, 30))
    hu = np.linspace(-1000, 1000, 1200).reshape(40, 30)
    out = preprocess(hu, None, spec)
    assert np.allclose(out[1], np.clip((hu - 0.0) / 100.0, 0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="takes 40x30 slices without resampling"):
        preprocess(np.zeros((41, 30)), None, spec)


@pytest.mark.parametrize(
    ("slice_hu", "spacing", "words"),
    [
        (np.zeros((4, 4, 3)), (1.0, 1.0), "2-D"),
        (np.full((4, 4), np.nan), (1.0, 1.0), "finite"),
        (np.zeros((4, 4), dtype=bool), (1.0, 1.0), "numbers"),
        (np.zeros((4, 4)), None, "pixel spacing"),
        (np.zeros((4, 4)), (1.0, 0.0), "positive"),
    ],
)
def test_bad_input_is_refused(slice_hu: np.ndarray, spacing: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        preprocess(slice_hu, spacing, SPEC)  # type: ignore[arg-type]

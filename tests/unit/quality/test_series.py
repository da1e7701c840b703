"""Data-quality checks on real CT geometry: a whole series passes; a removed slice, a duplicate,
a truncated or undecodable slice, tilted or resized slices are each named."""

from __future__ import annotations

import dataclasses

import pydicom
import pytest

from analysis.quality.series import InstanceFacts, check_series
from tests.support.data import extract_ct


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[InstanceFacts]:
    out = []
    for path in extract_ct(tmp_path_factory.mktemp("ct")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out.append(
            InstanceFacts(
                str(ds.SOPInstanceUID),
                int(ds.InstanceNumber),
                tuple(float(v) for v in ds.ImagePositionPatient),  # type: ignore[arg-type]
                tuple(float(v) for v in ds.ImageOrientationPatient),  # type: ignore[arg-type]
                int(ds.Rows),
                int(ds.Columns),
                tuple(float(v) for v in ds.PixelSpacing),  # type: ignore[arg-type]
            )
        )
    return out


def test_a_whole_series_is_complete_and_ordered_along_the_normal(
    series: list[InstanceFacts],
) -> None:
    shuffled = series[::2] + series[1::2]
    verdict = check_series(shuffled)
    assert verdict.complete and verdict.reasons == ()
    z = {f.sop_instance_uid: f.position[2] for f in series if f.position}
    ordered_z = [z[uid] for uid in verdict.ordered]
    assert ordered_z == sorted(ordered_z) or ordered_z == sorted(ordered_z, reverse=True)


def test_a_removed_slice(series: list[InstanceFacts]) -> None:
    verdict = check_series(series[:20] + series[21:])
    assert verdict.reasons == ("missing-instances", "uneven-spacing")


def test_a_removed_last_slice_is_seen_only_with_the_expected_count(
    series: list[InstanceFacts],
) -> None:
    assert check_series(series[:-1]).complete
    told = [dataclasses.replace(f, images_in_acquisition=len(series)) for f in series[:-1]]
    assert check_series(told).reasons == ("missing-instances",)


def test_a_duplicated_slice(series: list[InstanceFacts]) -> None:
    again = dataclasses.replace(series[10], sop_instance_uid="2.25.1")
    assert check_series([*series, again]).reasons == (
        "duplicate-instance-number", "duplicate-position",
    )  # fmt: skip


def test_per_slice_problems_and_geometry(series: list[InstanceFacts]) -> None:
    broken = list(series)
    broken[3] = dataclasses.replace(broken[3], problems=("pixel-data-truncated",))
    broken[5] = dataclasses.replace(broken[5], problems=("pixel-data-undecodable",))
    broken[7] = dataclasses.replace(broken[7], orientation=(1, 0, 0, 0, 0.9, 0.1))
    broken[9] = dataclasses.replace(broken[9], rows=256)
    broken[11] = dataclasses.replace(broken[11], position=None)
    assert check_series(broken).reasons == (
        "inconsistent-orientation", "inconsistent-size", "missing-position",
        "pixel-data-truncated", "pixel-data-undecodable",
        "uneven-spacing",  # the slice without a position leaves a gap among the placed ones
    )  # fmt: skip


def test_a_single_image_gets_the_per_slice_checks_only() -> None:
    lone = InstanceFacts("2.25.9", 1, None, None, 512, 512, None, problems=())
    assert check_series([lone]).complete
    bad = dataclasses.replace(lone, problems=("pixel-data-truncated",))
    assert check_series([bad]).reasons == ("pixel-data-truncated",)


def test_no_instances() -> None:
    assert check_series([]).complete  # nothing received: nothing wrong with it yet

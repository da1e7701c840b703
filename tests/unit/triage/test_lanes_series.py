"""Lanes from scores, and the series aggregation (maximum, flagged slices, min_slices)."""

from __future__ import annotations

import math

import pytest

from analysis.triage import Lane, ModelIdentity, SeriesScore, Thresholds, aggregate

MODEL = ModelIdentity("demo", "1.0.0", "ab" * 32, demonstration=True)
THRESHOLDS = Thresholds({Lane.CRITICAL: 0.8, Lane.URGENT: 0.5})


@pytest.mark.parametrize(
    ("score", "lane"),
    [(0.0, None), (0.4999, None), (0.5, Lane.URGENT), (0.79, Lane.URGENT), (0.8, Lane.CRITICAL),
     (1.0, Lane.CRITICAL)],
)  # fmt: skip
def test_lane_for(score: float, lane: Lane | None) -> None:
    assert THRESHOLDS.lane_for(score) is lane


def test_a_routine_threshold_gives_every_score_a_lane() -> None:
    t = Thresholds({Lane.CRITICAL: 0.9, Lane.ROUTINE: 0.0})
    assert t.lane_for(0.1) is Lane.ROUTINE and t.lane_for(0.95) is Lane.CRITICAL


def test_a_score_that_is_not_a_number_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        THRESHOLDS.lane_for(math.nan)


@pytest.mark.parametrize(
    "by_lane",
    [{}, {Lane.CRITICAL: 1.2}, {Lane.CRITICAL: 0.5, Lane.URGENT: 0.6}],
)
def test_bad_thresholds(by_lane: dict[Lane, float]) -> None:
    with pytest.raises(ValueError):
        Thresholds(by_lane)


def test_lanes_are_ranked_most_urgent_first() -> None:
    assert [lane.rank for lane in (Lane.CRITICAL, Lane.URGENT, Lane.ROUTINE)] == [0, 1, 2]
    assert Lane("critical") is Lane.CRITICAL


def test_the_series_score_is_the_maximum_and_flags_the_slices() -> None:
    scores = [0.1, 0.2, 0.85, 0.6, 0.3, 0.55]
    result = aggregate(scores, THRESHOLDS, 1, MODEL)
    assert isinstance(result, SeriesScore)
    assert result.score == 0.85 and result.peak_slice == 2
    assert result.lane is Lane.CRITICAL
    assert result.flagged == {Lane.CRITICAL: (2,), Lane.URGENT: (2, 3, 5)}
    assert result.model == MODEL and result.slice_scores == tuple(scores)


def test_one_hot_slice_among_many_still_decides() -> None:
    """The maximum does not dilute a local finding by the length of the series."""
    long = [0.05] * 499 + [0.9]
    short = [0.05] * 4 + [0.9]
    assert aggregate(long, THRESHOLDS, 1, MODEL).lane is Lane.CRITICAL
    assert (
        aggregate(short, THRESHOLDS, 1, MODEL).score == aggregate(long, THRESHOLDS, 1, MODEL).score
    )


def test_min_slices_asks_for_several_slices_per_lane() -> None:
    scores = [0.1, 0.9, 0.2, 0.6, 0.3]
    assert aggregate(scores, THRESHOLDS, 1, MODEL).lane is Lane.CRITICAL
    assert aggregate(scores, THRESHOLDS, 2, MODEL).lane is Lane.URGENT  # 0.9 and 0.6 reach 0.5
    assert aggregate(scores, THRESHOLDS, 3, MODEL).lane is None


def test_a_calm_series_has_no_lane() -> None:
    result = aggregate([0.01, 0.2, 0.3], THRESHOLDS, 1, MODEL)
    assert result.lane is None and result.flagged == {Lane.CRITICAL: (), Lane.URGENT: ()}


@pytest.mark.parametrize(
    ("scores", "min_slices", "words"),
    [([], 1, "at least one"), ([0.5, 1.2], 1, "slice 1"), ([0.5, math.nan], 1, "slice 1"),
     ([0.5], 0, "min_slices")],
)  # fmt: skip
def test_bad_series(scores: list[float], min_slices: int, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        aggregate(scores, THRESHOLDS, min_slices, MODEL)

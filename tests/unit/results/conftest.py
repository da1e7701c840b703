"""Fixtures: the synthetic CT series, its results and its segmentation."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from analysis.results import SegmentResult, TriageFinding, build_segmentation
from tests.unit.results.synthetic import (
    CREATED,
    PROVENANCE,
    SEGMENTER,
    ct_series,
    masks_for,
    segment_results,
    triage_finding,
)


@pytest.fixture
def source() -> list[Dataset]:
    return ct_series()


@pytest.fixture
def finding(source: list[Dataset]) -> TriageFinding:
    return triage_finding(source)


@pytest.fixture
def segments(source: list[Dataset]) -> list[SegmentResult]:
    return segment_results(source)


@pytest.fixture
def masks(source: list[Dataset]) -> dict[int, np.ndarray]:
    return masks_for(source)


@pytest.fixture
def segmentation(
    source: list[Dataset], segments: list[SegmentResult], masks: dict[int, np.ndarray]
) -> Dataset:
    return build_segmentation(source, segments, masks, SEGMENTER, PROVENANCE, created=CREATED)

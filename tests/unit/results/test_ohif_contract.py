"""The measurement report as OHIF v3 reads it (tests/support/ohif.py, docs/viewers.md): a
segment without a key-slice outline is a group OHIF cannot place, and the report then does not
load; with an outline for every segment it loads."""

from __future__ import annotations

import dataclasses
import io

import pydicom
from pydicom.dataset import Dataset

from analysis.results import GraphicType, PlanarRegion, SegmentResult, build_measurement_report
from tests.support.ohif import ohif_problems
from tests.unit.results.roundtrip import write_and_read
from tests.unit.results.synthetic import CREATED, EXTRACTOR, PROVENANCE


def _report(source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]) -> Dataset:
    sr = build_measurement_report(source, segmentation, segments, EXTRACTOR, PROVENANCE,
                                  created=CREATED)  # fmt: skip
    data, _ = write_and_read(sr)
    return pydicom.dcmread(io.BytesIO(data))


def test_a_segment_without_an_outline_is_what_ohif_fails_on(
    source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]
) -> None:
    unplaced = [s for s in segments if s.region is None]
    assert unplaced, "the synthetic lungs have no outline"
    problems = ohif_problems(_report(source, segmentation, segments))
    assert problems == [f"measurement {s.tracking_uid} cannot be placed on an image"
                        for s in unplaced]  # fmt: skip


def test_an_outline_for_every_segment_loads(
    source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]
) -> None:
    box = PlanarRegion(GraphicType.POLYGON, ((6.0, 12.0), (28.0, 12.0), (28.0, 52.0)))
    outlined = [s if s.region is not None else
                dataclasses.replace(s, key_slice=str(source[0].SOPInstanceUID), region=box)
                for s in segments]  # fmt: skip
    assert ohif_problems(_report(source, segmentation, outlined)) == []


def test_an_oblique_ellipse_is_reported(
    source: list[Dataset], segmentation: Dataset, segments: list[SegmentResult]
) -> None:
    ellipse = PlanarRegion(GraphicType.ELLIPSE, ((10.0, 10.0), (20.0, 20.0), (10.0, 20.0),
                                                 (20.0, 10.0)))  # fmt: skip
    tilted = [dataclasses.replace(s, key_slice=str(source[0].SOPInstanceUID), region=ellipse)
              for s in segments]  # fmt: skip
    problems = ohif_problems(_report(source, segmentation, tilted))
    assert problems == [f"measurement {s.tracking_uid} has an oblique ELLIPSE" for s in segments]

"""Fixtures: the shipped emphysema model, the training script's fixture and its data set
(tests/data/emphysema, see PROVENANCE.md), and a study's measurement report with its rows."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from analysis.models import TabularModel, load_emphysema_model
from analysis.results import build_measurement_report, build_segmentation
from analysis.results.table import MeasurementRow, ReportReference, measurement_rows
from tests.support.data import DATA
from tests.unit.results.roundtrip import write_and_read
from tests.unit.results.synthetic import (
    CREATED,
    EXTRACTOR,
    PROVENANCE,
    SEGMENTER,
    ct_series,
    masks_for,
    segment_results,
)

EMPHYSEMA = DATA / "emphysema"


def vector(values: list[float | None]) -> np.ndarray:
    """A JSON list (null = missing) as a float vector with NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


@pytest.fixture(scope="session")
def model() -> TabularModel:
    return load_emphysema_model()


@pytest.fixture(scope="session")
def fixture() -> dict[str, Any]:
    content: dict[str, Any] = json.loads((EMPHYSEMA / "fixture.json").read_text())
    return content


@pytest.fixture(scope="session")
def features_csv() -> Path:
    return EMPHYSEMA / "features.csv"


@pytest.fixture(scope="module")
def study() -> dict[str, Any]:
    """The synthetic CT, its SEG, its segments and their measurement report (read back)."""
    source = ct_series()
    segments = segment_results(source)
    seg = build_segmentation(
        source, segments, masks_for(source), SEGMENTER, PROVENANCE, created=CREATED
    )
    sr = build_measurement_report(source, seg, segments, EXTRACTOR, PROVENANCE, created=CREATED)
    data, _ = write_and_read(sr)
    return {
        "source": source,
        "segments": segments,
        "segmentation": seg,
        "report": pydicom.dcmread(io.BytesIO(data)),
    }


def study_rows(study: dict[str, Any]) -> list[MeasurementRow]:
    """The table rows of *study*'s report (every slice's Pixel Spacing given, as the report
    had it)."""
    key_slices = {
        str(ds.SOPInstanceUID): (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
        for ds in study["source"]
    }
    return measurement_rows(
        ReportReference.of(study["report"], study["segmentation"]),
        study["segments"],
        EXTRACTOR,
        pyradiomics_version="3.0.1",
        pixel_spacing=key_slices,
    )

"""Fixtures: the shipped demonstration model and real CT slices of a patient it never saw.

The slices are from ``tests/data/lung1_ct_dicom.tar.xz`` (pyradiomics' lung1, BSD-3-Clause), the
patient the shipped model was evaluated on and not trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest

from analysis.triage import DEFAULT_CARD, TriageModel, load_model
from tests.support.data import extract_ct


@dataclass(frozen=True)
class CtSlice:
    index: int
    hu: npt.NDArray[np.float32]
    spacing: tuple[float, float]


@pytest.fixture(scope="session")
def shipped() -> TriageModel:
    return load_model(DEFAULT_CARD, threads=1)


@pytest.fixture(scope="session")
def lung1(tmp_path_factory: pytest.TempPathFactory) -> list[CtSlice]:
    """All 48 slices of the lung1 series in HU, in file order (inferior to superior)."""
    out = []
    for i, path in enumerate(extract_ct(tmp_path_factory.mktemp("lung1"))):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
        out.append(CtSlice(i, hu.astype(np.float32), spacing))
    return out


@pytest.fixture
def card_dir(tmp_path: Path) -> Path:
    """A copy of the shipped card and its ONNX file, free to be edited by a test."""
    for name in (DEFAULT_CARD.name, DEFAULT_CARD.with_suffix(".onnx").name):
        (tmp_path / name).write_bytes((DEFAULT_CARD.parent / name).read_bytes())
    return tmp_path

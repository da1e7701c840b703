"""Fixtures: the lung1 chest CT built with analysis.radiomics.volume, its tumour label, its lung
segmentation, and the IBSI digital phantom (all from tests/data, see PROVENANCE.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from analysis.radiomics._sitk import sitk
from analysis.radiomics.lung import LungSegmentation, segment_lungs
from analysis.radiomics.volume import Geometry, Volume, build_volume, slice_input
from tests.support.data import DATA, extract_ct


def read_image(path: Path) -> tuple[Any, Geometry]:
    """Array ``[slice, row, column]`` and geometry of an image file (NIfTI, NRRD)."""
    image = sitk.ReadImage(str(path))
    geometry = Geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    return sitk.GetArrayFromImage(image), geometry


@pytest.fixture(scope="session")
def ct_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return extract_ct(tmp_path_factory.mktemp("lung1"))


@pytest.fixture(scope="session")
def ct_volume(ct_files: list[Path]) -> Volume:
    result = build_volume([slice_input(pydicom.dcmread(f)) for f in ct_files])
    assert result.volume is not None, result.flags
    return result.volume


@pytest.fixture(scope="session")
def tumour_mask(ct_volume: Volume) -> Any:
    """The lung1 tumour label, checked to lie on the CT's grid."""
    label, geometry = read_image(DATA / "lung1_label.nrrd")
    assert label.shape == ct_volume.array.shape
    assert np.allclose(geometry.origin, ct_volume.geometry.origin)
    assert np.allclose(geometry.spacing, ct_volume.geometry.spacing)
    return label == 1


@pytest.fixture(scope="session")
def lungs(ct_volume: Volume) -> LungSegmentation:
    return segment_lungs(ct_volume)


@pytest.fixture(scope="session")
def phantom() -> tuple[Volume, Any]:
    image, geometry = read_image(DATA / "ibsi" / "phantom.nii.gz")
    mask, _ = read_image(DATA / "ibsi" / "phantom_mask.nii.gz")
    return Volume(image, geometry), mask == 1

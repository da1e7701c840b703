"""A tumour outlined by "another tool": the SEG a study may already hold when it is analysed
(the lesions the chest-CT pipeline takes from it). Shared by the analysis tests and
``bench/bench_analysis.py``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from analysis.radiomics.volume import build_volume, slice_input
from analysis.results import (
    Algorithm,
    GraphicType,
    PlanarRegion,
    Provenance,
    SegmentResult,
    build_segmentation,
    to_bytes,
)
from tests.support.data import DATA

__all__ = ["lung1_tumour_seg", "tumour_seg"]

OUTLINER = Algorithm("outliner", "2", parameter_hash="1" * 64)


def tumour_seg(
    ordered: list[pydicom.Dataset],
    mask: np.ndarray,
    *,
    label: str = "GTV",
    algorithm: Algorithm = OUTLINER,
    provenance: Provenance | None = None,
) -> pydicom.Dataset:
    """A BINARY SEG of *mask* (volume order, one plane per dataset of *ordered*) with one
    segment, a Neoplasm, outlined on its largest slice by its bounding box."""
    key = int(np.argmax(mask.sum(axis=(1, 2))))
    rows, cols = np.nonzero(mask[key])
    box = PlanarRegion(GraphicType.POLYGON, ((cols.min(), rows.min()), (cols.max(), rows.min()),
                                              (cols.max(), rows.max())))  # fmt: skip
    segment = SegmentResult(
        1, label, codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm, generate_uid(),
        label.lower(), key_slice=str(ordered[key].SOPInstanceUID), region=box,
    )  # fmt: skip
    return build_segmentation(ordered, [segment], {1: mask}, algorithm,
                              provenance or Provenance(software_version="2"))  # fmt: skip


def lung1_tumour_seg(datasets: Sequence[pydicom.Dataset]) -> tuple[bytes, np.ndarray]:
    """The lung1 tumour (``tests/data/lung1_label.nrrd``, label 1) as another tool's SEG on
    *datasets* (the series in any order, e.g. as archived and de-identified): its Part 10 bytes
    and the mask in volume order."""
    from tests.unit.radiomics.conftest import read_image

    result = build_volume([slice_input(ds) for ds in datasets])
    assert result.volume is not None
    ordered = [datasets[i] for i in result.order]
    label, _ = read_image(DATA / "lung1_label.nrrd")
    mask = label == 1
    seg = tumour_seg(ordered, mask)
    seg.SeriesDescription = "Outlines"
    return to_bytes(seg), mask

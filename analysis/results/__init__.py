"""Radiogate's results as DICOM objects for the archive: triage SR, key object selection,
segmentation and measurement report (PS3.3 A.35.13, A.35.4, A.51; PS3.16 TID 1500, TID 2010).

Pure computation: builders take the source series' (de-identified) datasets and the typed
results of :mod:`analysis.results.model` and return highdicom datasets in Explicit VR Little
Endian; :func:`to_bytes` gives their Part 10 bytes. Codes and choices: ``docs/results.md``.
"""

from analysis.results.encoding import to_bytes
from analysis.results.kos import build_key_objects
from analysis.results.measurements_sr import build_measurement_report
from analysis.results.model import (
    ActionableCategory,
    Algorithm,
    Attribution,
    GraphicType,
    Lane,
    Measurement,
    ModelOutput,
    PlanarRegion,
    Provenance,
    SegmentResult,
    TriageFinding,
)
from analysis.results.seg import SegmentationDraft, build_segmentation, draft_segmentation
from analysis.results.triage_sr import build_triage_sr

__all__ = [
    "ActionableCategory",
    "Algorithm",
    "Attribution",
    "GraphicType",
    "Lane",
    "Measurement",
    "ModelOutput",
    "PlanarRegion",
    "Provenance",
    "SegmentResult",
    "SegmentationDraft",
    "TriageFinding",
    "build_key_objects",
    "build_measurement_report",
    "build_segmentation",
    "build_triage_sr",
    "draft_segmentation",
    "to_bytes",
]

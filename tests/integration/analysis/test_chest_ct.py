"""The chest CT pipeline on the real lung1 series: lungs and the tumour (given as a SEG, and as
an RTSTRUCT), features equal to pyradiomics' on the same mask, lung measures in the report, and
a SEG and TID 1500 SR that read back strictly and pass dciodvfy with no error."""

from __future__ import annotations

import copy
import datetime as dt
import io
import shutil
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from analysis.pipelines.chest_ct import (
    ChestCtResult,
    analyse_chest_ct,
    lesions_from_rtstruct,
    lesions_from_seg,
)
from analysis.radiomics.features import Segment, extract
from analysis.radiomics.params import load_parameters
from analysis.radiomics.volume import build_volume, slice_input
from analysis.results import (
    Algorithm,
    Provenance,
    to_bytes,
)
from tests.integration.results.test_dciodvfy import ACCEPTED, verify
from tests.support.data import DATA, extract_ct
from tests.support.ohif import ohif_problems
from tests.support.outline import tumour_seg
from tests.support.sr import measurement_report
from tests.unit.radiomics.conftest import read_image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROVENANCE = Provenance(software_version="test")
WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def lung1(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Dataset], np.ndarray]:
    """The series (volume order) and its tumour mask on the same grid."""
    files = extract_ct(tmp_path_factory.mktemp("lung1"))
    datasets: list[Dataset] = [pydicom.dcmread(f) for f in files]
    result = build_volume([slice_input(ds) for ds in datasets])
    assert result.volume is not None
    ordered = [datasets[i] for i in result.order]
    label, _geometry = read_image(DATA / "lung1_label.nrrd")
    return ordered, label == 1


def _tumour_seg(ordered: list[Dataset], mask: np.ndarray) -> Dataset:
    """The tumour as another tool's SEG in the study."""
    seg = tumour_seg(ordered, mask, label="Tumour", provenance=PROVENANCE,
                     algorithm=Algorithm("outline-tool", "1", parameter_hash="0" * 64))  # fmt: skip
    return pydicom.dcmread(io.BytesIO(to_bytes(seg)))


def _tumour_rtstruct(ordered: list[Dataset], mask: np.ndarray) -> Dataset:
    """The tumour as an RT Structure Set: one pixel-edge contour per slice (patient mm)."""
    ds = Dataset()
    ds.Modality = "RTSTRUCT"
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 1, "GTV"
    ds.StructureSetROISequence = [roi]
    contour_roi = Dataset()
    contour_roi.ReferencedROINumber = 1
    contour_roi.ContourSequence = []
    for index, src in enumerate(ordered):
        if not mask[index].any():
            continue
        origin = np.asarray([float(v) for v in src.ImagePositionPatient])
        o = [float(v) for v in src.ImageOrientationPatient]
        row_dir, col_dir = np.asarray(o[:3]), np.asarray(o[3:])
        sr, sc = (float(v) for v in src.PixelSpacing)
        rows, cols = np.nonzero(mask[index])
        r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
        # the box around the tumour on this slice (pixel centres inside it are filled)
        corners = [(c0 - 0.5, r0 - 0.5), (c1 + 0.5, r0 - 0.5), (c1 + 0.5, r1 + 0.5),
                   (c0 - 0.5, r1 + 0.5)]  # fmt: skip
        points = [origin + c * sc * row_dir + r * sr * col_dir for c, r in corners]
        contour = Dataset()
        image = Dataset()
        image.ReferencedSOPInstanceUID = src.SOPInstanceUID
        contour.ContourImageSequence = [image]
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.ContourData = [f"{v:.4f}" for p in points for v in p]
        contour_roi.ContourSequence.append(contour)
    ds.ROIContourSequence = [contour_roi]
    return ds


def test_lesions_from_seg_and_rtstruct_land_on_the_grid(lung1: tuple[list[Dataset], Any]) -> None:
    ordered, mask = lung1
    from_seg = lesions_from_seg(_tumour_seg(ordered, mask), ordered)
    assert list(from_seg) == ["Tumour"]
    assert np.array_equal(from_seg["Tumour"], mask)
    from_rt = lesions_from_rtstruct(_tumour_rtstruct(ordered, mask), ordered)
    boxes = np.zeros_like(mask)
    for index in range(mask.shape[0]):
        if mask[index].any():
            rows, cols = np.nonzero(mask[index])
            boxes[index, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    assert np.array_equal(from_rt["GTV"], boxes)


@pytest.fixture(scope="module")
def analysed(lung1: tuple[list[Dataset], Any]) -> ChestCtResult:
    ordered, mask = lung1
    shuffled = ordered[1::2] + ordered[::2]
    return analyse_chest_ct(
        shuffled, params=load_parameters("ct_ibsi"), lesions=[_tumour_seg(ordered, mask)],
        provenance=PROVENANCE, created=WHEN,
    )  # fmt: skip


def test_features_equal_a_direct_extraction(
    lung1: tuple[list[Dataset], Any], analysed: ChestCtResult
) -> None:
    ordered, mask = lung1
    result = build_volume([slice_input(ds) for ds in ordered])
    assert result.volume is not None
    (direct,) = extract(result.volume, [Segment("tumour", mask)], load_parameters("ct_ibsi"))
    tumour = {r.feature: r.value for r in analysed.rows if r.segment_number == 3}
    from analysis.radiomics.codes import measurements

    mapped, _ = measurements(direct)
    assert mapped and len(tumour) >= len(mapped)
    for m in mapped:
        assert tumour[m.feature] == pytest.approx(m.value, rel=1e-9, abs=1e-12), m.feature
    lungs = {(r.segment_number, r.feature): r.value for r in analysed.rows}
    assert analysed.measures.right is not None and analysed.measures.left is not None
    assert lungs[(1, "lung_volume_ml")] == analysed.measures.right.volume_ml
    assert lungs[(2, "laa950_percent")] == analysed.measures.left.laa950_percent
    assert 500 < analysed.measures.total.volume_ml < 8000  # type: ignore[union-attr]


def test_seg_and_report_are_valid_and_carry_the_groups(
    analysed: ChestCtResult, tmp_path: Path
) -> None:
    dciodvfy = shutil.which("dciodvfy", path="/usr/bin:/usr/local/bin:/bin")
    assert dciodvfy, "dciodvfy (dicom3tools) is not installed: make system-deps"
    for ds in (analysed.seg, analysed.sr):
        data = to_bytes(ds)
        with pydicom.config.strict_reading():
            back = pydicom.dcmread(io.BytesIO(data))
        assert back.SOPInstanceUID == ds.SOPInstanceUID
        errors, warnings = verify(dciodvfy, data, tmp_path)
        assert not errors, errors
        unexpected = [w for w in warnings if not any(a.fullmatch(w.strip()) for a in ACCEPTED)
                      and "Retired Person Name form" not in w]  # fmt: skip
        assert not unexpected, unexpected
    seg = hd.seg.Segmentation.from_dataset(analysed.seg)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Right lung", "Left lung", "Tumour"]
    report = hd.sr.Comprehensive3DSR.from_dataset(analysed.sr)
    groups = measurement_report(report.content).get_volumetric_roi_measurement_groups()
    assert len(groups) == 3
    tracking = {str(g.tracking_uid) for g in groups}
    assert tracking == {str(s.TrackingUID) for s in seg.SegmentSequence}
    planar = measurement_report(report.content).get_planar_roi_measurement_groups()
    # every segment's key-slice outline (OHIF fails on a group it cannot place on an image)
    assert {str(g.tracking_uid) for g in planar} == tracking
    assert ohif_problems(analysed.sr) == []


def test_lungs_carry_the_emphysema_model_with_attributions(analysed: ChestCtResult) -> None:
    outputs = {(r.segment_number, r.feature): r.value for r in analysed.rows
               if r.feature.startswith("model:")}  # fmt: skip
    assert {n for n, _f in outputs} == {1, 2}
    report = hd.sr.Comprehensive3DSR.from_dataset(analysed.sr)
    text = str(report)
    assert "Feature attribution" in text or "FEATURE-ATTRIB" in text


def test_features_that_failed_are_imputed_and_flagged(
    lung1: tuple[list[Dataset], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A feature class that failed on the lungs: the model's imputer fills it in, and the
    feature store and the report say which values were imputed."""
    import dataclasses

    import analysis.pipelines.chest_ct as chest_ct
    from analysis.radiomics.features import extract_in_background as real  # what chest_ct calls

    class FailingGlcm:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.pending = real(*args, **kwargs)

        def __enter__(self) -> FailingGlcm:
            return self

        def __exit__(self, *exc: object) -> None:
            self.pending.close()

        def result(self) -> Any:
            return failing_glcm(self.pending.result())

    def failing_glcm(found_all: Any) -> Any:
        out = []
        for found in found_all:
            if found.segment not in ("1", "2"):
                out.append(found)
                continue
            values = {k: v for k, v in found.values.items() if "_glcm_" not in k}
            failed = {k: "glcm-failed" for k in found.values if "_glcm_" in k}
            out.append(dataclasses.replace(found, values=values,
                                           missing={**found.missing, **failed}))  # fmt: skip
        return out

    monkeypatch.setattr(chest_ct, "extract_in_background", FailingGlcm)
    ordered, _mask = lung1
    result = analyse_chest_ct(ordered, params=load_parameters("ct_ibsi"),
                              provenance=PROVENANCE, created=WHEN)  # fmt: skip
    imputed = [r for r in result.rows if r.imputed]
    assert imputed and {r.segment_number for r in imputed} <= {1, 2}
    assert all("glcm" in r.feature.lower() for r in imputed)
    report = hd.sr.Comprehensive3DSR.from_dataset(result.sr)
    assert "IMPUTED" in str(report) or "Imputed value" in str(report)


def test_released_pixels_give_the_same_results(
    lung1: tuple[list[Dataset], Any], analysed: ChestCtResult
) -> None:
    """A caller that hands its datasets over (the worker) gets the same objects and values,
    and the datasets no longer hold their Pixel Data."""
    ordered, mask = lung1
    copies = [copy.deepcopy(ds) for ds in ordered[1::2] + ordered[::2]]
    released = analyse_chest_ct(
        copies, params=load_parameters("ct_ibsi"), lesions=[_tumour_seg(ordered, mask)],
        provenance=PROVENANCE, created=WHEN, release_pixels=True,
    )  # fmt: skip
    assert not any("PixelData" in ds for ds in copies)
    assert released.seg.PixelData == analysed.seg.PixelData
    assert [(r.segment_number, r.feature, r.value) for r in released.rows] == [
        (r.segment_number, r.feature, r.value) for r in analysed.rows
    ]


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_paused_during_the_analysis_and_restored(enabled: bool) -> None:
    """The cyclic collector is off inside the analysis and back as it was afterwards, also
    when the analysis fails."""
    import gc

    from analysis.pipelines import chest_ct

    seen: list[bool] = []
    before = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with pytest.raises(RuntimeError), chest_ct._collector_paused():
            seen.append(gc.isenabled())
            raise RuntimeError("the analysis failed")
        assert seen == [False]
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if before else gc.disable)()

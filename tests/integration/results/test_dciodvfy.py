"""Every result object passes dicom3tools' ``dciodvfy`` with zero errors.

Objects are built from the synthetic series of ``tests/unit/results`` and from five slices of
the real lung CT in ``tests/data`` after Radiogate's own de-identification (so the inputs are
what the pipeline hands over: a one-component pseudonym, de-identification marks). Errors
fail the test; warnings must be among the ones listed in ``ACCEPTED`` (and docs/results.md),
so a new warning is noticed too. ``test_dciodvfy_sees_a_broken_object`` shows that a missing
Type 1 attribute of each kind of object is caught, i.e. the check can fail.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from analysis.results import (
    ActionableCategory,
    GraphicType,
    Lane,
    Measurement,
    PlanarRegion,
    SegmentResult,
    TriageFinding,
    build_key_objects,
    build_measurement_report,
    build_segmentation,
    build_triage_sr,
    to_bytes,
)
from config.deid import DeidProfile
from dicom_nodes.deid.engine import Deidentifier
from dicom_nodes.deid.model import BurnedIn
from tests.support.data import extract_ct
from tests.support.phi import find_leaks, identifying_values
from tests.unit.results.roundtrip import write_and_read
from tests.unit.results.synthetic import (
    EXTRACTOR,
    PROVENANCE,
    SEGMENTER,
    TRIAGE_MODEL,
    ct_series,
    masks_for,
    segment_results,
    triage_finding,
)

pytestmark = pytest.mark.integration

SECRET = b"results-dciodvfy-secret-0123456789"
ACCEPTED = [
    # our private coding scheme: declared in (0008,0110), unknown to dciodvfy's dictionary
    re.compile(
        r"Warning - Unrecognized defined term <99RADIOGATE> for value 1 of attribute "
        r"<Coding Scheme Designator>"
    ),
    # the de-identified patient's pseudonym is one Person Name component (PS3.5 6.2.1.2)
    re.compile(
        r"Warning - Value dubious for this VR - \(0x0010,0x0010\) PN Patient's Name\s+"
        r"PN \[1\] = <RG[0-9A-Z]{16}> - Retired Person Name form"
    ),
    # the de-identifier empties Study ID (Type 2, PS3.15 Table E.1-1 action Z)
    re.compile(
        r"Warning - Missing attribute or value that would be needed to build DICOMDIR - Study ID"
    ),
]


@pytest.fixture(scope="module")
def dciodvfy() -> str:
    path = shutil.which("dciodvfy", path="/usr/bin:/usr/local/bin:/bin")
    if path is None:
        pytest.fail("dciodvfy (dicom3tools) is not installed: make system-deps")
    return path


def verify(dciodvfy: str, data: bytes, tmp_path: Path) -> tuple[list[str], list[str]]:
    """dciodvfy's Error and Warning lines for the Part 10 *data*."""
    path = tmp_path / "object.dcm"
    path.write_bytes(data)
    proc = subprocess.run([dciodvfy, str(path)], capture_output=True, timeout=120, check=False)
    lines = (proc.stdout + proc.stderr).decode("latin-1").splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings


def assert_valid(dciodvfy: str, ds: Dataset, tmp_path: Path) -> list[str]:
    errors, warnings = verify(dciodvfy, to_bytes(ds), tmp_path)
    assert not errors, "dciodvfy errors:\n" + "\n".join(errors)
    unexpected = [w for w in warnings if not any(a.fullmatch(w.strip()) for a in ACCEPTED)]
    assert not unexpected, "new dciodvfy warnings:\n" + "\n".join(unexpected)
    print(f"{ds.Modality} {ds.SeriesDescription}: {len(warnings)} accepted warnings")
    return warnings


# -- the synthetic series ---------------------------------------------------------------------


def _synthetic() -> dict[str, Callable[[], Dataset]]:
    source = ct_series()
    finding = triage_finding(source)
    segments = segment_results(source)

    def seg() -> Dataset:
        return build_segmentation(source, segments, masks_for(source), SEGMENTER, PROVENANCE)

    routine = TriageFinding(
        Lane.ROUTINE, None, 3.5, codes.SCT.Nodule, (), finding.series_instance_uid
    )
    return {
        "triage-sr": lambda: build_triage_sr(source, finding, TRIAGE_MODEL, PROVENANCE),
        "triage-sr-nothing-flagged": lambda: build_triage_sr(
            source, routine, TRIAGE_MODEL, PROVENANCE
        ),
        "kos": lambda: build_key_objects(source, finding, TRIAGE_MODEL, PROVENANCE),
        "seg": seg,
        "measurement-sr": lambda: build_measurement_report(
            source, seg(), segments, EXTRACTOR, PROVENANCE
        ),
    }


SYNTHETIC = _synthetic()


@pytest.mark.parametrize("kind", list(SYNTHETIC))
def test_synthetic_series_objects_have_no_errors(kind: str, dciodvfy: str, tmp_path: Path) -> None:
    assert_valid(dciodvfy, SYNTHETIC[kind](), tmp_path)


BREAKS: dict[str, tuple[str, str]] = {
    # kind -> (attribute deleted, what dciodvfy's error line names)
    "triage-sr": ("CompletionFlag", "CompletionFlag"),
    "kos": ("CurrentRequestedProcedureEvidenceSequence", "CurrentRequestedProcedureEvidence"),
    "seg": ("SegmentSequence", "SegmentSequence"),
    "measurement-sr": ("VerificationFlag", "VerificationFlag"),
}


@pytest.mark.parametrize("kind", list(BREAKS))
def test_dciodvfy_sees_a_broken_object(kind: str, dciodvfy: str, tmp_path: Path) -> None:
    """The check can fail: without a required attribute each object has an error."""
    attribute, named = BREAKS[kind]
    ds = SYNTHETIC[kind]()
    assert not verify(dciodvfy, to_bytes(ds), tmp_path)[0]
    del ds[attribute]
    errors, _ = verify(dciodvfy, to_bytes(ds), tmp_path)
    assert any(named in line for line in errors), errors


# -- five slices of the real lung CT, de-identified by Radiogate --------------------------------


def _no_pixels(ds: Dataset, profile: DeidProfile) -> BurnedIn:
    return BurnedIn.NONE


@pytest.fixture(scope="module")
def lung1(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Dataset], list[Dataset]]:
    """(original, de-identified) datasets of five consecutive slices from the middle."""
    files = extract_ct(tmp_path_factory.mktemp("lung1"))[20:25]
    deidentifier = Deidentifier(DeidProfile(name="t"), SECRET, pixel_step=_no_pixels)
    originals: list[Dataset] = [pydicom.dcmread(f) for f in files]
    deidentified: list[Dataset] = [
        pydicom.dcmread(io.BytesIO(deidentifier.deidentify_bytes(f.read_bytes())[0])) for f in files
    ]
    assert all(ds.PatientIdentityRemoved == "YES" for ds in deidentified)
    return originals, deidentified


def _lung_masks(source: list[Dataset]) -> dict[int, np.ndarray]:
    """Right and left lung by thresholding: air (< -400 HU) inside the body's extent on each
    row, split at the body's middle column; a 6-pixel disc in the right lung as a lesion."""
    volume = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                       for ds in source])  # fmt: skip
    body = volume > -300
    columns = np.arange(volume.shape[2])
    inside = np.zeros_like(body)
    for z, y in zip(*np.nonzero(body.any(axis=2)), strict=True):
        xs = np.nonzero(body[z, y])[0]
        inside[z, y] = (columns > xs[0]) & (columns < xs[-1])
    air = inside & (volume < -400)
    middle = int(np.mean(np.nonzero(body)[2]))
    right, left = air.copy(), air.copy()
    right[:, :, middle:] = False  # patient right is image left (HFS)
    left[:, :, :middle] = False
    z, y, x = (int(np.median(a)) for a in np.nonzero(right[2:3]))
    z += 2
    yy, xx = np.ogrid[: volume.shape[1], : volume.shape[2]]
    lesion = np.zeros_like(air)
    lesion[z] = (yy - y) ** 2 + (xx - x) ** 2 <= 36
    assert right.sum() > 1000 and left.sum() > 1000, "lung threshold found no lungs"
    return {1: right, 2: left, 3: lesion}


def _lung_segments(source: list[Dataset], masks: dict[int, np.ndarray]) -> list[SegmentResult]:
    hu = codes.UCUM.HounsfieldUnit
    lesion_slice = int(np.nonzero(masks[3].any(axis=(1, 2)))[0][0])
    ys, xs = np.nonzero(masks[3][lesion_slice])
    outline = PlanarRegion(
        GraphicType.ELLIPSE,
        ((xs.min(), ys.mean()), (xs.max() + 1, ys.mean()),
         (xs.mean(), ys.min()), (xs.mean(), ys.max() + 1)),
    )  # fmt: skip
    common = {"finding_site": codes.SCT.Lung}
    return [
        SegmentResult(1, "Right lung", codes.SCT.AnatomicalStructure, codes.SCT.Lung,
                      generate_uid(), "right lung", laterality=codes.SCT.Right,
                      measurements=(Measurement(codes.DCM.AttenuationCoefficient, -850.0, hu,
                                                codes.SCT.Mean),), **common),
        SegmentResult(2, "Left lung", codes.SCT.AnatomicalStructure, codes.SCT.Lung,
                      generate_uid(), "left lung", laterality=codes.SCT.Left, **common),
        SegmentResult(3, "Lesion 1", codes.SCT.MorphologicallyAbnormalStructure,
                      codes.SCT.Nodule, generate_uid(), "lesion 1", laterality=codes.SCT.Right,
                      key_slice=str(source[lesion_slice].SOPInstanceUID), region=outline,
                      measurements=(Measurement(codes.IBSI.Sphericity, 0.97, codes.UCUM.NoUnits),),
                      **common),
    ]  # fmt: skip


def test_lung_ct_objects_have_no_errors_and_no_phi(
    lung1: tuple[list[Dataset], list[Dataset]], dciodvfy: str, tmp_path: Path
) -> None:
    originals, source = lung1
    masks = _lung_masks(source)
    segments = _lung_segments(source, masks)
    seg = build_segmentation(source, segments, masks, SEGMENTER, PROVENANCE)
    assert seg.Rows == seg.Columns == 512
    assert seg.NumberOfFrames == sum(int(m.any(axis=(1, 2)).sum()) for m in masks.values())
    finding = TriageFinding(
        Lane.CRITICAL, ActionableCategory.CATEGORY_1, 91.0, codes.SCT.Nodule,
        (segments[2].key_slice or "",), str(source[0].SeriesInstanceUID),
    )  # fmt: skip
    objects = [
        seg,
        build_measurement_report(source, seg, segments, EXTRACTOR, PROVENANCE),
        build_triage_sr(source, finding, TRIAGE_MODEL, PROVENANCE),
        build_key_objects(source, finding, TRIAGE_MODEL, PROVENANCE),
    ]
    phi = [p for ds in originals[:1] for p in identifying_values(ds, DeidProfile().options)]
    assert any(p.value == "DOE^JANE^Q" for p in phi)
    for ds in objects:
        assert_valid(dciodvfy, ds, tmp_path)
        data, _ = write_and_read(ds)
        leaks = find_leaks(phi, data)
        assert not leaks, "\n".join(str(leak) for leak in leaks)
    back = hd.seg.segread(io.BytesIO(write_and_read(seg)[0]))
    uids = [str(ds.SOPInstanceUID) for ds in source]
    pixels = back.get_pixels_by_source_instance(uids, segment_numbers=[1, 2, 3])
    for number, mask in masks.items():
        assert np.array_equal(pixels[..., number - 1].astype(bool), mask)
    report = hd.sr.srread(io.BytesIO(write_and_read(objects[1])[0]))
    assert isinstance(report.content, hd.sr.MeasurementReport)
    (planar,) = report.content.get_planar_roi_measurement_groups()
    assert planar.tracking_uid == segments[2].tracking_uid

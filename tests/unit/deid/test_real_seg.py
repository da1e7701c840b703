"""A real Segmentation (dcmqi) and its three source CT slices, de-identified one by one.

Every reference of the SEG — Referenced Series Sequence, the per-frame Source Image Sequence,
the Frame of Reference, the study — must name the de-identified images, and no original UID may
survive anywhere in any output.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from config.deid import DeidProfile
from dicom_nodes.deid.engine import Deidentifier

SEG_DIR = Path(__file__).resolve().parents[2] / "data" / "deid" / "dcmqi_seg"
REFERENCE_KEYWORDS = {
    "ReferencedSOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID",
}  # fmt: skip


def _uids(ds: Dataset) -> set[str]:
    return {
        str(v)
        for e in ds.iterall()
        if e.VR == "UI"
        for v in (e.value if e.VM > 1 else [e.value])
        if v
    }


def _references(ds: Dataset) -> set[tuple[str, str]]:
    return {(e.keyword, str(e.value)) for e in ds.iterall() if e.keyword in REFERENCE_KEYWORDS}


@pytest.fixture(scope="module")
def outputs() -> dict[str, tuple[Dataset, Dataset, bytes]]:
    engine = Deidentifier(DeidProfile(), b"site secret for the SEG test!!!!")
    out: dict[str, tuple[Dataset, Dataset, bytes]] = {}
    for path in sorted(SEG_DIR.iterdir()):
        data = path.read_bytes()
        new, _result = engine.deidentify_bytes(data)
        out[path.name] = (pydicom.dcmread(path), pydicom.dcmread(io.BytesIO(new)), new)
    return out


def test_seg_references_name_the_deidentified_images(
    outputs: dict[str, tuple[Dataset, Dataset, bytes]],
) -> None:
    _orig_seg, seg, _ = outputs["label.seg"]
    images = [outputs[f"IMG000{i}.dcm"][1] for i in (1, 2, 3)]
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # still a Segmentation
    refs = _references(seg)
    referenced_sops = {v for k, v in refs if k == "ReferencedSOPInstanceUID"}
    assert referenced_sops == {str(im.SOPInstanceUID) for im in images}
    assert {v for k, v in refs if k == "FrameOfReferenceUID"} == {
        str(im.FrameOfReferenceUID) for im in images
    }
    assert seg.FrameOfReferenceUID == images[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == images[0].StudyInstanceUID
    source_series = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert source_series == images[0].SeriesInstanceUID
    assert seg.SeriesInstanceUID != source_series  # the SEG keeps its own series
    for frame in seg.PerFrameFunctionalGroupsSequence:
        for derivation in frame.DerivationImageSequence:
            for source in derivation.SourceImageSequence:
                assert source.ReferencedSOPInstanceUID in referenced_sops


def test_no_original_uid_survives(outputs: dict[str, tuple[Dataset, Dataset, bytes]]) -> None:
    originals: set[str] = set()
    for original, _new, _data in outputs.values():
        originals |= {u for u in _uids(original) if not u.startswith("1.2.840.10008.")}
    assert len(originals) >= 6  # the scan itself can fail: there are UIDs to look for
    for name, (_original, new, data) in outputs.items():
        leaked = [u for u in originals if u.encode() in data]
        assert not leaked, f"{name}: {leaked}"
        assert new.PatientIdentityRemoved == "YES"


def test_seg_passes_dciodvfy_without_new_errors(
    outputs: dict[str, tuple[Dataset, Dataset, bytes]], tmp_path: Path
) -> None:
    def errors(data: bytes, name: str) -> set[str]:
        path = tmp_path / name
        path.write_bytes(data)
        run = subprocess.run(
            ["/usr/bin/dciodvfy", str(path)], capture_output=True, text=True, check=False
        )
        lines = (run.stdout + run.stderr).splitlines()
        return {line.split(" - ", 1)[-1] for line in lines if line.startswith("Error")}

    before = errors((SEG_DIR / "label.seg").read_bytes(), "in.dcm")
    after = errors(outputs["label.seg"][2], "out.dcm")
    assert after <= before, sorted(after - before)

"""Capturing slices for triage: a slice that cannot be read is recorded with its problem and
never fails the routing batch it came in."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from config.alerts import AlertSettings
from config.triage import TriageSettings
from dicom_nodes.pipeline.triage import Triage, score_slices


def _slice(*, series: bool) -> bytes:
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, generate_uid(), "CT"
    if series:
        ds.SeriesInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = (
        ds.SOPClassUID, ds.SOPInstanceUID)  # fmt: skip
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_an_unreadable_slice_is_captured_with_its_problem(tmp_path: Path) -> None:
    triage = Triage(TriageSettings(models=[]), AlertSettings(), (), None, None)
    captured = dict(score_slices(triage, [
        ("1.2.3.1", _slice(series=True)),
        ("1.2.3.2", _slice(series=False)),  # no Series Instance UID
        ("1.2.3.3", b"not dicom at all"),
        ("1.2.3.4", tmp_path / "gone.dcm"),
    ]))  # fmt: skip
    assert captured["1.2.3.1"].series_uid and not captured["1.2.3.1"].facts.problems
    for uid in ("1.2.3.2", "1.2.3.3", "1.2.3.4"):
        assert captured[uid].series_uid == ""
        assert captured[uid].facts.problems == ("pixel-data-undecodable",)

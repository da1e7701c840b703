from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import UID, generate_uid

from dicom_nodes.errors import DatasetProblem, InvalidDataset
from dicom_nodes.spool import inspect as inspect_module
from dicom_nodes.spool.inspect import DatasetIdentity, inspect_file
from tests.support.data import PYDICOM_FILES

ELE = "1.2.840.10008.1.2.1"


def _part10(
    path: Path, ts: str, body: bytes, sop: str = "1.2.3", cls: str = "1.2.840.10008.5.1.4.1.1.7"
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(cls)
    meta.MediaStorageSOPInstanceUID = UID(sop)
    meta.TransferSyntaxUID = UID(ts)
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)  # type: ignore[arg-type]
    path.write_bytes(buf.getvalue() + body)
    return path


def _encode(ds: Dataset, implicit: bool = False, little: bool = True) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = little
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def _ds() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.5"
    ds.Modality = "OT"
    return ds


PIXEL_DATA_MISFITS = {
    "MR_small_padded.dcm": "Pixel Data is 8320 bytes; the image attributes require 8192",
    "badVR.dcm": "Number of Frames is invalid",
}
"""pydicom test files whose Pixel Data does not fit their image attributes (pydicom reads the
first by ignoring the excess; it cannot decode the second)."""


def test_pydicom_test_files_agree_with_pydicom() -> None:
    """Every pydicom test file with identifying UIDs that pydicom reads fully is accepted,
    except those whose Pixel Data does not fit its attributes."""
    checked = 0
    for f in sorted(PYDICOM_FILES.rglob("*.dcm")):
        if f.name in PIXEL_DATA_MISFITS:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(f)
                list(ds.iterall())
        except Exception:
            continue
        if "truncated" in f.name or not all(
            k in ds
            for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
        ):
            continue
        if ds.preamble is None or "TransferSyntaxUID" not in ds.file_meta:
            continue
        ident = inspect_file(f)
        assert ident.sop_instance_uid == ds.SOPInstanceUID, f.name
        assert ident.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
        checked += 1
    assert checked > 40


@pytest.mark.parametrize("name", sorted(PIXEL_DATA_MISFITS))
def test_pixel_data_that_does_not_fit_is_refused(name: str) -> None:
    with pytest.raises(InvalidDataset) as exc:
        inspect_file(PYDICOM_FILES / name)
    assert exc.value.problem is DatasetProblem.PIXEL_DATA_MISMATCH
    assert exc.value.detail == PIXEL_DATA_MISFITS[name]


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
def test_truncated_files_that_pydicom_accepts_are_refused(name: str) -> None:
    with pytest.raises(InvalidDataset) as exc:
        inspect_file(PYDICOM_FILES / name)
    assert exc.value.problem is DatasetProblem.UNPARSEABLE


@pytest.mark.parametrize("cut", [1, 7, 100, 2000])
def test_truncation_anywhere_is_refused(tmp_path: Path, cut: int) -> None:
    raw = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    p = tmp_path / "t.dcm"
    p.write_bytes(raw[:-cut])
    with pytest.raises(InvalidDataset):
        inspect_file(p)


@pytest.mark.parametrize(("implicit", "little", "ts"), [
    (False, True, ELE), (True, True, "1.2.840.10008.1.2"), (False, False, "1.2.840.10008.1.2.2"),
])  # fmt: skip
def test_nested_sequences_in_each_uncompressed_syntax(
    tmp_path: Path, implicit: bool, little: bool, ts: str
) -> None:
    ds = _ds()
    inner = Dataset()
    inner.CodeValue = "X"
    item = Dataset()
    item.ReferencedSOPInstanceUID = "9.9"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    ident = inspect_file(_part10(tmp_path / "a.dcm", ts, _encode(ds, implicit, little)))
    assert (ident.sop_class_uid, ident.study_instance_uid, ident.series_instance_uid) == (
        "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", "1.2.3.4.5")  # fmt: skip
    assert ident.modality == "OT"


def test_undefined_length_sequences_and_encapsulated_pixel_data(tmp_path: Path) -> None:
    body = bytearray(_encode(_ds()))
    # (0008,1140) SQ undefined length, one undefined-length item with one element.
    body += struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
    body += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    body += struct.pack("<HH2sH", 0x0008, 0x1155, b"UI", 4) + b"9.9\0"
    body += struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    body += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    # Encapsulated pixel data: empty offset table, one fragment, sequence delimiter.
    body += struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    body += struct.pack("<HHI", 0xFFFE, 0xE000, 0)
    body += struct.pack("<HHI", 0xFFFE, 0xE000, 4) + b"\xff\xd8\xff\xd9"
    body += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    ok = _part10(tmp_path / "ok.dcm", "1.2.840.10008.1.2.4.50", bytes(body))
    assert inspect_file(ok).sop_instance_uid == "1.2.3"
    # Missing sequence delimiter after the last fragment: truncated.
    bad = _part10(tmp_path / "bad.dcm", "1.2.840.10008.1.2.4.50", bytes(body[:-8]))
    with pytest.raises(InvalidDataset):
        inspect_file(bad)


def test_un_sequence_with_undefined_length_is_implicit_inside(tmp_path: Path) -> None:
    body = bytearray(_encode(_ds()))
    body += struct.pack("<HH2sHI", 0x0009, 0x1010, b"UN", 0, 0xFFFFFFFF)
    body += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    body += struct.pack("<HHI", 0x0009, 0x0010, 4) + b"ACME"  # implicit VR inside
    body += struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    body += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    assert inspect_file(_part10(tmp_path / "un.dcm", ELE, bytes(body))).sop_instance_uid == "1.2.3"


def test_deflated_dataset(tmp_path: Path) -> None:
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = comp.compress(_encode(_ds())) + comp.flush()
    p = _part10(tmp_path / "d.dcm", "1.2.840.10008.1.2.1.99", body)
    assert inspect_file(p).series_instance_uid == "1.2.3.4.5"
    broken = _part10(tmp_path / "x.dcm", "1.2.840.10008.1.2.1.99", b"\x00\xff" * 10)
    with pytest.raises(InvalidDataset):
        inspect_file(broken)
    assert list(tmp_path.glob("*.inflate")) == []


@pytest.mark.parametrize(("drop", "problem"), [
    ("SOPInstanceUID", DatasetProblem.MISSING_UID),
    ("SOPClassUID", DatasetProblem.MISSING_UID),
    ("StudyInstanceUID", DatasetProblem.MISSING_UID),
    ("SeriesInstanceUID", DatasetProblem.MISSING_UID),
])  # fmt: skip
def test_missing_identifying_uids(tmp_path: Path, drop: str, problem: DatasetProblem) -> None:
    ds = _ds()
    delattr(ds, drop)
    with pytest.raises(InvalidDataset) as exc:
        inspect_file(_part10(tmp_path / "m.dcm", ELE, _encode(ds)))
    assert exc.value.problem is problem


def test_invalid_uid_and_invalid_vr(tmp_path: Path) -> None:
    ds = _ds()
    ds.SOPInstanceUID = "1.2.3"
    raw = _encode(ds).replace(b"1.2.3\0", b"../x/\0", 1)
    with pytest.raises(InvalidDataset) as exc:
        inspect_file(_part10(tmp_path / "u.dcm", ELE, raw))
    assert exc.value.problem is DatasetProblem.INVALID_UID
    wrong_vr = bytearray(_encode(_ds()))
    wrong_vr[4:6] = b"QQ"
    # A wrong VR on the very first element falls back to implicit VR, which then fails too.
    with pytest.raises(InvalidDataset) as exc:
        inspect_file(_part10(tmp_path / "v.dcm", ELE, bytes(wrong_vr)))
    assert exc.value.problem is DatasetProblem.UNPARSEABLE


def test_no_phi_in_messages(tmp_path: Path) -> None:
    ds = _ds()
    ds.PatientName = "SECRET^PATIENT"
    del ds.SOPInstanceUID
    with pytest.raises(InvalidDataset) as exc:
        inspect_file(_part10(tmp_path / "p.dcm", ELE, _encode(ds)))
    assert "SECRET" not in str(exc.value)


def test_not_dicom(tmp_path: Path) -> None:
    p = tmp_path / "n.dcm"
    p.write_bytes(b"hello")
    with pytest.raises(InvalidDataset):
        inspect_file(p)
    p.write_bytes(b"")
    with pytest.raises(InvalidDataset):
        inspect_file(p)


def test_generated_uids_are_accepted(tmp_path: Path) -> None:
    ds = _ds()
    ds.SOPInstanceUID = generate_uid()
    assert (
        inspect_file(_part10(tmp_path / "g.dcm", ELE, _encode(ds))).sop_instance_uid
        == ds.SOPInstanceUID
    )


def _image(rows: int = 4, columns: int = 6, bits: int = 16, samples: int = 1) -> Dataset:
    ds = _ds()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored = rows, columns, bits, bits
    ds.HighBit, ds.SamplesPerPixel, ds.PixelRepresentation = bits - 1, samples, 0
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else "RGB"
    return ds


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize(
    ("attrs", "frames", "photometric", "length", "ok"),
    [
        ({}, None, None, 4 * 6 * 2, True),
        ({}, None, None, 4 * 6, False),  # half: a truncated image re-encoded consistently
        ({}, None, None, 4 * 6 * 2 + 2, False),  # longer
        ({}, 3, None, 3 * 4 * 6 * 2, True),
        ({}, 3, None, 2 * 4 * 6 * 2, False),  # a frame missing
        ({"bits": 8, "samples": 3}, None, None, 4 * 6 * 3, True),
        ({"bits": 8, "samples": 3}, None, "YBR_FULL_422", 4 * 6 * 2, True),
        ({"bits": 1, "rows": 3, "columns": 3}, None, None, 2, True),  # 9 bits → 2 bytes, even
        ({"bits": 8, "rows": 3, "columns": 3}, None, None, 10, True),  # 9 bytes padded to 10
    ],
)
def test_native_pixel_data_length_against_the_image_attributes(
    tmp_path: Path,
    implicit: bool,
    attrs: dict[str, int],
    frames: int | None,
    photometric: str | None,
    length: int,
    ok: bool,
) -> None:
    ds = _image(**attrs)
    if frames is not None:
        ds.NumberOfFrames = frames
    if photometric is not None:
        ds.PhotometricInterpretation = photometric
    ds.PixelData = b"\0" * length
    ds["PixelData"].VR = "OB" if ds.BitsAllocated <= 8 else "OW"
    ts = "1.2.840.10008.1.2" if implicit else ELE
    path = _part10(tmp_path / "p.dcm", ts, _encode(ds, implicit=implicit))
    if ok:
        assert inspect_file(path).sop_instance_uid == "1.2.3"
    else:
        with pytest.raises(InvalidDataset) as exc:
            inspect_file(path)
        assert exc.value.problem is DatasetProblem.PIXEL_DATA_MISMATCH
        assert "the image attributes require" in exc.value.detail


def _fragments(frames: int, table: int, count: int) -> bytes:
    items = struct.pack("<HHI", 0xFFFE, 0xE000, table) + b"\0" * table
    for _ in range(count):
        items += struct.pack("<HHI", 0xFFFE, 0xE000, 4) + b"\xff\xd8\xff\xd9"
    return (
        struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
        + items
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )


@pytest.mark.parametrize(
    ("frames", "table", "count", "ok"),
    [(1, 0, 1, True), (2, 8, 2, True), (2, 0, 3, True), (2, 0, 1, False), (2, 4, 2, False),
     (1, 0, 0, False)],
)  # fmt: skip
def test_encapsulated_pixel_data_structure(
    tmp_path: Path, frames: int, table: int, count: int, ok: bool
) -> None:
    ds = _image(bits=8)
    ds.NumberOfFrames = frames
    body = _encode(ds) + _fragments(frames, table, count)
    path = _part10(tmp_path / "e.dcm", "1.2.840.10008.1.2.4.50", body)
    if ok:
        inspect_file(path)
    else:
        with pytest.raises(InvalidDataset) as exc:
            inspect_file(path)
        assert exc.value.problem is DatasetProblem.PIXEL_DATA_MISMATCH


def test_pixel_data_without_image_attributes(tmp_path: Path) -> None:
    ds = _ds()
    ds.PixelData = b"\0" * 8
    ds["PixelData"].VR = "OB"
    path = _part10(tmp_path / "n.dcm", ELE, _encode(ds))
    with pytest.raises(InvalidDataset) as exc:
        inspect_file(path)
    assert exc.value.detail == "Pixel Data without Rows, Columns, Bits Allocated, Samples per Pixel"
    assert getattr(exc.value.identity, "sop_instance_uid", None) == "1.2.3"


def test_read_and_mapped_files_give_the_same_answer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Small files are read, large ones mapped: either way every pydicom test file (and a
    truncated copy of each) gets the same identity or the same refusal."""

    def outcome(path: Path) -> tuple[object, object]:
        try:
            ident = inspect_file(path)
        except InvalidDataset as exc:
            return (exc.problem, exc.detail)
        return (ident, dict(ident.patient.elements))

    files = sorted(PYDICOM_FILES.rglob("*.dcm"))
    answers: dict[int, list[tuple[object, object]]] = {}
    for limit in (0, 1 << 40):
        monkeypatch.setattr(inspect_module, "_READ_AT_ONCE", limit)
        answers[limit] = []
        for n, f in enumerate(files):
            answers[limit].append(outcome(f))
            if f.stat().st_size > 200:
                cut = tmp_path / f"{n}.dcm"
                cut.write_bytes(f.read_bytes()[: f.stat().st_size * 2 // 3])
                answers[limit].append(outcome(cut))
    assert answers[0] == answers[1 << 40]
    assert sum(isinstance(a[0], DatasetIdentity) for a in answers[0]) > 40

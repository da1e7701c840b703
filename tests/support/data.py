"""Test data: the 48-slice CT from tests/data and one file per transfer syntax."""

from __future__ import annotations

import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import UID, generate_uid

__all__ = ["TS_SOURCES", "TsFile", "dataset_bytes", "extract_ct", "make_ts_files", "series_copies"]

DATA = Path(__file__).resolve().parent.parent / "data"
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def extract_ct(dest: Path) -> list[Path]:
    """Extract the 48-slice CT series into *dest*; return its files in order."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(DATA / "lung1_ct_dicom.tar.xz") as tar:
        tar.extractall(dest, filter="data")
    return sorted((dest / "lung1_ct_dicom").glob("*.dcm"))


# transfer syntax UID -> (source file, relabel): relabel means the file's own syntax is a
# subset of the target (a JPEG process 14 SV1 stream is a valid process 14 stream).
TS_SOURCES: dict[str, tuple[Path, bool]] = {
    "1.2.840.10008.1.2": (PYDICOM_FILES / "MR_small_implicit.dcm", False),
    "1.2.840.10008.1.2.1": (PYDICOM_FILES / "CT_small.dcm", False),
    "1.2.840.10008.1.2.1.99": (PYDICOM_FILES / "image_dfl.dcm", False),
    "1.2.840.10008.1.2.2": (PYDICOM_FILES / "MR_small_bigendian.dcm", False),
    "1.2.840.10008.1.2.4.50": (PYDICOM_FILES / "SC_rgb_dcmtk_+eb+cr.dcm", False),
    "1.2.840.10008.1.2.4.51": (PYDICOM_FILES / "JPEG-lossy.dcm", False),
    "1.2.840.10008.1.2.4.57": (PYDICOM_FILES / "SC_rgb_jpeg_gdcm.dcm", True),
    "1.2.840.10008.1.2.4.70": (PYDICOM_FILES / "SC_rgb_jpeg_gdcm.dcm", False),
    "1.2.840.10008.1.2.4.80": (PYDICOM_FILES / "MR_small_jpeg_ls_lossless.dcm", False),
    "1.2.840.10008.1.2.4.81": (PYDICOM_FILES / "JPEGLSNearLossless_16.dcm", False),
    "1.2.840.10008.1.2.4.90": (PYDICOM_FILES / "MR_small_jp2klossless.dcm", False),
    "1.2.840.10008.1.2.4.91": (PYDICOM_FILES / "JPEG2000.dcm", False),
    "1.2.840.10008.1.2.4.201": (DATA / "HTJ2KLossless_08_RGB.dcm", False),
    "1.2.840.10008.1.2.4.203": (DATA / "HTJ2K_08_RGB.dcm", False),
    "1.2.840.10008.1.2.5": (PYDICOM_FILES / "MR_small_RLE.dcm", False),
    "1.2.840.10008.1.2.8.1": (DATA / "liver_deflate.dcm", False),
}


@dataclass(frozen=True)
class TsFile:
    transfer_syntax: str
    path: Path
    sop_instance_uid: str


def series_copies(src: list[Path], dest: Path, copies: int) -> list[Path]:
    """*copies* x the series *src*, each copy a new series with new SOP Instance UIDs."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for c in range(copies):
        series = generate_uid()
        for i, f in enumerate(src):
            ds = pydicom.dcmread(f)
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = dest / f"c{c:02d}_{i:03d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            out.append(path)
    return out


def make_ts_files(dest: Path) -> list[TsFile]:
    """One file per transfer syntax in *dest*, each with unique UIDs (pixel data untouched)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for ts, (src, relabel) in TS_SOURCES.items():
        ds = pydicom.dcmread(src)
        if relabel:
            ds.file_meta.TransferSyntaxUID = UID(ts)
        assert str(ds.file_meta.TransferSyntaxUID) == ts, (src, ts)
        ds.StudyInstanceUID = ds.get("StudyInstanceUID") or generate_uid()
        ds.SeriesInstanceUID = ds.get("SeriesInstanceUID") or generate_uid()
        ds.SOPInstanceUID = generate_uid()
        if 0xFFFCFFFC in ds:  # DCMTK drops Data Set Trailing Padding when it sends
            del ds[0xFFFCFFFC]
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = dest / f"{ts}.dcm"
        if pydicom.uid.UID(ts).is_transfer_syntax:
            ds.save_as(path, enforce_file_format=True)
        else:  # newer than this pydicom (Deflated Image Frame Compression): sent unchanged
            path.write_bytes(src.read_bytes())
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        out.append(TsFile(ts, path, str(ds.SOPInstanceUID)))
    return out


def dataset_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes after the File Meta Information group of a Part 10 file (inflated if the
    transfer syntax is Deflated Explicit VR Little Endian, whose compressed bytes depend on the
    sender's compression level)."""
    raw = Path(path).read_bytes()
    assert raw[128:132] == b"DICM"
    pos = 132
    while raw[pos : pos + 2] == b"\x02\x00":
        vr = raw[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
            length = int.from_bytes(raw[pos + 8 : pos + 12], "little")
            pos += 12 + length
        else:
            length = int.from_bytes(raw[pos + 6 : pos + 8], "little")
            pos += 8 + length
    if b"1.2.840.10008.1.2.1.99" in raw[132:pos]:
        return zlib.decompress(raw[pos:], -zlib.MAX_WBITS)
    return raw[pos:]

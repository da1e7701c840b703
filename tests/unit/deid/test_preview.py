"""The review PNG: decodable, every frame on the sheet, extremes kept, MONOCHROME1 inverted."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from dicom_nodes.deid.preview import frames_of, png_bytes, write_preview


def decode_png(data: bytes) -> np.ndarray:
    """A minimal PNG reader for filter-0, 8-bit grey/RGB images (what png_bytes writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8
    channels = 3 if colour == 2 else 1
    raw = zlib.decompress(idat)
    stride = 1 + width * channels
    rows = [raw[y * stride + 1 : (y + 1) * stride] for y in range(height)]
    assert all(raw[y * stride] == 0 for y in range(height))
    image = np.frombuffer(b"".join(rows), dtype=np.uint8)
    return image.reshape((height, width, channels) if channels == 3 else (height, width))


def test_grey_image_round_trips_with_its_extremes(tmp_path: Path) -> None:
    source = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    frames, fields = write_preview(source, tmp_path / "ct.png")
    image = decode_png((tmp_path / "ct.png").read_bytes())
    ds = pydicom.dcmread(source)
    assert frames == 1 and image.shape == (ds.Rows, ds.Columns)
    assert image.min() == 0 and image.max() == 255
    assert fields["Modality"] == "CT" and "PatientName" not in fields
    # Brighter stored values stay brighter (monotonic mapping).
    px = ds.pixel_array
    assert image[np.unravel_index(px.argmax(), px.shape)] == 255


def _rgb_two_frames(path: Path) -> np.ndarray:
    pixels = np.random.default_rng(1).integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, generate_uid()
    ds.Modality, ds.Rows, ds.Columns, ds.NumberOfFrames = "US", 6, 5, 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return pixels


def test_multiframe_sheet_and_colour(tmp_path: Path) -> None:
    pixels = _rgb_two_frames(tmp_path / "us.dcm")
    frames, fields = write_preview(tmp_path / "us.dcm", tmp_path / "us.png")
    image = decode_png((tmp_path / "us.png").read_bytes())
    assert frames == 2 and image.shape == (6, 2 * 5 + 2, 3)
    assert np.array_equal(image[:, :5], pixels[0]) and np.array_equal(image[:, 7:], pixels[1])
    assert fields["NumberOfFrames"] == "2"


def test_monochrome1_is_inverted() -> None:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))  # type: ignore[arg-type]
    normal = frames_of(ds)[0]
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert np.array_equal(frames_of(ds)[0], 255 - normal)


def test_png_bytes_rejects_nothing_it_writes() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(decode_png(png_bytes(grey)), grey)

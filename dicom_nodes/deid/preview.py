"""A PNG of a held image for the person who reviews it (``radiogate quarantine show``).

Every frame is shown (a contact sheet of up to :data:`MAX_FRAMES` frames in a grid, in frame
order), each scaled to the full grey range by its own minimum and maximum after the Modality
LUT (rescale slope/intercept): burned-in text is usually at the extremes of the range and must
not be windowed away. MONOCHROME1 is inverted so that it looks as a viewer shows it; colour
images (RGB, and YBR converted by pydicom) stay in colour. The PNG (ISO/IEC 15948) is written
here with zlib: no imaging library is needed.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset

__all__ = ["MAX_FRAMES", "REVIEW_FIELDS", "frames_of", "png_bytes", "write_preview"]

MAX_FRAMES = 16
REVIEW_FIELDS = (
    "Modality", "SOPClassUID", "BurnedInAnnotation", "RecognizableVisualFeatures", "ImageType",
    "Manufacturer", "ManufacturerModelName", "Rows", "Columns", "NumberOfFrames",
    "PhotometricInterpretation",
)  # fmt: skip
"""Header attributes that decide a burned-in hold (PS3.15 E.3.1; none identifies a patient)."""


def frames_of(ds: Dataset) -> list[npt.NDArray[np.uint8]]:
    """The frames as 8-bit images: (rows, cols) grey or (rows, cols, 3) colour."""
    pixels = ds.pixel_array
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        pixels = pixels[np.newaxis, ...]
    out = []
    for frame in pixels[:MAX_FRAMES]:
        if samples == 1:
            values = frame.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1)
            values += float(ds.get("RescaleIntercept", 0) or 0)
            low, high = float(values.min()), float(values.max())
            scaled = (values - low) / (high - low) * 255.0 if high > low else values * 0.0
            grey = scaled.round().astype(np.uint8)
            if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
                grey = 255 - grey
            out.append(grey)
        else:
            rgb = frame.astype(np.float64)
            high = float(rgb.max()) or 1.0
            out.append((rgb * (255.0 / high) if high > 255 else rgb).round().astype(np.uint8))
    return out


def _sheet(frames: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
    """Frames in a near-square grid (2-pixel grey gutters), all as colour or all as grey."""
    colour = any(f.ndim == 3 for f in frames)
    if colour:
        frames = [f if f.ndim == 3 else np.repeat(f[..., np.newaxis], 3, axis=2) for f in frames]
    rows, cols = max(f.shape[0] for f in frames), max(f.shape[1] for f in frames)
    per_row = math.ceil(math.sqrt(len(frames)))
    lines = math.ceil(len(frames) / per_row)
    gap = 2
    shape: tuple[int, ...] = (lines * (rows + gap) - gap, per_row * (cols + gap) - gap)
    sheet = np.full(shape + ((3,) if colour else ()), 64, dtype=np.uint8)
    for index, frame in enumerate(frames):
        top, left = (index // per_row) * (rows + gap), (index % per_row) * (cols + gap)
        sheet[top : top + frame.shape[0], left : left + frame.shape[1]] = frame
    return sheet


def png_bytes(image: npt.NDArray[np.uint8]) -> bytes:
    """An 8-bit greyscale (2-D) or RGB (3-D) image as PNG (no filtering, zlib level 6)."""
    height, width = image.shape[:2]
    colour_type = 2 if image.ndim == 3 else 0
    raw = b"".join(b"\0" + image[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def write_preview(source: Path, target: Path) -> tuple[int, dict[str, str]]:
    """Write the contact sheet of *source* to *target*; returns the number of frames shown
    and the :data:`REVIEW_FIELDS` present in its header."""
    ds = pydicom.dcmread(source)
    fields = {name: str(ds.get(name)) for name in REVIEW_FIELDS if ds.get(name) not in (None, "")}
    frames = frames_of(ds)
    target.write_bytes(png_bytes(_sheet(frames)))
    return len(frames), fields

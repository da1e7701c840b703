"""Transcoding a file to an uncompressed syntax, for a destination that refuses its own.

Only used when the destination accepted neither the file's transfer syntax nor anything but
Explicit/Implicit VR Little Endian for its SOP class (PS3.5 10.1: every peer must take Implicit
VR Little Endian). The SOP Instance UID stays the same (PS3.5 8.2 and PS3.4 B.4.1: a change of
transfer syntax does not make a new instance; a lossy original keeps Lossy Image Compression
(0028,2110) = 01 as decoded).

Decoding uses pydicom's pixel data decoders (numpy plus the pylibjpeg plugins: JPEG, JPEG-LS,
JPEG 2000, HTJ2K, RLE). What cannot be decoded raises :class:`TranscodeImpossible`, a permanent
error: the same file will never be accepted by that destination.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRBigEndian

from dicom_nodes.forward.model import TranscodeImpossible

__all__ = ["transcode"]

LOGGER = logging.getLogger(__name__)

_WORD_VRS = frozenset({"OW", "OF", "OD", "OL", "OV"})
_PIXEL_DATA = 0x7FE00010


def _little_endian_pixels(ds: Dataset) -> None:
    """Explicit VR Big Endian (retired, PS3.5 A.3) to little endian: pydicom re-encodes every
    value it decodes, but keeps raw bytes of OW/OF/... values, so those are swapped here; only
    Pixel Data is supported (anything else word-sized refuses the conversion)."""

    def check(dataset: Dataset, top: bool) -> None:
        for elem in dataset:
            if elem.VR == "SQ":
                for item in elem.value:
                    check(item, False)
            elif elem.VR in _WORD_VRS and not (top and elem.tag == _PIXEL_DATA):
                raise TranscodeImpossible(
                    f"big endian {elem.VR} element {elem.tag} other than Pixel Data"
                )

    check(ds, True)
    if "PixelData" in ds and int(ds.get("BitsAllocated", 8)) > 8:
        arr = ds.pixel_array
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        ds["PixelData"].VR = "OW"


def transcode(path: Path, target_syntax: str, workdir: Path) -> Path:
    """Write *path* re-encoded in *target_syntax* (an uncompressed little endian syntax) to a
    new file in *workdir*; return its path. Raises :class:`TranscodeImpossible`."""
    target = UID(target_syntax)
    if not target.is_transfer_syntax or target.is_compressed or not target.is_little_endian:
        raise ValueError(f"not an uncompressed little endian syntax: {target_syntax}")
    try:
        ds: Any = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise TranscodeImpossible(f"cannot read the file: {type(exc).__name__}") from exc
    assert isinstance(ds, FileDataset)
    source = UID(str(ds.file_meta.TransferSyntaxUID))
    if not source.is_transfer_syntax:
        raise TranscodeImpossible(f"transfer syntax {source} is unknown to pydicom")
    force = False
    try:
        if source.is_compressed:
            ds.decompress(generate_instance_uid=False)
        elif source == ExplicitVRBigEndian:
            _little_endian_pixels(ds)
            force = True
    except TranscodeImpossible:
        raise
    except Exception as exc:  # every decoder plugin has its own exception types
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise TranscodeImpossible(f"cannot decode {source.name}: {reason}") from exc
    ds.file_meta.TransferSyntaxUID = target
    fd, name = tempfile.mkstemp(suffix=".dcm", dir=workdir)
    os.close(fd)
    out = Path(name)
    try:
        pydicom.dcmwrite(
            out,
            ds,
            implicit_vr=target.is_implicit_VR,
            little_endian=True,
            # pydicom refuses an endianness change unless forced, and forcing excludes
            # enforce_file_format; the dataset read from a Part 10 file keeps its preamble
            # and File Meta Information, so the output is a Part 10 file either way.
            enforce_file_format=not force,
            force_encoding=force,
        )
    except Exception as exc:
        out.unlink(missing_ok=True)
        raise TranscodeImpossible(f"cannot encode as {target.name}: {exc}") from exc
    LOGGER.debug("transcoded %s from %s to %s", ds.SOPInstanceUID, source.name, target.name)
    return out

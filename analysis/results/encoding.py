"""Part 10 bytes of a result object, always Explicit VR Little Endian.

PS3.10 7.1 (File Meta Information) and PS3.5 A.2: Radiogate writes SEG, SR and KOS in Explicit
VR Little Endian, never Deflated Explicit VR Little Endian, which most web viewers fail to read.
"""

from __future__ import annotations

from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

__all__ = ["to_bytes"]


def to_bytes(ds: Dataset) -> bytes:
    """The Part 10 encoding of *ds* (preamble, file meta, dataset); ValueError unless its
    transfer syntax is Explicit VR Little Endian."""
    if ds.file_meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian:
        raise ValueError("result objects are written in Explicit VR Little Endian only")
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()

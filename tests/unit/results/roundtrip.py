"""Write a result object, read it back strictly (highdicom's ``write_and_read_dataset`` habit).

:func:`write_and_read` encodes with :func:`analysis.results.to_bytes` while pydicom validates
every value it writes, checks the bytes are Part 10 Explicit VR Little Endian, reads them back
with pydicom's reading validation set to RAISE and converts every element (pydicom converts
values lazily, so an element never looked at would never be validated).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

import pydicom
import pydicom.config
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from analysis.results import to_bytes

__all__ = ["strict_values", "write_and_read"]


@contextmanager
def strict_values() -> Iterator[None]:
    """pydicom raises on any invalid value it reads or writes inside the block."""
    settings = pydicom.config.settings
    reading, writing = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = pydicom.config.RAISE
    settings.writing_validation_mode = pydicom.config.RAISE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = reading, writing


def _touch(ds: Dataset) -> int:
    """Convert every element of *ds*, recursively; the number of elements."""
    count = 0
    for element in ds:
        count += 1
        if element.VR == "SQ":
            count += sum(_touch(item) for item in element.value)
        else:
            _ = element.value
    return count


def write_and_read(ds: Dataset) -> tuple[bytes, Dataset]:
    """The Part 10 bytes of *ds* and the dataset pydicom strictly reads back from them."""
    with strict_values():
        data = to_bytes(ds)
        assert data[:128] == b"\0" * 128 and data[128:132] == b"DICM"
        back = pydicom.dcmread(io.BytesIO(data))
        assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert back.original_encoding == (False, True)  # (implicit VR, little endian)
        assert _touch(back) > 20
    return data, back

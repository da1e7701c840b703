"""Every character set pydicom ships test files for de-identifies cleanly.

pydicom's ``charset_files`` (MIT, in the wheel: nothing is downloaded) hold names in ISO 2022
Japanese and Korean, GB18030, UTF-8, Latin-1, Cyrillic, Greek, Arabic, Hebrew and Thai, with
alphabetic, ideographic and phonetic component groups, and character sets named per sequence
item. For each: no exception, the output decodes in strict mode, and no original name component
(any group, any part) is in the output bytes, encoded as its dataset encodes it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pydicom.config
import pytest
from pydicom.charset import convert_encodings
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

from config.deid import DeidOption, DeidProfile
from dicom_nodes.deid.engine import Deidentifier
from dicom_nodes.deid.model import BurnedIn
from tests.support.phi import Phi, find_leaks

SECRET = b"charset-test-secret-0123456789ab"
FILES = sorted(Path(p) for p in get_charset_files("*.dcm"))


def no_pixels(ds: Dataset, profile: DeidProfile) -> BurnedIn:
    return BurnedIn.NONE


def _encodings(ds: Dataset, inherited: tuple[str, ...]) -> tuple[str, ...]:
    charset = ds.get(0x00080005)
    if charset is None or not charset.value:
        return inherited
    value = charset.value
    names = (
        [str(v) for v in value]
        if isinstance(value, list | pydicom.multival.MultiValue)
        else [str(value)]
    )
    return tuple(convert_encodings(names))


def name_components(ds: Dataset, encodings: tuple[str, ...] = ("iso8859",)) -> Iterator[Phi]:
    """Every component group and every name part of every PN, with its dataset's encodings."""
    encodings = _encodings(ds, encodings)
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or ():
                yield from name_components(item, encodings)
        elif elem.VR == "PN" and elem.value:
            values = (
                elem.value
                if isinstance(elem.value, list | pydicom.multival.MultiValue)
                else [elem.value]
            )
            for value in values:
                pn = value if isinstance(value, PersonName) else PersonName(str(value))
                where = f"({elem.tag.group:04X},{elem.tag.element:04X})"
                for group in pn.components:
                    if group:
                        yield Phi(group, where, encodings)
                    for part in re.split(r"\^", group):
                        if len(part.strip()) >= 2 and not (part.isascii() and len(part) < 4):
                            yield Phi(part.strip(), where, encodings, derived=True)


def test_all_charset_files_are_there() -> None:
    names = {p.name for p in FILES}
    assert {
        "chrJapMulti.dcm",
        "chrKoreanMulti.dcm",
        "chrX1.dcm",
        "chrRuss.dcm",
        "chrH31.dcm",
    } <= names
    assert len(FILES) >= 15


@pytest.mark.parametrize("options", [None, []], ids=["default", "basic"])
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_charset_file_deidentifies_without_leaking_names(
    path: Path, options: list[DeidOption] | None
) -> None:
    data = path.read_bytes()
    original = pydicom.dcmread(io.BytesIO(data))
    names = list(name_components(original))
    assert names, "every charset file carries names"
    found_in_input = find_leaks([n for n in names if not n.derived], data)
    assert len(found_in_input) == len([n for n in names if not n.derived]), "scanner blind"
    profile = DeidProfile(name="t") if options is None else DeidProfile(name="t", options=options)
    out, _ = Deidentifier(profile, SECRET, pixel_step=no_pixels).deidentify_bytes(data)

    saved = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.RAISE
    try:
        ds = pydicom.dcmread(io.BytesIO(out))
        ds.decode()  # every text value in its character set, nested items too
        for elem in ds.iterall():
            _ = elem.value
        _ = str(ds)
    finally:
        pydicom.config.settings.reading_validation_mode = saved
    assert ds.get("SpecificCharacterSet") == original.get("SpecificCharacterSet")
    leaks = find_leaks(names, out)
    assert not leaks, "\n".join(str(leak) for leak in leaks)


def test_pseudonymised_name_is_ascii_in_a_multibyte_file() -> None:
    path = next(p for p in FILES if p.name == "chrJapMulti.dcm")
    out, result = Deidentifier(DeidProfile(), SECRET, pixel_step=no_pixels).deidentify_bytes(
        path.read_bytes()
    )
    ds = pydicom.dcmread(io.BytesIO(out))
    assert str(ds.PatientName) == result.patient_pseudonym
    assert result.patient_pseudonym.isascii()

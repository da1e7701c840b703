"""No original identifying value survives de-identification, anywhere in the output file.

Inputs: the fake-PHI files of ``deid-data`` (two CT heads, two "dicom-cookies" secondary
captures), every file of pydicom's ``charset_files``, and a synthetic dataset with one element
for every exact row of Table E.1-1 (:func:`tests.support.phi.build_everything`). Each is
de-identified with the default profile (Basic + Retain Longitudinal Temporal Information with
Modified Dates) and with the Basic Profile alone; :mod:`tests.support.phi` collects what must
disappear and looks for it in the output bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.charset import convert_encodings
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset

from config.deid import DeidOption, DeidProfile
from dicom_nodes.deid.engine import Deidentifier
from dicom_nodes.deid.model import BurnedIn
from tests.support.phi import (
    EVERYTHING_DATE,
    Phi,
    build_everything,
    find_leaks,
    identifying_values,
    value_for,
)

DATA = Path(__file__).resolve().parents[2] / "data"
SECRET = b"phi-test-secret-0123456789abcdef"


def no_pixels(ds: Dataset, profile: DeidProfile) -> BurnedIn:
    return BurnedIn.NONE


def _everything_bytes() -> bytes:
    buffer = io.BytesIO()
    build_everything().save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


SOURCES: dict[str, Callable[[], bytes]] = {
    "ctbrain1": (DATA / "ctbrain1.dcm").read_bytes,
    "ctbrain2": (DATA / "ctbrain2.dcm").read_bytes,
    "cookies_image2": (DATA / "deid" / "cookies_image2.dcm").read_bytes,
    "cookies_image6": (DATA / "deid" / "cookies_image6.dcm").read_bytes,
    **{Path(p).name: Path(p).read_bytes for p in sorted(get_charset_files("*.dcm"))},
    "everything": _everything_bytes,
}

PROFILES = {
    "default": DeidProfile(),
    "basic": DeidProfile(name="basic-only", options=[]),
}


def test_sources_are_all_there() -> None:
    charset = [name for name in SOURCES if name.startswith("chr")]
    assert len(charset) >= 15, charset  # pydicom's wheel ships them; nothing is downloaded


@pytest.mark.parametrize("source", list(SOURCES))
def test_scanner_finds_every_stored_value_in_the_input(source: str) -> None:
    """The scanner can fail: each value it collects (as stored) is found in the input bytes."""
    data = SOURCES[source]()
    ds = pydicom.dcmread(io.BytesIO(data))
    phi = identifying_values(ds, PROFILES["default"].options)
    stored = [p for p in phi if not p.derived]
    assert stored, "nothing identifying collected"
    found = {id(leak.phi) for leak in find_leaks(stored, data)}
    missed = [p for p in stored if id(p) not in found]
    assert not missed, "\n".join(f"{p.origin}: {p.value!r}" for p in missed)


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("source", list(SOURCES))
def test_no_identifying_value_in_output(source: str, profile: str) -> None:
    data = SOURCES[source]()
    ds = pydicom.dcmread(io.BytesIO(data))
    chosen = PROFILES[profile]
    phi = identifying_values(ds, chosen.options)
    out, result = Deidentifier(chosen, SECRET, pixel_step=no_pixels).deidentify_bytes(data)
    assert out[:128] == b"\0" * 128
    leaks = find_leaks(phi, out)
    assert not leaks, f"{len(leaks)} leaks:\n" + "\n".join(str(leak) for leak in leaks)
    # the pseudonym replaces name and ID; the patient's own name is not it
    assert result.patient_pseudonym.encode() in out


def test_names_of_every_kind_are_collected() -> None:
    """Names in any attribute, nested, private, and every component group are looked for."""
    phi = identifying_values(build_everything(), [DeidOption.RETAIN_LONGITUDINAL_FULL_DATES])
    values = {p.value for p in phi}
    assert value_for(0x00100010, "PN") in values  # Patient's Name, as stored
    assert "DEEPFAM3^DEEPGIV3" in values  # three sequences deep, in a kept sequence
    assert "PRIVLO A0 SECRETWORD" in values  # private, top level
    assert "PRIVFAMB2^PRIVGIV" in values  # private, two deep
    assert "SOURCEAEPHI" in values  # file meta Source AE
    # dates are not collected when an option keeps them, and not where kept elsewhere
    origins = {p.origin for p in phi}
    assert "(0008,0020)" not in origins  # Study Date: K under Retain Full Dates
    assert not any(p.value == EVERYTHING_DATE for p in phi)
    basic = identifying_values(build_everything(), [])
    assert any(p.value == EVERYTHING_DATE and p.origin == "(0008,0020)" for p in basic)


def test_dates_are_looked_for_in_several_renderings() -> None:
    ds = build_everything()
    values = {p.value for p in identifying_values(ds, [])}
    assert {"20230115", "2023-01-15", "15/01/2023", "01/15/2023", "2023.01.15"} <= values


def test_leak_is_reported_case_insensitively_and_in_the_dataset_charset() -> None:
    phi = [
        Phi("Springfield General", "x", ("iso8859",)),
        Phi("Müller^Jürgen", "y", ("iso8859",)),
        Phi("山田^太郎", "z", tuple(convert_encodings(["ISO 2022 IR 6", "ISO 2022 IR 87"]))),
    ]
    assert [leak.phi.origin for leak in find_leaks(phi, b"..SPRINGFIELD GENERAL..")] == ["x"]
    assert find_leaks(phi[1:2], "Müller^Jürgen".encode("latin-1"))
    assert not find_leaks(phi[1:2], "MÜLLER^JÜRGEN".encode("latin-1"))  # ASCII folding only
    assert find_leaks(phi[2:], "山田^太郎".encode("iso2022_jp"))
    assert find_leaks(phi[2:], "山田^太郎".encode())  # UTF-8 always looked for too

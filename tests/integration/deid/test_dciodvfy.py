"""De-identification adds no IOD conformance error: dicom3tools' ``dciodvfy`` on input and output.

For real files (deid-data fake-PHI CT heads and secondary captures, pydicom's CT, MR, SR, RT and
overlay test files, two charset files) the set of ``Error`` lines dciodvfy prints for the output
must be a subset of those it prints for the input, once values that de-identification changes
by design (UIDs, element values quoted in the message) are normalised away. Input errors that
disappear are fine. The diff is printed on failure.

Fixed in the engine because of this test: an emptied Referenced Study Sequence (Type 3, 1-n
items), an overlay plane left without its Overlay Data (Type 1), a content item Text Value
cleaned to nothing (Type 1C).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset

from config.deid import DeidOption, DeidProfile
from dicom_nodes.deid.engine import Deidentifier
from dicom_nodes.deid.model import BurnedIn

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "data"
SECRET = b"dciodvfy-secret-0123456789abcdef"
PYDICOM_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "test-SR.dcm",
    "reportsi.dcm",
    "rtdose.dcm",
    "examples_overlay.dcm",
    "waveform_ecg.dcm",
    "SC_rgb_jpeg.dcm",  # implicit VR body in an explicit VR file
]


def _sources() -> dict[str, Path]:
    sources = {
        "ctbrain1": DATA / "ctbrain1.dcm",
        "ctbrain2": DATA / "ctbrain2.dcm",
        "cookies_image2": DATA / "deid" / "cookies_image2.dcm",
        "cookies_image6": DATA / "deid" / "cookies_image6.dcm",
    }
    for name in PYDICOM_FILES:
        path = get_testdata_file(name)  # all in pydicom's wheel: nothing is downloaded
        assert path is not None, name
        sources[name] = Path(path)
    charset = {Path(p).name: Path(p) for p in get_charset_files("*.dcm")}
    sources["chrJapMulti.dcm"] = charset["chrJapMulti.dcm"]
    sources["chrX1.dcm"] = charset["chrX1.dcm"]
    return sources


SOURCES = _sources()
PROFILES: dict[str, list[DeidOption] | None] = {
    "default": None,
    "basic": [],
    "all-options": [o for o in DeidOption if o is not DeidOption.RETAIN_LONGITUDINAL_FULL_DATES],
    "full-dates-uids": [DeidOption.RETAIN_LONGITUDINAL_FULL_DATES, DeidOption.RETAIN_UIDS],
}


def no_pixels(ds: Dataset, profile: DeidProfile) -> BurnedIn:
    return BurnedIn.NONE


@pytest.fixture(scope="module")
def dciodvfy() -> str:
    path = shutil.which("dciodvfy", path="/usr/bin:/usr/local/bin:/bin")
    if path is None:
        pytest.fail("dciodvfy (dicom3tools) is not installed: make system-deps")
    return path


_UID = re.compile(r"\b\d+(\.\d+){2,}\b")
_QUOTED_VALUE = re.compile(r"\[(\d+)\] = <[^>]*>")
_CHARACTER = re.compile(r"= '.*?' \(0x[0-9a-f]+\)")
_REFERENCED = re.compile(r"(ReferencedSOPInstanceUID) \S+")


def normalise(line: str) -> str:
    """An error line without the values de-identification changes by design."""
    line = _UID.sub("<UID>", line)
    line = _QUOTED_VALUE.sub(r"[\1] = <value>", line)
    line = _CHARACTER.sub("= <character>", line)
    return _REFERENCED.sub(r"\1 <UID>", line).strip()


def errors(dciodvfy: str, path: Path) -> set[str]:
    proc = subprocess.run([dciodvfy, str(path)], capture_output=True, timeout=120, check=False)
    text = (proc.stdout + proc.stderr).decode("latin-1")
    return {normalise(line) for line in text.splitlines() if line.startswith("Error")}


def test_normalise_keeps_the_attribute_and_drops_the_value() -> None:
    a = normalise(
        "Error - Value invalid for this VR - (0x0010,0x1010) AS Patient's Age  AS [1] = <75Y> - x"
    )
    b = normalise(
        "Error - Value invalid for this VR - (0x0010,0x1010) AS Patient's Age  AS [1] = <000D> - x"
    )
    assert a == b and "Patient's Age" in a
    assert normalise(
        "Error - Missing attribute Type 1 Required Element=<OverlayData> Module=<OverlayPlane>"
    ) != normalise(
        "Error - Missing attribute Type 1 Required Element=<OverlayRows> Module=<OverlayPlane>"
    )


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("source", list(SOURCES))
def test_no_new_dciodvfy_errors(source: str, profile: str, dciodvfy: str, tmp_path: Path) -> None:
    options = PROFILES[profile]
    chosen = DeidProfile(name="t") if options is None else DeidProfile(name="t", options=options)
    path = SOURCES[source]
    out, _ = Deidentifier(chosen, SECRET, pixel_step=no_pixels).deidentify_bytes(path.read_bytes())
    target = tmp_path / "out.dcm"
    target.write_bytes(out)
    before, after = errors(dciodvfy, path), errors(dciodvfy, target)
    new = sorted(after - before)
    assert not new, (
        f"{source} ({profile}): new dciodvfy errors after de-identification:\n"
        + "\n".join(f"  + {line}" for line in new)
        + "\nerrors of the input that are gone:\n"
        + "\n".join(f"  - {line}" for line in sorted(before - after))
    )
    assert pydicom.dcmread(target).PatientIdentityRemoved == "YES"


def test_dciodvfy_sees_a_broken_output(dciodvfy: str, tmp_path: Path) -> None:
    """The comparison can fail: an overlay group without its data is reported."""
    ds = pydicom.dcmread(SOURCES["examples_overlay.dcm"])
    del ds[0x60003000]
    broken = tmp_path / "broken.dcm"
    ds.save_as(broken, enforce_file_format=True)
    assert errors(dciodvfy, broken) - errors(dciodvfy, SOURCES["examples_overlay.dcm"])

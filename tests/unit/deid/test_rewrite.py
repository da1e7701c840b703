"""dicom_nodes.deid.rewrite: the byte-level rewriter gives exactly the engine's bytes.

Every DICOM file of the test corpus — tests/data (CT, SEG, secondary captures, the fake-PHI
files), pydicom's test and character set files, the synthetic everything-dataset, the
48-slice CT and the forwarding benchmark's generated CT — is de-identified under several
profiles both ways; where the rewriter takes a file its output must equal the engine's byte
for byte (and the vault entries and pseudonym too). The plain uncompressed CTs must be taken.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files
from pydicom.errors import InvalidDicomError

from config.deid import BurnedInPolicy, DeidOption, DeidProfile
from dicom_nodes.deid.engine import Deidentifier
from dicom_nodes.deid.rewrite import EXPLICIT_VR_LE, rewrite
from tests.support.data import PYDICOM_FILES, extract_ct
from tests.support.phi import build_everything

DATA = Path(__file__).resolve().parents[2] / "data"
SECRET = b"rewrite-test-secret-0123456789ab"
PROFILES = {
    "default": DeidProfile(),
    "basic": DeidProfile(name="basic-only", options=[]),
    "full-dates": DeidProfile(
        name="full-dates",
        options=[DeidOption.RETAIN_LONGITUDINAL_FULL_DATES, DeidOption.RETAIN_UIDS],
    ),
    "patient-chars": DeidProfile(
        name="patient-chars",
        options=[DeidOption.RETAIN_PATIENT_CHARACTERISTICS, DeidOption.RETAIN_DEVICE_IDENTITY],
    ),
    "mask": DeidProfile(name="mask", burned_in=BurnedInPolicy.MASK),
}


def _part10(path: Path) -> bytes | None:
    data = path.read_bytes()
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, Exception):
        return None
    return data if getattr(ds, "file_meta", None) and "SOPClassUID" in ds else None


def _corpus(tmp: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(DATA.rglob("*.dcm")) + sorted((DATA / "deid").rglob("*")):
        if path.is_file() and (data := _part10(path)) is not None:
            yield f"data/{path.relative_to(DATA)}", data
    for path in sorted(PYDICOM_FILES.glob("*.dcm")) + sorted(map(Path, get_charset_files("*"))):
        if path.is_file() and (data := _part10(path)) is not None:
            yield f"pydicom/{path.name}", data
    buffer = io.BytesIO()
    build_everything().save_as(buffer, enforce_file_format=True)
    yield "everything", buffer.getvalue()
    for path in extract_ct(tmp / "ct")[:6]:
        yield f"lung1/{path.name}", path.read_bytes()
    from bench import bench_forward

    for name, size in (("ct512", 512), ("small64", 64)):
        for path in bench_forward.generate(tmp / name, name, name, 3, size, 7).files:
            yield f"bench/{name}/{path.name}", path.read_bytes()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, bytes]]:
    return list(_corpus(tmp_path_factory.mktemp("corpus")))


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_rewriter_output_equals_the_engine_on_the_whole_corpus(
    profile: str, corpus: list[tuple[str, bytes]]
) -> None:
    engine = Deidentifier(PROFILES[profile], SECRET)
    taken: list[str] = []
    for name, data in corpus:
        fast = rewrite(engine, data)
        if fast is None:
            continue
        taken.append(name)
        try:
            expected, result = engine.deidentify_bytes(data, rewrite=False)
        except Exception as exc:  # the engine refuses: the rewriter must not have taken it
            pytest.fail(f"{name}: rewritten, but the engine raises {type(exc).__name__}")
        out, fast_result = fast
        assert out == expected, f"{name}: output differs under profile {profile}"
        assert fast_result.patient_pseudonym == result.patient_pseudonym, name
        assert fast_result.vault == result.vault, name
        assert str(fast_result.dataset.file_meta.TransferSyntaxUID) == EXPLICIT_VR_LE
    assert len(corpus) > 60
    if profile == "patient-chars":  # its Device Identity option cleans text: the engine's job
        assert not engine.rewritable and not taken
        return
    # The uncompressed image files of everyday traffic go the fast way.
    for must in ("lung1/", "bench/ct512/", "bench/small64/"):
        assert any(n.startswith(must) for n in taken), f"{must} not rewritten ({profile})"


def test_deidentify_bytes_uses_the_rewriter_and_falls_back(
    corpus: list[tuple[str, bytes]],
) -> None:
    engine = Deidentifier(PROFILES["default"], SECRET)
    ct = next(data for name, data in corpus if name.startswith("lung1/"))
    fast_out, fast = engine.deidentify_bytes(ct)
    slow_out, slow = engine.deidentify_bytes(ct, rewrite=False)
    assert fast_out == slow_out and list(fast.dataset.keys()) == []  # no dataset was built
    assert len(slow.dataset.keys()) > 20
    implicit = next(d for n, d in corpus if b"1.2.840.10008.1.2\x00" in d[:400])
    assert rewrite(engine, implicit) is None
    assert engine.deidentify_bytes(implicit)[1].dataset.keys()  # the engine did it

"""DirectoryDestination, the STOW-RS multipart body, building destinations from config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicom_nodes.forward import (
    ConfirmMethod,
    Destination,
    DimseDestination,
    DirectoryDestination,
    DirectorySettings,
    InMemoryCommitmentSink,
    Instance,
    OutgoingFile,
    StowRsDestination,
    build_destination,
)
from dicom_nodes.forward.stow import multipart_body
from tests.support.data import extract_ct


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> list[OutgoingFile]:
    return [OutgoingFile.from_path(p) for p in extract_ct(tmp_path_factory.mktemp("ct"))[:4]]


def test_directory_writes_verbatim_and_confirms(ct: list[OutgoingFile], tmp_path: Path) -> None:
    dest = DirectoryDestination(DirectorySettings(name="dry", path=tmp_path / "out"))
    assert isinstance(dest, Destination)
    results = dest.send(ct)
    assert all(r.ok and r.status == 0 for r in results)
    for f in ct:
        assert dest.path_for(f.sop_instance_uid).read_bytes() == f.path.read_bytes()
    assert dest.send(ct[:1])[0].ok  # idempotent
    missing = Instance(ct[0].sop_class_uid, "1.2.3.4.5")
    other_class = Instance("1.2.840.10008.5.1.4.1.1.7", ct[1].sop_instance_uid)
    assert dest.confirm([*ct, missing, other_class]) == {
        **{f.sop_instance_uid: True for f in ct},
        "1.2.3.4.5": False,
        ct[1].sop_instance_uid: False,
    }


def test_directory_failures(ct: list[OutgoingFile], tmp_path: Path) -> None:
    gone = OutgoingFile(
        tmp_path / "gone.dcm", ct[0].sop_class_uid, "1.2.3", ct[0].transfer_syntax_uid
    )
    out = tmp_path / "out"
    dest = DirectoryDestination(DirectorySettings(name="dry", path=out))
    result = dest.send([gone])[0]
    assert not result.ok and not result.retryable
    if os.geteuid() != 0:  # root writes anyway
        out.chmod(0o500)
        result = dest.send(ct[:1])[0]
        assert not result.ok and result.retryable and result.status == 0xA700


def test_multipart_body_length_and_framing(ct: list[OutgoingFile]) -> None:
    length, chunks = multipart_body(ct, "XyZ")
    body = b"".join(chunks)
    assert len(body) == length
    assert body.startswith(b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n")
    assert body.endswith(b"\r\n--XyZ--\r\n")
    assert body.count(b"--XyZ\r\n") == len(ct)
    assert ct[2].path.read_bytes() in body


@dataclass(frozen=True)
class _Cfg:
    name: str = "archive"
    kind: str = "dimse"
    ae_title: str = "ORTHANC"
    host: str = "127.0.0.1"
    port: int = 4242
    url: str = ""
    calling_ae: str = "RADIOGATE"
    parallel: int = 4
    confirm: str = "query"
    timeout: float = 30.0
    commitment_timeout: float = 45.0
    keep_open: float = 5.0
    confirm_class: bool = True
    credentials_file: str = ""


def test_stow_destination_authenticates_with_the_credentials_file(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.write_text("radiogate:s3cret\n")
    creds.chmod(0o600)
    d = build_destination(_Cfg(kind="stowrs", url="http://h/dw", credentials_file=str(creds)))
    assert isinstance(d, StowRsDestination)
    assert dict(d.settings.headers) == {"Authorization": "Basic cmFkaW9nYXRlOnMzY3JldA=="}
    creds.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        build_destination(_Cfg(kind="stowrs", url="http://h/dw", credentials_file=str(creds)))
    with pytest.raises(ValueError, match="do not exist"):
        build_destination(_Cfg(kind="stowrs", url="http://h/dw", credentials_file="/nope"))


def test_build_destination_from_config(tmp_path: Path) -> None:
    dimse = build_destination(_Cfg(), tmp_path / "work")
    assert isinstance(dimse, DimseDestination)
    assert dimse.settings.confirm is ConfirmMethod.QUERY and dimse.settings.parallel == 4
    assert dimse.settings.confirm_class
    by_uid = build_destination(_Cfg(confirm_class=False), tmp_path / "work")
    assert isinstance(by_uid, DimseDestination) and not by_uid.settings.confirm_class
    assert (tmp_path / "work").is_dir()
    assert isinstance(build_destination(_Cfg(kind="stowrs", url="http://h/dw")), StowRsDestination)
    d = build_destination(_Cfg(kind="directory", url=str(tmp_path / "d")))
    assert isinstance(d, DirectoryDestination)
    with pytest.raises(ValueError, match="destination 'archive': unknown kind"):
        build_destination(_Cfg(kind="ftp"))
    with pytest.raises(ValueError, match="destination 'archive'"):
        build_destination(_Cfg(ae_title="WAY-TOO-LONG-AE-TITLE"))


@pytest.mark.parametrize("confirm", ["commitment", "commitment-or-query"])
def test_commitment_needs_a_sink(confirm: str) -> None:
    """Refused at start instead of every confirmation failing (or silently querying)."""
    with pytest.raises(ValueError, match=f"destination 'archive': confirm = '{confirm}' needs"):
        build_destination(_Cfg(confirm=confirm))


def test_commitment_uses_the_given_sink() -> None:
    own = InMemoryCommitmentSink()
    given = build_destination(_Cfg(confirm="commitment"), commitment_sink=own)
    assert isinstance(given, DimseDestination) and given.commitment_sink is own
    assert given.settings.confirm is ConfirmMethod.STORAGE_COMMITMENT
    assert given.settings.commitment_timeout == 45.0

"""``radiogate run`` with the PACS plugin and the viewer: what a radiologist reads through OHIF's
origin reaches Orthanc as that radiologist, so the access audit names them (110103 with the
study's UID and the DICOMweb API), and nobody else is recorded for it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dicom_nodes.services.credentials import HttpCredentials, load_credentials
from dicom_nodes.services.viewer import default_dist
from tests.support.stack import RADIOLOGIST, Stack, http_json, make_site

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    assert (default_dist() / "index.html").is_file(), "OHIF is not installed: make ohif"
    s = Stack(make_site(), extra_toml=RADIOLOGIST).start()
    yield s
    s.remove()


def _get(url: str, who: HttpCredentials, body: bytes | None = None) -> Any:
    return http_json(url, who, body, accept="application/dicom+json, application/json")


def test_a_read_through_the_viewer_is_audited_as_the_reader(stack: Stack) -> None:
    alice = load_credentials(stack.data_dir / "pacs/alice.token")
    service = load_credentials(stack.data_dir / "orthanc/http-credentials")
    archive = f"http://127.0.0.1:{stack.http_port}"
    viewer = f"http://127.0.0.1:{stack.viewer_port}"
    stored = _get(f"{archive}/instances", service, (DATA / "ctbrain1.dcm").read_bytes())
    study = _get(f"{archive}/studies/{stored['ParentStudy']}", service)
    uid = study["MainDicomTags"]["StudyInstanceUID"]

    series = _get(f"{viewer}/dicom-web/studies/{uid}/series", alice)
    assert [s["0020000E"]["Value"][0] for s in series] == [
        _get(f"{archive}/series/{stored['ParentSeries']}", service)["MainDicomTags"][
            "SeriesInstanceUID"
        ]
    ]
    deadline = time.monotonic() + 30
    reads: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not reads:
        events = _get(f"{archive}/radiogate/audit?event=110103", service)["events"]
        reads = [e["event"] for e in events]
        time.sleep(0.5)
    assert len(reads) == 1, reads
    (read,) = reads
    assert (read["step"], read["action"], read["reason"]) == ("accessed", "R", "dicomweb")
    requestors = [p["user"] for p in read["participants"] if p["requestor"]]
    assert requestors == ["alice"]  # the signed-in reader, not the viewer nor the service
    assert read["objects"] == [{"type": "study", "uid": uid}]

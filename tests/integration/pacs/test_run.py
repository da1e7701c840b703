"""``radiogate run`` loads the plugin into its Orthanc and supervises the access recorder: a
radiologist's read through the archive ends up in the audit chain with nobody else involved."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dicom_nodes.services.credentials import HttpCredentials, load_credentials
from tests.support.stack import RADIOLOGIST, Stack, http_json, make_site

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(make_site(), extra_toml=RADIOLOGIST).start()
    yield s
    s.remove()


def _call(stack: Stack, who: HttpCredentials, path: str, body: bytes | None = None) -> Any:
    return http_json(f"http://127.0.0.1:{stack.http_port}{path}", who, body)


def test_run_loads_the_plugin_and_records_reads(stack: Stack) -> None:
    alice = load_credentials(stack.data_dir / "pacs/alice.token")
    service = load_credentials(stack.data_dir / "orthanc/http-credentials")
    assert _call(stack, alice, "/radiogate/status")["roles"] == ["radiologist"]
    assert "pacs" in stack.lock_info()["services"]
    study_id = _call(stack, service, "/instances", (DATA / "ctbrain1.dcm").read_bytes())[
        "ParentStudy"
    ]
    assert _call(stack, alice, f"/studies/{study_id}/archive")[:2] == b"PK"
    with pytest.raises(urllib.error.HTTPError) as refused:
        _call(stack, alice, "/radiogate/audit")
    assert refused.value.code == 403
    deadline = time.monotonic() + 30
    found: list[Any] = []
    while time.monotonic() < deadline and len(found) < 2:
        events = _call(stack, service, "/radiogate/audit?user=alice")["events"]
        found = [e["event"] for e in events if e["event"]["event"] in ("110103", "110113")]
        time.sleep(0.5)
    assert sorted(e["event"] for e in found) == ["110103", "110113"], found

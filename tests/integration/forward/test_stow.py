"""StowRsDestination against a small local DICOMweb server (stdlib http.server) that parses
the multipart/related body strictly and answers as PS3.18 10.5.3 / 10.6 say."""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicom_nodes.forward import OutgoingFile, StowRsDestination, StowSettings
from tests.support import free_port
from tests.support.data import extract_ct

pytestmark = pytest.mark.integration


class DicomWebServer:
    """Stores what it receives; ``fail`` maps SOP Instance UID -> Failure Reason, ``http_status``
    forces an HTTP error for every STOW-RS request."""

    def __init__(self) -> None:
        self.stored: dict[str, tuple[str, bytes]] = {}
        self.requests: list[dict[str, Any]] = []
        self.fail: dict[str, int] = {}
        self.http_status: int | None = None
        self.port = free_port()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path != "/dicom-web/studies":
                    return self._reply(404)
                if server.http_status is not None:
                    return self._reply(server.http_status)
                parts = server.parse_multipart(self.headers["Content-Type"], body)
                server.requests.append({"parts": len(parts), "headers": dict(self.headers)})
                referenced, failed = [], []
                for part in parts:
                    ds = pydicom.dcmread(BytesIO(part), stop_before_pixels=True)
                    uid, cls = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
                    item: dict[str, dict[str, Any]] = {
                        "00081150": {"vr": "UI", "Value": [cls]},
                        "00081155": {"vr": "UI", "Value": [uid]},
                    }
                    if uid in server.fail:
                        item["00081197"] = {"vr": "US", "Value": [server.fail[uid]]}
                        failed.append(item)
                    else:
                        server.stored[uid] = (cls, part)
                        referenced.append(item)
                answer: dict[str, Any] = {}
                if referenced:
                    answer["00081199"] = {"vr": "SQ", "Value": referenced}
                if failed:
                    answer["00081198"] = {"vr": "SQ", "Value": failed}
                status = 200 if not failed else (409 if not referenced else 202)
                return self._reply(status, answer)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/dicom-web/instances":
                    return self._reply(404)
                query = urllib.parse.parse_qs(url.query)
                uids = query["SOPInstanceUID"][0].split(",")
                matches = [
                    {
                        "00080016": {"vr": "UI", "Value": [server.stored[u][0]]},
                        "00080018": {"vr": "UI", "Value": [u]},
                    }
                    for u in uids
                    if u in server.stored
                ]
                if not matches:
                    self.send_response(204)
                    self.end_headers()
                    return None
                return self._reply(200, matches)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    @staticmethod
    def parse_multipart(content_type: str, body: bytes) -> list[bytes]:
        """Strict RFC 2046/2387 split: every part application/dicom, closing delimiter last."""
        assert content_type.startswith("multipart/related;"), content_type
        assert 'type="application/dicom"' in content_type
        match = re.search(r"boundary=([^;\s]+)", content_type)
        assert match is not None
        delimiter = b"--" + match.group(1).encode()
        assert body.endswith(delimiter + b"--\r\n")
        chunks = body[: -len(delimiter + b"--\r\n")].split(delimiter)
        assert chunks[0] == b""
        parts = []
        for chunk in chunks[1:]:
            head, _, content = chunk.partition(b"\r\n\r\n")
            assert head.strip() == b"Content-Type: application/dicom", head
            assert content.endswith(b"\r\n")
            parts.append(content[:-2])
        return parts

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def server() -> Iterator[DicomWebServer]:
    srv = DicomWebServer()
    yield srv
    srv.stop()


@pytest.fixture
def ct_files(tmp_path: Path) -> list[OutgoingFile]:
    return [OutgoingFile.from_path(p) for p in extract_ct(tmp_path / "ct")]


def test_stow_sends_files_verbatim_in_batches(
    server: DicomWebServer, ct_files: list[OutgoingFile]
) -> None:
    dest = StowRsDestination(
        StowSettings(
            name="web",
            url=server.url,
            max_instances_per_request=10,
            parallel=2,
            headers=(("Authorization", "Bearer test-token"),),
        )
    )

    results = dest.send(ct_files)

    assert all(r.ok and r.status == 0 and not r.retryable for r in results), results
    assert [r.sop_instance_uid for r in results] == [f.sop_instance_uid for f in ct_files]
    assert sorted(r["parts"] for r in server.requests) == [8, 10, 10, 10, 10]
    assert all(r["headers"]["Authorization"] == "Bearer test-token" for r in server.requests)
    for file in ct_files:
        assert server.stored[file.sop_instance_uid][1] == file.path.read_bytes()
    assert dest.confirm(ct_files) == {f.sop_instance_uid: True for f in ct_files}


def test_stow_failure_reasons_and_confirmation(
    server: DicomWebServer, ct_files: list[OutgoingFile]
) -> None:
    files = ct_files[:4]
    server.fail = {files[1].sop_instance_uid: 0xA700, files[2].sop_instance_uid: 0xC000}
    dest = StowRsDestination(StowSettings(name="web", url=server.url))

    results = dest.send(files)

    assert [(r.ok, r.retryable, r.status) for r in results] == [
        (True, False, 0),
        (False, True, 0xA700),
        (False, False, 0xC000),
        (True, False, 0),
    ]
    assert dest.confirm(files) == {f.sop_instance_uid: f not in (files[1], files[2]) for f in files}


@pytest.mark.parametrize(("http_status", "retryable"), [(503, True), (429, True), (401, False)])
def test_stow_http_errors(
    server: DicomWebServer, ct_files: list[OutgoingFile], http_status: int, retryable: bool
) -> None:
    server.http_status = http_status
    results = StowRsDestination(StowSettings(name="web", url=server.url)).send(ct_files[:3])
    assert all(not r.ok and r.retryable is retryable and r.status is None for r in results)
    assert all(f"HTTP {http_status}" in r.note for r in results)


def test_stow_server_down_is_retryable(ct_files: list[OutgoingFile]) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    dest = StowRsDestination(StowSettings(name="web", url=url, timeout=5))
    results = dest.send(ct_files[:3])
    assert all(not r.ok and r.retryable and r.status is None for r in results)
    from dicom_nodes.forward import ConfirmationUnavailable

    with pytest.raises(ConfirmationUnavailable):
        dest.confirm(ct_files[:3])

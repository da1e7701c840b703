"""Instance files are read from the archive uncompressed: ``requests`` offers gzip unless told
otherwise, and Orthanc would then deflate every file on the fly for a transfer on the local
network. A small HTTP server in a thread answers like Orthanc's REST API and records every
request's headers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dicom_nodes.archive import OrthancArchive

FILES = {"i1": b"DICM-one", "i2": b"DICM-two"}


class _Orthanc(BaseHTTPRequestHandler):
    """``POST /tools/lookup``, ``GET /series/{id}``, ``GET /instances/{id}/file``."""

    seen: list[tuple[str, str, dict[str, str]]]

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append(("POST", self.path, dict(self.headers)))
        found = [{"Type": "Series", "ID": "s1", "Path": "/series/s1"}]
        self._send(json.dumps(found).encode(), "application/json")

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, dict(self.headers)))
        if self.path == "/series/s1":
            self._send(json.dumps({"ID": "s1", "Instances": list(FILES)}).encode(),
                       "application/json")  # fmt: skip
        elif self.path.startswith("/instances/") and self.path.endswith("/file"):
            self._send(FILES[self.path.split("/")[2]], "application/dicom")
        else:
            self.send_error(404)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def orthanc() -> Iterator[tuple[str, list[tuple[str, str, dict[str, str]]]]]:
    seen: list[tuple[str, str, dict[str, str]]] = []
    handler = type("Handler", (_Orthanc,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _file_requests(seen: list[tuple[str, str, dict[str, str]]]) -> list[dict[str, str]]:
    return [headers for method, path, headers in seen if path.endswith("/file")]


def test_a_series_is_read_without_gzip(orthanc: tuple[str, list[Any]]) -> None:
    url, seen = orthanc
    files = OrthancArchive(url, "user", "secret").series_files("1.2.3")
    assert files == list(FILES.values())
    requests = _file_requests(seen)
    assert len(requests) == len(FILES)
    for headers in requests:
        encodings = {k.lower(): v for k, v in headers.items()}.get("accept-encoding", "")
        assert "gzip" not in encodings.lower() and "deflate" not in encodings.lower()


def test_one_instance_file_is_read_without_gzip(orthanc: tuple[str, list[Any]]) -> None:
    url, seen = orthanc
    assert OrthancArchive(url).instance_file("i2") == FILES["i2"]
    (headers,) = _file_requests(seen)
    assert "gzip" not in {k.lower(): v for k, v in headers.items()}.get("accept-encoding", "")

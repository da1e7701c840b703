"""The viewer's own HTTP rules against a fake archive (the real Orthanc: tests/integration):
sign-in checked against the archive, OHIF routes get the app's page, nothing outside the build is
served, DICOMweb passed through with the browser's credentials and host, a dead archive is a 502,
and only reads are served."""

from __future__ import annotations

import base64
import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dicom_nodes.services.viewer import ViewerServer

GOOD = "Basic " + base64.b64encode(b"reader:secret").decode()
BAD = "Basic " + base64.b64encode(b"reader:wrong").decode()


class _Archive(BaseHTTPRequestHandler):
    """Orthanc as the viewer sees it: /system for sign-in, /dicom-web/ answers with JSON."""

    seen: list[dict[str, str]] = []  # noqa: RUF012 - one list per test run, reset by the fixture

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen.append({"path": self.path, **dict(self.headers.items())})
        if self.headers.get("Authorization") != GOOD:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="Orthanc Secure Area"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"{}" if self.path == "/system" else b'[{"path": "%s"}]' % self.path.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def archive() -> Iterator[ThreadingHTTPServer]:
    _Archive.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Archive)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<html>OHIF</html>")
    (root / "app.bundle.js").write_text("bundle();")
    (root / "codec.wasm").write_bytes(b"\0asm")
    (root / "app-config.js").write_text("window.config = 'the build's own';")
    (tmp_path / "secret.txt").write_text("outside the build")
    return root


@pytest.fixture
def viewer(archive: ThreadingHTTPServer, dist: Path, tmp_path: Path) -> Iterator[ViewerServer]:
    config = tmp_path / "app-config.js"
    config.write_text("window.config = 'radiogate';")
    host, port = archive.server_address[:2]
    server = ViewerServer(("127.0.0.1", 0), dist, (str(host), int(port)), app_config=config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _get(
    viewer: ViewerServer, path: str, auth: str | None = GOOD, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    host, port = viewer.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        conn.request(method, path, headers={"Authorization": auth} if auth else {})
        rsp = conn.getresponse()
        return rsp.status, dict(rsp.getheaders()), rsp.read()
    finally:
        conn.close()


def test_pages_need_an_archive_user(viewer: ViewerServer) -> None:
    for auth in (None, BAD):
        status, headers, _ = _get(viewer, "/", auth)
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Basic realm="Orthanc Secure Area"'
    assert _get(viewer, "/")[0] == 200
    checks = [s for s in _Archive.seen if s["path"] == "/system"]
    assert len(checks) == 2  # the bad one, then the good one; remembered afterwards
    _get(viewer, "/app.bundle.js")
    assert len([s for s in _Archive.seen if s["path"] == "/system"]) == 2


def test_routes_get_the_page_and_files_their_type(viewer: ViewerServer) -> None:
    for route in ("/", "/viewer?StudyInstanceUIDs=1.2.3", "/segmentation"):
        status, headers, body = _get(viewer, route)
        assert (status, body) == (200, b"<html>OHIF</html>"), route
        assert headers["Content-Type"] == "text/html"
    assert _get(viewer, "/codec.wasm")[1]["Content-Type"] == "application/wasm"
    assert _get(viewer, "/app.bundle.js")[1]["Content-Type"] == "text/javascript"
    assert _get(viewer, "/app-config.js")[2] == b"window.config = 'radiogate';"
    assert _get(viewer, "/missing.js")[0] == 404
    status, headers, body = _get(viewer, "/app.bundle.js", method="HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len("bundle();")))


def test_nothing_outside_the_build_is_served(viewer: ViewerServer) -> None:
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/assets/../../secret.txt"):
        status, _headers, body = _get(viewer, path)
        assert status == 404 and b"outside" not in body, path


def test_dicomweb_is_passed_with_the_browsers_credentials(viewer: ViewerServer) -> None:
    status, headers, body = _get(viewer, "/dicom-web/studies?PatientID=x")
    assert status == 200 and headers["Content-Type"] == "application/dicom+json"
    assert body == b'[{"path": "/dicom-web/studies?PatientID=x"}]'
    (seen,) = [s for s in _Archive.seen if s["path"].startswith("/dicom-web/")]
    assert seen["Authorization"] == GOOD
    assert seen["Host"] == f"127.0.0.1:{viewer.server_address[1]}"  # links point at the viewer
    status, headers, _ = _get(viewer, "/dicom-web/studies", BAD)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")


def test_only_reads_are_served(viewer: ViewerServer) -> None:
    for method in ("POST", "PUT", "DELETE"):
        assert _get(viewer, "/dicom-web/studies", method=method)[0] == 501, method
    assert not [s for s in _Archive.seen if s["path"].startswith("/dicom-web/")]


def test_an_unreachable_archive_is_a_bad_gateway(dist: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    server = ViewerServer(("127.0.0.1", 0), dist, ("127.0.0.1", dead))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert _get(server, "/dicom-web/studies")[0] == 502
        assert _get(server, "/")[0] == 401  # sign-in cannot be checked: no page
    finally:
        server.shutdown()
        server.server_close()

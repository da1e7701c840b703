"""The OHIF viewer on loopback, reading the archive through Orthanc's DICOMweb plugin.

``radiogate run`` starts this as the ``viewer`` service. One origin serves both:

- the OHIF build (``make ohif``: the prebuilt ``dist/`` of ``@ohif/app``), with Radiogate's
  ``ohif/app-config.js`` in place of the build's own; paths that are not files are OHIF's
  client-side routes (``/viewer?StudyInstanceUIDs=...``) and get ``index.html``;
- ``/dicom-web/...`` passed to the archive's DICOMweb plugin (PS3.18 QIDO-RS / WADO-RS) as is.

The viewer holds no password. The archive asks for HTTP Basic credentials (its Orthanc users),
so the browser's ``Authorization`` header is what reaches Orthanc, unchanged: a read is done,
and audited inside the PACS, as the user who signed in. Pages need the same credentials (checked
against the archive, remembered for a minute), so the browser asks once, at the first page,
in the archive's own realm. Only GET and HEAD are served: the viewer cannot store or delete.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import mimetypes
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from config import Settings

__all__ = ["ViewerServer", "default_dist", "serve", "viewer_dist"]

LOGGER = logging.getLogger(__name__)

REALM = 'Basic realm="Orthanc Secure Area"'
"""Orthanc's realm, so that the browser's one sign-in covers pages and DICOMweb alike."""

DICOMWEB_PREFIX = "/dicom-web/"
_PASSED_HEADERS = ("Accept", "Authorization", "Host", "Range", "If-None-Match")
_RETURNED_HEADERS = ("Content-Type", "Content-Length", "WWW-Authenticate", "ETag")
_CHUNK = 256 * 1024
_AUTH_TTL = 60.0
_APP_CONFIG = Path(__file__).resolve().parents[2] / "ohif" / "app-config.js"


def default_dist() -> Path:
    """``ohif/dist`` of the source checkout (where ``make ohif`` unpacks OHIF)."""
    return _APP_CONFIG.parent / "dist"


def viewer_dist(settings: Settings) -> Path:
    """``viewer.dist``, or :func:`default_dist` when it is empty."""
    return Path(settings.viewer.dist) if settings.viewer.dist else default_dist()


class _Credentials:
    """Which ``Authorization`` values the archive accepted lately (hashes only, for a minute)."""

    def __init__(self, archive: tuple[str, int]) -> None:
        self.archive = archive
        self._ok: dict[str, float] = {}
        self._lock = threading.Lock()

    def accepted(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        key = hashlib.blake2b(authorization.encode(), digest_size=16).hexdigest()
        now = time.monotonic()
        with self._lock:
            if self._ok.get(key, 0.0) > now:
                return True
        conn = http.client.HTTPConnection(*self.archive, timeout=10)
        try:
            conn.request("GET", "/system", headers={"Authorization": authorization})
            status = conn.getresponse().status
        except OSError:
            return False
        finally:
            conn.close()
        if status == HTTPStatus.OK:
            with self._lock:
                self._ok[key] = now + _AUTH_TTL
            return True
        return False


class ViewerServer(ThreadingHTTPServer):
    """Serves *dist* (with *app_config*) and passes ``/dicom-web/`` to *archive* (host, port)."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        dist: Path,
        archive: tuple[str, int],
        app_config: Path = _APP_CONFIG,
    ) -> None:
        self.dist = dist.resolve()
        self.archive = archive
        self.app_config = app_config.read_bytes()
        self.credentials = _Credentials(archive)
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Request lines are not logged: their query strings can hold identifying values."""

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_GET(self) -> None:
        self._handle(head=False)

    def _handle(self, *, head: bool) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith(DICOMWEB_PREFIX):
            self._proxy(head=head)
            return
        if not self.server.credentials.accepted(self.headers.get("Authorization")):
            self._send(HTTPStatus.UNAUTHORIZED, b"sign in with an archive user\n", "text/plain",
                       head=head, extra={"WWW-Authenticate": REALM})  # fmt: skip
            return
        if path == "/app-config.js":
            self._send(HTTPStatus.OK, self.server.app_config, "text/javascript", head=head)
            return
        self._static(path, head=head)

    def _static(self, path: str, *, head: bool) -> None:
        relative = urllib.parse.unquote(path).lstrip("/")
        target = (self.server.dist / relative).resolve() if relative else self.server.dist
        if not target.is_relative_to(self.server.dist):
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head=head)
            return
        if target.is_dir() or (not target.exists() and "." not in Path(relative).name):
            target = self.server.dist / "index.html"  # an OHIF route
        if not target.is_file():
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head=head)
            return
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".wasm":
            kind = "application/wasm"
        self._send(HTTPStatus.OK, target.read_bytes(), kind, head=head)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        *,
        head: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _proxy(self, *, head: bool) -> None:
        headers = {h: v for h in _PASSED_HEADERS if (v := self.headers.get(h)) is not None}
        conn = http.client.HTTPConnection(*self.server.archive, timeout=120)
        try:
            conn.request("HEAD" if head else "GET", self.path, headers=headers)
            rsp = conn.getresponse()
        except OSError as exc:
            conn.close()
            LOGGER.warning("archive unreachable: %s", type(exc).__name__)
            self._send(HTTPStatus.BAD_GATEWAY, b"archive unreachable\n", "text/plain", head=head)
            return
        try:
            self.send_response(rsp.status)
            for name in _RETURNED_HEADERS:
                value = rsp.getheader(name)
                if value is not None:
                    self.send_header(name, value)
            chunked = rsp.getheader("Content-Length") is None and not head
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if head:
                return
            while block := rsp.read(_CHUNK):
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                else:
                    self.wfile.write(block)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        finally:
            conn.close()


def serve(host: str, port: int, dist: Path, archive: tuple[str, int]) -> None:
    """Serve until the process is signalled (``radiogate viewer``)."""
    if not (dist / "index.html").is_file():
        raise FileNotFoundError(f"no OHIF build in {dist} (make ohif installs it)")
    server = ViewerServer((host, port), dist, archive)
    LOGGER.info("OHIF at %s, DICOMweb of %s:%d", server.url, *archive)
    try:
        server.serve_forever()
    finally:
        server.server_close()

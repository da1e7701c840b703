"""A private Orthanc archive with a generated configuration (``make run`` and test fixtures).

Orthanc is started with ``TCP_NODELAY=1`` in its environment: it uses DCMTK's network layer,
which leaves Nagle's algorithm on otherwise and then stalls ~40 ms per C-STORE-RSP/RQ.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ManagedOrthanc", "OrthancPeer"]

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrthancPeer:
    """A DICOM peer that Orthanc knows (for C-STORE / C-MOVE / storage commitment)."""

    name: str
    ae_title: str
    host: str
    port: int


@dataclass
class ManagedOrthanc:
    """An Orthanc process with its storage in *storage_dir*."""

    storage_dir: Path
    http_port: int
    dicom_port: int
    ae_title: str = "ORTHANC"
    host: str = "127.0.0.1"
    executable: str = "Orthanc"
    peers: list[OrthancPeer] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def config(self) -> dict[str, object]:
        return {
            "Name": "Radiogate archive",
            "StorageDirectory": str(self.storage_dir / "storage"),
            "IndexDirectory": str(self.storage_dir / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpBindAddress": self.host if hasattr(self, "host") else "127.0.0.1",
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowFind": True,
            "StorageCompression": False,
            "SaveJobs": False,
            "Plugins": [],
            "DicomModalities": {
                p.name: {"AET": p.ae_title, "Host": p.host, "Port": p.port} for p in self.peers
            },
            "StableAge": 60,
            "DicomScpTimeout": 30,
        }

    def start(self, timeout: float = 60.0) -> None:
        """Write the configuration, start Orthanc and wait until its REST API answers."""
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.storage_dir / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=2))
        log = (self.storage_dir / "orthanc.log").open("ab")
        env = dict(os.environ, TCP_NODELAY="1")
        self._proc = subprocess.Popen(
            [self.executable, str(cfg)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with status {self._proc.returncode}; see {log.name}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/system", timeout=2) as rsp:  # noqa: S310
                    if rsp.status == 200:
                        LOGGER.info("Orthanc up at %s (DICOM %d)", self.url, self.dicom_port)
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise TimeoutError("Orthanc did not start in time")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

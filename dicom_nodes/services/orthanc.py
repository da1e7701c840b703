"""A private Orthanc archive with a generated, closed configuration (``make run``, test fixtures).

Closed by default, because nothing identified may reach the archive around the de-identifier:

- **DICOM** (PS3.7 / PS3.8 association negotiation): Orthanc answers only its own AE title
  (``DicomCheckCalledAet``), and only the peers listed in ``DicomModalities`` — each with its AE
  title *and* host (``DicomCheckModalityHost``) and only the services it needs (``Allow*``);
  no ``DicomAlwaysAllow*``. Orthanc 1.10.1 (Debian 12) has no setting to bind the DICOM port to
  an address: it listens on every interface, so these checks are what keeps it closed. Measured
  from 127.0.0.2 (another source address): a rogue AE and Radiogate's own AE are both refused
  (``tests/integration/test_archive_closed.py``).
- **HTTP**: ``RemoteAccessAllowed: false`` (1.10.1 binds HTTP on every interface too, but
  refuses requests from other hosts) and HTTP Basic authentication with credentials generated
  on first start in a 0600 file (:mod:`.credentials`).

Each start gets a random token in the archive's ``Name``; readiness is checked against that
token over authenticated REST, so another Orthanc already answering the port is never taken for
the one just started. Orthanc is started with ``TCP_NODELAY=1`` in its environment: it uses
DCMTK's network layer, which leaves Nagle's algorithm on otherwise and then stalls ~40 ms per
C-STORE-RSP/RQ.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_nodes.services.credentials import HttpCredentials, ensure_credentials
from dicom_nodes.services.supervisor import die_with_parent

__all__ = [
    "DICOMWEB_PLUGIN",
    "ManagedOrthanc",
    "OrthancPeer",
    "OrthancStartError",
    "modality_entry",
    "security_config",
]

LOGGER = logging.getLogger(__name__)

PEER_SERVICES = ("Echo", "Find", "FindWorklist", "Get", "Move", "Store", "StorageCommitment")
"""Services a ``DicomModalities`` entry can be allowed (Orthanc's ``Allow<Service>`` keys)."""

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
"""Debian's ``orthanc-dicomweb`` (1.7 in Debian 12): QIDO-RS / WADO-RS / STOW-RS, PS3.18."""

SENDER_SERVICES = frozenset({"Echo", "Store", "Find", "StorageCommitment"})
"""What a forwarding peer needs: verify, store, confirm by C-FIND or Storage Commitment."""


class OrthancStartError(RuntimeError):
    """Orthanc exited during start-up or did not answer in time (its log file is named)."""


@dataclass(frozen=True)
class OrthancPeer:
    """A DICOM peer that Orthanc knows: the only AEs it accepts associations from.

    *host* must be the address the peer connects from (``DicomCheckModalityHost``); *port* is
    where Orthanc reaches it (C-MOVE targets, Storage Commitment N-EVENT-REPORTs); *services*
    are the ``Allow*`` permissions (:data:`PEER_SERVICES`).
    """

    name: str
    ae_title: str
    host: str
    port: int
    services: frozenset[str] = SENDER_SERVICES

    def __post_init__(self) -> None:
        unknown = set(self.services) - set(PEER_SERVICES)
        if unknown:
            raise ValueError(f"unknown Orthanc peer services: {', '.join(sorted(unknown))}")


def modality_entry(peer: OrthancPeer) -> dict[str, object]:
    """One ``DicomModalities`` entry, every ``Allow*`` spelled out (nothing left to defaults)."""
    entry: dict[str, object] = {"AET": peer.ae_title, "Host": peer.host, "Port": peer.port}
    for service in PEER_SERVICES:
        entry[f"Allow{service}"] = service in peer.services
    return entry


def security_config(peers: list[OrthancPeer], credentials: HttpCredentials) -> dict[str, object]:
    """The settings that close the archive: known peers only, host-checked, HTTP with a password."""
    return {
        "DicomCheckCalledAet": True,
        "DicomCheckModalityHost": True,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowFindWorklist": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomModalities": {p.name: modality_entry(p) for p in peers},
        "DicomModalitiesInDatabase": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {credentials.user: credentials.password},
        "OrthancPeers": {},
    }


@dataclass
class ManagedOrthanc:
    """An Orthanc process with its storage in *storage_dir*.

    *credentials_file* (default ``storage_dir/http-credentials``) holds the REST API's
    ``user:password``; it is created on first start. *peers* are the only DICOM peers accepted.
    """

    storage_dir: Path
    http_port: int
    dicom_port: int
    ae_title: str = "ORTHANC"
    host: str = "127.0.0.1"
    executable: str = "Orthanc"
    peers: list[OrthancPeer] = field(default_factory=list)
    credentials_file: Path | None = None
    name: str = "Radiogate archive"
    extra: dict[str, object] = field(default_factory=dict)
    """More configuration keys (e.g. the plugin's: :mod:`.pacs`)."""
    users: dict[str, str] = field(default_factory=dict)
    """More ``RegisteredUsers`` besides the archive's own account."""
    dicomweb: bool = False
    """Load the DICOMweb plugin at ``/dicom-web/`` (the viewer reads through it), behind the
    same HTTP Basic authentication; its WADO-URI endpoint is off unless *extra* turns it on."""
    _proc: subprocess.Popen[bytes] | None = None
    _credentials: HttpCredentials | None = None
    _token: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def credentials_path(self) -> Path:
        return self.credentials_file or self.storage_dir / "http-credentials"

    @property
    def credentials(self) -> HttpCredentials:
        """The REST API's credentials (created on first use)."""
        if self._credentials is None:
            self._credentials, created = ensure_credentials(self.credentials_path)
            if created:
                LOGGER.info("archive credentials created in %s", self.credentials_path)
        return self._credentials

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.storage_dir / "orthanc.log"

    def config(self) -> dict[str, object]:
        cfg = self._base_config()
        for key, value in self.extra.items():
            base = cfg.get(key)
            if key == "Plugins" and isinstance(base, list) and isinstance(value, list):
                # each plugin loaded once, however its path is spelt
                cfg[key] = list({os.path.realpath(str(p)): p for p in [*base, *value]}.values())
            elif isinstance(base, dict) and isinstance(value, dict):
                cfg[key] = {**base, **value}
            else:
                cfg[key] = value
        cfg["RegisteredUsers"] = {**self.users, self.credentials.user: self.credentials.password}
        return cfg

    def _base_config(self) -> dict[str, object]:
        return {
            "Name": f"{self.name} {self._token}".rstrip(),
            "StorageDirectory": str(self.storage_dir / "storage"),
            "IndexDirectory": str(self.storage_dir / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            **security_config(self.peers, self.credentials),
            "StorageCompression": False,
            "SaveJobs": False,
            "Plugins": [DICOMWEB_PLUGIN] if self.dicomweb else [],
            **(self._dicomweb_config() if self.dicomweb else {}),
            "StableAge": 60,
            "DicomScpTimeout": 30,
            # A re-send over an archived copy (scp.different_bytes_archived) replaces it: the
            # same SOP Instance UID stored again overwrites instead of being ignored.
            "OverwriteInstances": True,
        }

    @staticmethod
    def _dicomweb_config() -> dict[str, object]:
        return {
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": False,
                "Ssl": False,
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            }
        }

    def request(self, path: str, *, method: str = "GET", body: bytes | None = None) -> bytes:
        """One authenticated REST call; raises :class:`urllib.error.URLError` on failure."""
        req = urllib.request.Request(f"{self.url}{path}", data=body, method=method)  # noqa: S310
        req.add_header("Authorization", self.credentials.authorization)
        with urllib.request.urlopen(req, timeout=30) as rsp:  # noqa: S310 - our own loopback URL
            return bytes(rsp.read())

    def get_json(self, path: str) -> Any:
        return json.loads(self.request(path))

    def start(self, timeout: float = 60.0) -> None:
        """Write the configuration (0600: it holds the password), start Orthanc, wait until
        *this* process answers with this start's token."""
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self._token = secrets.token_hex(6)
        cfg = self.storage_dir / "orthanc.json"
        fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(json.dumps(self.config(), indent=2))
        log = self.log_path.open("ab")
        env = dict(os.environ, TCP_NODELAY="1")
        self._proc = subprocess.Popen(
            [self.executable, str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches our owner, who stops us in order
            preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads start Orthanc
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise OrthancStartError(f"Orthanc exited with status {code}; see {self.log_path}")
            if self.answers():
                LOGGER.info(
                    "Orthanc up at %s (DICOM %d, pid %d)", self.url, self.dicom_port, self._proc.pid
                )
                return
            time.sleep(0.2)
        self.stop()
        raise OrthancStartError(f"Orthanc did not answer in {timeout:.0f} s; see {self.log_path}")

    def answers(self) -> bool:
        """True if the Orthanc started last answers REST with this start's token."""
        if not self._token:
            return False
        try:
            system = self.get_json("/system")
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return isinstance(system, dict) and str(system.get("Name", "")).endswith(self._token)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_status(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

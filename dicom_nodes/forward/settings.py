"""Settings of each destination type: plain frozen dataclasses that validate themselves.

The configuration loader maps ``[[route.destination]]`` tables onto these; string values for
enumerations are accepted (``confirm = "query"``). Nothing here touches the network.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

__all__ = [
    "ConfirmMethod",
    "DimseSettings",
    "DirectorySettings",
    "StowSettings",
    "TlsSettings",
]


class ConfirmMethod(Enum):
    """How a DIMSE destination confirms that it holds instances."""

    STORAGE_COMMITMENT = "commitment"
    """Storage Commitment Push Model (PS3.4 J): N-ACTION-RQ, then wait for the N-EVENT-REPORT
    that the peer sends to the AE it knows as our ``calling_ae`` (``radiogate scp``, which
    records it in PostgreSQL). No report within ``commitment_timeout``: not confirmed now
    (:class:`~dicom_nodes.forward.model.ConfirmationUnavailable`), asked again at the next
    attempt, where reports that came late count."""

    QUERY = "query"
    """C-FIND at IMAGE level with SOP Instance UID list matching (PS3.4 C.2.2.2.2, C.6)."""

    COMMITMENT_OR_QUERY = "commitment-or-query"
    """Storage commitment; a query only if the peer refuses storage commitment or no report
    arrives within ``commitment_timeout``."""

    NONE = "none"
    """Do not ask: a success status of the C-STORE counts as confirmation. For peers that
    offer neither service; the spool copy is then released on the peer's word alone."""

    @classmethod
    def _missing_(cls, value: object) -> ConfirmMethod | None:
        aliases = {"storage-commitment": cls.STORAGE_COMMITMENT, "c-find": cls.QUERY}
        return aliases.get(value.lower()) if isinstance(value, str) else None


def _check_ae_title(name: str, value: str) -> None:
    """AE titles: 1-16 characters of the default repertoire, no backslash (PS3.5 6.2 AE)."""
    if not value.strip() or len(value) > 16 or "\\" in value:
        raise ValueError(f"{name}: invalid AE title {value!r} (1-16 characters, no backslash)")
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"{name}: AE title must be printable ASCII: {value!r}")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, not {value!r}")


@dataclass(frozen=True)
class TlsSettings:
    """DICOM TLS (PS3.15 B.12, BCP 195) for an outgoing connection."""

    enabled: bool = False
    ca_certificates: str = ""
    """PEM file of the CA(s) that sign the destination's certificate (empty: system store)."""
    certificate: str = ""
    """Our client certificate (PEM) if the destination requires one."""
    private_key: str = ""
    server_name: str = ""
    """Name to check the destination's certificate against (empty: the destination's host)."""

    def __post_init__(self) -> None:
        if bool(self.certificate) != bool(self.private_key):
            raise ValueError("tls.certificate and tls.private_key go together")
        for key in ("ca_certificates", "certificate", "private_key"):
            value = getattr(self, key)
            if self.enabled and value and not Path(value).is_file():
                raise ValueError(f"tls.{key}: no such file {value!r}")

    def client_context(self) -> ssl.SSLContext:
        """A client context: TLS 1.2 or later, peer certificate and host name verified."""
        ctx = ssl.create_default_context(cafile=self.ca_certificates or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.certificate:
            ctx.load_cert_chain(self.certificate, self.private_key)
        return ctx


@dataclass(frozen=True)
class DimseSettings:
    """A DIMSE destination (C-STORE SCP, usually also Storage Commitment / C-FIND SCP)."""

    name: str
    ae_title: str
    host: str
    port: int
    calling_ae: str = "RADIOGATE"
    parallel: int = 1
    """Associations used at once by one ``send`` call, each on its own thread."""
    timeout: float = 60.0
    """DIMSE, ACSE and network timeout (s): longest wait for one response."""
    connect_timeout: float = 10.0
    confirm: ConfirmMethod = ConfirmMethod.COMMITMENT_OR_QUERY
    commitment_timeout: float = 60.0
    """How long to wait for the N-EVENT-REPORT after the N-ACTION-RSP (s)."""
    max_pdu: int = 0
    """Our maximum receive PDU length (0: unlimited); what we send follows the peer's."""
    keep_open: float = 5.0
    """Seconds an idle association stays open for the next batch (0: released after each)."""
    confirm_class: bool = True
    """Confirming by C-FIND: the query asks for the SOP Class UID, and an instance found under
    another class is not confirmed; False: the SOP Instance UID alone confirms."""
    max_reassociations: int = 2
    """Consecutive failed (re-)associations after which a sending thread gives up."""
    extra_retryable_statuses: frozenset[int] = frozenset()
    """C-STORE statuses this peer uses for transient failures (see ``status`` module)."""
    tls: TlsSettings = field(default_factory=TlsSettings)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("destination name must not be empty")
        _check_ae_title("ae_title", self.ae_title)
        _check_ae_title("calling_ae", self.calling_ae)
        if not self.host:
            raise ValueError("host must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        if not 1 <= self.parallel <= 32:
            raise ValueError(f"parallel must be 1..32, not {self.parallel}")
        for key in ("timeout", "connect_timeout", "commitment_timeout"):
            _check_positive(key, getattr(self, key))
        if self.max_pdu < 0:
            raise ValueError("max_pdu must be >= 0")
        if not 0 <= self.keep_open <= 3600:
            raise ValueError(f"keep_open must be 0..3600 seconds, not {self.keep_open}")
        if self.max_reassociations < 1:
            raise ValueError("max_reassociations must be >= 1")
        object.__setattr__(self, "confirm", ConfirmMethod(self.confirm))
        object.__setattr__(
            self, "extra_retryable_statuses", frozenset(self.extra_retryable_statuses)
        )


@dataclass(frozen=True)
class StowSettings:
    """A DICOMweb destination: STOW-RS to store (PS3.18 10.5), QIDO-RS to confirm (10.6)."""

    name: str
    url: str
    """Service root, e.g. ``https://pacs.example/dicom-web``."""
    parallel: int = 1
    """Concurrent STOW-RS requests."""
    max_instances_per_request: int = 50
    max_bytes_per_request: int = 256 * 1024 * 1024
    timeout: float = 120.0
    headers: tuple[tuple[str, str], ...] = ()
    """Extra request headers (e.g. ``("Authorization", "Bearer ...")``); never logged."""
    tls: TlsSettings = field(default_factory=TlsSettings)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("destination name must not be empty")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must be http(s)://..., not {self.url!r}")
        if not 1 <= self.parallel <= 32:
            raise ValueError(f"parallel must be 1..32, not {self.parallel}")
        if self.max_instances_per_request < 1 or self.max_bytes_per_request < 1:
            raise ValueError("request limits must be >= 1")
        _check_positive("timeout", self.timeout)
        object.__setattr__(self, "url", self.url.rstrip("/"))
        object.__setattr__(self, "headers", tuple((str(k), str(v)) for k, v in self.headers))


@dataclass(frozen=True)
class DirectorySettings:
    """A local directory (dry runs, tests, hand-off to another system)."""

    name: str
    path: Path
    fsync: bool = True

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("destination name must not be empty")
        object.__setattr__(self, "path", Path(self.path))

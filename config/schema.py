"""Typed settings of Radiogate.

Every key of the TOML file maps to one field below; ``config/default.toml`` documents each of them
with its default. The dataclasses are frozen: settings are loaded and validated once at start
(:func:`config.load`) and then passed around read-only.

Where files are found never depends on the working directory: a relative ``node.data_dir`` is
resolved against the directory of the configuration file (without a file: against the source
checkout holding ``config/``), relative state paths (spool, PostgreSQL cluster, Orthanc storage,
secrets, audit files) against ``node.data_dir``, and relative TLS files against the
configuration file's directory. :func:`config.load` does this once, so ``Settings`` holds
absolute paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from config.alerts import AlertSettings
from config.analysis import AnalysisSettings
from config.deid import DeidSettings
from config.pacs import PacsSettings
from config.routes import (
    DestinationSettings,
    LaneRule,
    PipelineSettings,
    RouteSettings,
    WorkerSettings,
)
from config.triage import TriageSettings

__all__ = [
    "Accelerate",
    "AuditSettings",
    "DatabaseSettings",
    "ForwardSettings",
    "LogLevel",
    "LoggingSettings",
    "NodeSettings",
    "OrthancSettings",
    "ScpSettings",
    "Settings",
    "SpoolSettings",
    "SyslogProtocol",
    "TlsSettings",
    "ViewerSettings",
]


class LogLevel(StrEnum):
    """Python logging levels accepted in ``logging.level``."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class DifferentBytes(StrEnum):
    """What a re-send of a SOP Instance UID with different bytes does (``scp.different_bytes``).

    Either way the second copy is kept in the spool and recorded (``ingest_duplicate``) with an
    audit event; only which copy the pipeline carries differs."""

    REPLACE = "replace"
    """While the first copy has not been routed (nothing downstream has seen it), the new copy
    replaces it (same study and series only); once routed, the first copy stays (as ``keep``)."""
    KEEP = "keep"
    """The first copy always stays; the new one waits in the spool for a person."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            return cls.__members__.get(value.strip().upper())
        return None


class DifferentBytesArchived(StrEnum):
    """What a re-send with different bytes does once the first copy is archived (released:
    every destination confirmed it) (``scp.different_bytes_archived``).

    The default is ``quarantine``: the archive does not change behind the readers' backs, and
    the new copy is not left unseen either — it is listed by ``radiogate quarantine list`` with
    reason ``archived-copy-differs`` and ``radiogate quarantine release`` sends it."""

    KEEP = "keep"
    """The archived copy stays; the new one waits in the spool for a person (recorded in
    ``ingest_duplicate``; nothing lists it as held)."""
    REPLACE_IN_ARCHIVE = "replace-in-archive"
    """The new copy is routed and forwarded again, so that it overwrites the archived one (same
    SOP Instance UID). The archive must allow that: Orthanc with ``"OverwriteInstances":
    true`` (set in the archive ``radiogate run`` starts); an archive that keeps the first copy
    answers success and silently keeps the old bytes."""
    QUARANTINE = "quarantine"
    """The new copy is routed, its forward items held (``quarantined``, reason
    ``archived-copy-differs``) until a person releases it (then as ``replace-in-archive``) or
    cancels it."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            return cls.__members__.get(value.strip().upper().replace("-", "_"))
        return None


class Accelerate(StrEnum):
    """Whether pynetdicom associations use Radiogate's accelerator (``scp.accelerate``,
    ``forward.accelerate``; see ``dicom_nodes.accelerator``)."""

    AUTO = "auto"
    """On with the pynetdicom versions it was verified against; otherwise stock pynetdicom
    and one warning."""
    ON = "on"
    """On; start-up fails if the installed pynetdicom is not a verified version."""
    OFF = "off"
    """Stock pynetdicom."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            return cls.__members__.get(value.strip().upper())
        return None


@dataclass(frozen=True)
class NodeSettings:
    """Identity of this Radiogate node and where its state lives."""

    name: str = "node1"
    """Node identifier recorded with every received instance (one spool per node)."""
    data_dir: str = "./var"
    """Directory for local state: spool, private PostgreSQL cluster, Orthanc storage, logs."""


@dataclass(frozen=True)
class DatabaseSettings:
    """PostgreSQL connection; empty ``dsn`` means a private cluster under ``node.data_dir``."""

    dsn: str = ""
    port: int = 55432
    """Port of the private cluster (ignored when ``dsn`` is set)."""
    pool_size: int = 4
    """Connections per receiver process."""
    connect_timeout: float = 3.0
    """Seconds to wait for a pooled connection before answering 0xA700 (out of resources)."""
    admin_dsn: str = ""
    """Connection of privileged admin commands (re-identify, quarantine release, cancel, study
    complete): each admin connects as their own PostgreSQL role, authenticated by the server
    (no ``user=`` here: libpq takes ``PGUSER`` or the login name, the password from
    ``~/.pgpass``, a client certificate, or peer authentication). The role recorded in the audit
    trail is that session's. Empty: the node's connection (``dsn``, or the private cluster's
    superuser)."""


@dataclass(frozen=True)
class TlsSettings:
    """DICOM TLS (PS3.15 B.12 / B.9: TLS 1.2 or later)."""

    enabled: bool = False
    certificate: str = ""
    """PEM file with the server certificate (chain)."""
    private_key: str = ""
    """PEM file with the server's private key."""
    ca_certificates: str = ""
    """PEM bundle of CAs trusted to sign client certificates."""
    require_client_certificate: bool = False
    """Refuse peers that do not present a certificate signed by ``ca_certificates``."""


@dataclass(frozen=True)
class ScpSettings:
    """The Storage SCP (C-ECHO, C-STORE) facing modalities."""

    ae_title: str = "RADIOGATE"
    host: str = "127.0.0.1"
    port: int = 11112
    processes: int = 0
    """Receiver processes sharing the listening socket; 0 means one per CPU core, at least 4
    (``scp.runner.receivers_for``)."""
    max_associations: int = 16
    """Concurrent associations per receiver process."""
    allowed_calling_aets: list[str] = field(default_factory=list)
    """Calling AE titles accepted; empty accepts any."""
    allowed_networks: list[str] = field(default_factory=list)
    """Peer networks (CIDR) accepted; empty accepts any."""
    require_called_aet: bool = True
    """Reject associations whose Called AE Title is not ``ae_title``."""
    acse_timeout: float = 30.0
    dimse_timeout: float = 30.0
    network_timeout: float = 60.0
    """Seconds of silence after which a connection is closed (half-sent PDUs, idle peers)."""
    max_pdu_size: int = 262144
    """Maximum PDU length we receive (bytes); 0 means unlimited. A longer PDU closes the
    connection as soon as its header is read."""
    artim_timeout: float = 10.0
    """Seconds a new connection has to send a complete A-ASSOCIATE-RQ (ARTIM, PS3.8 9.1.5);
    until then it does not count against ``max_associations``."""
    max_connections_per_peer: int = 32
    """Open connections per peer address and receiver process (0: no limit); more are closed
    on accept."""
    tcp_quickack: bool = True
    """Set TCP_QUICKACK on accepted sockets so senders that keep Nagle on do not stall."""
    metrics_port: int = 9463
    """Prometheus ``/metrics`` and ``/health`` of the SCP on 127.0.0.1 (0: off)."""
    accelerate: Accelerate = Accelerate.AUTO
    """Accelerated pynetdicom associations for the receiver (auto, on, off)."""
    different_bytes: DifferentBytes = DifferentBytes.REPLACE
    """A re-send of a SOP Instance UID with different bytes: ``replace`` the first copy while
    it is unrouted, or ``keep`` the first copy always."""
    different_bytes_archived: DifferentBytesArchived = DifferentBytesArchived.QUARANTINE
    """The same once the first copy is archived (released): ``quarantine`` the new copy for a
    person (default), ``replace-in-archive`` (forward it so that it overwrites the archived
    copy; the archive must allow overwriting), or ``keep`` the archived copy."""
    tls: TlsSettings = field(default_factory=TlsSettings)


@dataclass(frozen=True)
class ForwardSettings:
    """Forwarding to DIMSE destinations (the worker's C-STORE, C-FIND, N-ACTION SCU)."""

    accelerate: Accelerate = Accelerate.AUTO
    """Accelerated pynetdicom associations for the forwarder (auto, on, off)."""


@dataclass(frozen=True)
class SpoolSettings:
    """The durable spool of received instances."""

    path: str = "spool"
    """Spool directory (relative to ``node.data_dir``)."""
    min_free_bytes: int = 1_073_741_824
    """Below this much free space in the spool's file system C-STOREs get 0xA700."""
    min_free_percent: float = 2.0
    """Below this share of free space C-STOREs get 0xA700."""
    fsync: bool = True
    """fsync file and directory before acknowledging; only ever disable for throw-away tests."""


@dataclass(frozen=True)
class OrthancSettings:
    """The Orthanc archive; ``managed`` starts a private one under ``node.data_dir``."""

    managed: bool = True
    executable: str = "Orthanc"
    host: str = "127.0.0.1"
    http_port: int = 8042
    dicom_port: int = 4242
    ae_title: str = "ORTHANC"
    storage: str = "orthanc"
    """Orthanc storage and index directory (relative to ``node.data_dir``)."""
    credentials_file: str = "orthanc/http-credentials"
    """``user:password`` of the REST API (HTTP Basic; mode 0600; relative to ``node.data_dir``).
    Created on first start when Orthanc is managed; written by the operator otherwise."""


@dataclass(frozen=True)
class ViewerSettings:
    """The OHIF viewer that ``radiogate run`` serves next to the managed archive (loopback).

    Its DICOMweb requests are passed to the archive's DICOMweb plugin with the browser's own
    HTTP Basic credentials (those of an Orthanc user): the viewer holds no password."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8043
    dist: str = ""
    """The OHIF build to serve (``make ohif`` installs it); empty: ``ohif/dist`` of the source
    checkout."""


@dataclass(frozen=True)
class LoggingSettings:
    """Process logging (never PHI: UIDs, AE titles and addresses only)."""

    level: LogLevel = LogLevel.INFO
    json: bool = False
    """One JSON object per line instead of plain text."""


class SyslogProtocol(StrEnum):
    """Transport of RFC 5424 syslog messages (``audit.syslog_protocol``)."""

    UDP = "UDP"
    TCP = "TCP"


@dataclass(frozen=True)
class AuditSettings:
    """The tamper-evident audit trail (DICOM PS3.15 A.5 events in a signed hash chain)."""

    checkpoint_every: int = 1000
    """Sign a checkpoint after this many new events (0: only by time)."""
    checkpoint_seconds: float = 60.0
    """Sign a checkpoint at least this often while new events arrive (0: only by count)."""
    seal_interval: float = 0.5
    """Seconds between runs of the sealer that chains enqueued events (``audit.enqueue``)."""
    checkpoint_file: str = "audit/checkpoints.jsonl"
    """Append-only file receiving every signed checkpoint (relative to ``node.data_dir``)."""
    signing_key: str = "audit/signing_key.pem"
    """Ed25519 private key (PEM, mode 0600) signing checkpoints (relative to ``node.data_dir``)."""
    keyring: str = "audit/keyring.json"
    """Public keys of every signing key ever used, by key ID (relative to ``node.data_dir``)."""
    site_id: str = ""
    """AuditEnterpriseSiteID of exported ATNA messages (empty: none)."""
    syslog_host: str = ""
    """RFC 5424 syslog receiver for checkpoints and ATNA export (empty: none)."""
    syslog_port: int = 514
    syslog_protocol: SyslogProtocol = SyslogProtocol.UDP


@dataclass(frozen=True)
class Settings:
    """All Radiogate settings."""

    node: NodeSettings = field(default_factory=NodeSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    scp: ScpSettings = field(default_factory=ScpSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    orthanc: OrthancSettings = field(default_factory=OrthancSettings)
    viewer: ViewerSettings = field(default_factory=ViewerSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    destinations: list[DestinationSettings] = field(default_factory=lambda: [DestinationSettings()])
    """Named places ``forward:<name>`` steps send to; default: the local Orthanc (``archive``)."""
    routes: list[RouteSettings] = field(default_factory=lambda: [RouteSettings()])
    """Ordered routes; the first match wins. Default: forward everything to ``archive``."""
    lane_rules: list[LaneRule] = field(default_factory=list)
    triage: TriageSettings = field(default_factory=TriageSettings)
    """Models and policy of ``triage`` route steps."""
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    """The archive analysis reads from and stores into; its time and CPU limits, and how it
    keeps off the receiver: a worker of its own under ``radiogate run``, the idle class, one
    CPU, one thread per library, held while a modality sends (docs/operations.md)."""
    alerts: AlertSettings = field(default_factory=AlertSettings)
    """Where critical and incomplete results are announced; escalation of unacknowledged ones."""
    deid: DeidSettings = field(default_factory=DeidSettings)
    """De-identification profiles (``deidentify:<profile>`` steps) and their secrets."""
    pacs: PacsSettings = field(default_factory=PacsSettings)
    """The Orthanc plugin: users and roles, the access journal, the worklist's wait ceilings."""

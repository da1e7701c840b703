"""``radiogate run``: the whole system on one machine, on loopback, with working defaults.

Starts (unless configured to use existing ones) a private PostgreSQL cluster and a private
Orthanc under ``node.data_dir``, applies the schema migrations, then runs the SCP as a child
process. Prints what runs where. SIGINT/SIGTERM stop everything in reverse order.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

import psycopg

from config import Settings, data_path
from dicom_nodes.db.migrate import migrate
from dicom_nodes.services.orthanc import ManagedOrthanc, OrthancPeer
from dicom_nodes.services.postgres import PrivateCluster

__all__ = ["archive_peers", "database_dsn", "run_stack"]

LOGGER = logging.getLogger(__name__)


def database_dsn(settings: Settings) -> str:
    """The configured DSN, or the private cluster's."""
    if settings.database.dsn:
        return settings.database.dsn
    return PrivateCluster(data_path(settings, "postgres"), settings.database.port).dsn


def _loopback_if_wildcard(host: str) -> str:
    try:
        address = ipaddress.ip_address(host) if host else None
    except ValueError:
        return host  # a host name
    if address is None or address.is_unspecified:
        return "::1" if address is not None and address.version == 6 else "127.0.0.1"
    return host


def archive_peers(settings: Settings) -> list[OrthancPeer]:
    """The ``DicomModalities`` entries of the managed Orthanc: Radiogate as Orthanc must know it.

    Orthanc accepts an N-ACTION (Storage Commitment, PS3.4 J.3.2) only from a calling AE it
    knows, and sends the N-EVENT-REPORT (J.3.3) on a new association to that entry's host and
    port: so each calling AE our destinations use towards this Orthanc gets an entry pointing
    at ``radiogate scp`` (normally the one entry for ``scp.ae_title``, which the configuration
    check requires of commitment destinations while ``scp.require_called_aet`` holds). A
    wildcard listen address is reached on loopback."""
    scp, archive = settings.scp, settings.orthanc
    host = _loopback_if_wildcard(scp.host)
    titles = [scp.ae_title] + [
        d.calling_ae
        for d in settings.destinations
        if d.kind == "dimse" and d.ae_title == archive.ae_title and d.port == archive.dicom_port
    ]
    unique = list(dict.fromkeys(t.strip() for t in titles))
    return [
        OrthancPeer("radiogate" if n == 0 else f"radiogate-{n}", title, host, scp.port)
        for n, title in enumerate(unique)
    ]


def apply_migrations(dsn: str) -> list[str]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        return migrate(conn)


def run_stack(settings: Settings, config_file: str | None) -> int:
    """Run PostgreSQL, Orthanc and the SCP until interrupted."""
    stop_requested = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    data_dir = data_path(settings, ".")
    data_dir.mkdir(parents=True, exist_ok=True)
    cluster: PrivateCluster | None = None
    orthanc: ManagedOrthanc | None = None
    scp: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    sealer: subprocess.Popen[bytes] | None = None
    lines: list[str] = []
    try:
        if not settings.database.dsn:
            cluster = PrivateCluster(data_path(settings, "postgres"), settings.database.port)
            cluster.start()
            lines.append(
                f"PostgreSQL   127.0.0.1:{cluster.port}  (private cluster in {cluster.data_dir})"
            )
        else:
            lines.append("PostgreSQL   configured DSN (database.dsn)")
        dsn = database_dsn(settings)
        applied = apply_migrations(dsn)
        lines.append(f"schema       up to date ({len(applied)} migrations applied now)")
        o = settings.orthanc
        if o.managed:
            orthanc = ManagedOrthanc(
                storage_dir=data_path(settings, o.storage),
                http_port=o.http_port,
                dicom_port=o.dicom_port,
                ae_title=o.ae_title,
                host=o.host,
                executable=o.executable,
                peers=archive_peers(settings),
            )
            orthanc.start()
        lines.append(
            f"Orthanc      http://{o.host}:{o.http_port}"
            f"  DICOM {o.ae_title}@{o.host}:{o.dicom_port}"
        )
        env = dict(os.environ)
        if config_file:
            env["RADIOGATE_CONFIG"] = config_file
        key_path = data_path(settings, settings.audit.signing_key)
        if not key_path.exists():
            from audit import generate_key

            signer = generate_key(key_path, data_path(settings, settings.audit.keyring))
            lines.append(f"audit        signing key {signer.key_id} generated in {key_path}")
        from dicom_nodes.deid.secrets import ensure_secrets

        for created in ensure_secrets(settings):
            lines.append(f"deid         new secret {created} (keep it, never commit it)")
        profiles = sorted(
            {s.partition(":")[2] for r in settings.routes for s in r.steps if s.startswith("deid")}
        )
        if profiles:
            lines.append(f"deid         routes de-identify with profile(s) {', '.join(profiles)}")
        # Chains the events the SCP and workers enqueue, and signs checkpoints.
        sealer = subprocess.Popen(
            [sys.executable, "-m", "dicom_nodes.cli", "audit", "checkpoint", "--watch"], env=env
        )
        lines.append(
            f"audit        sealer + signed checkpoints -> "
            f"{data_path(settings, settings.audit.checkpoint_file)}"
        )
        scp = subprocess.Popen([sys.executable, "-m", "dicom_nodes.cli", "scp"], env=env)
        worker = subprocess.Popen([sys.executable, "-m", "dicom_nodes.cli", "worker"], env=env)
        s = settings.scp
        lines.append(
            f"Radiogate    SCP {s.ae_title}@{s.host}:{s.port}"
            f"{' (TLS)' if s.tls.enabled else ''}, spool {data_path(settings, settings.spool.path)}"
            + (f"; metrics http://127.0.0.1:{s.metrics_port}/metrics" if s.metrics_port else "")
        )
        metrics = settings.worker.metrics_port
        lines.append(
            "Worker       routes: "
            + ", ".join(r.name for r in settings.routes)
            + (f"; metrics http://127.0.0.1:{metrics}/metrics" if metrics else "")
        )
        print(
            "\nRadiogate is running:\n  " + "\n  ".join(lines) + "\nPress Ctrl-C to stop.\n",
            flush=True,
        )
        while not stop_requested:
            if scp.poll() is not None:
                LOGGER.error("the SCP exited with status %s", scp.returncode)
                return 1
            if worker.poll() is not None:
                LOGGER.error("the worker exited with status %s", worker.returncode)
                return 1
            if sealer.poll() is not None:
                LOGGER.error("the audit sealer exited with status %s", sealer.returncode)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        print("stopping ...", flush=True)
        for child in (scp, worker, sealer):
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in (scp, worker, sealer):
            if child is not None:
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
        if orthanc is not None:
            orthanc.stop()
        if cluster is not None:
            cluster.stop()
        print("stopped.", flush=True)

"""Wiring of the Storage SCP: the pynetdicom AE, its contexts, handlers and server.

Presentation contexts: Verification (PS3.4 A) and every Storage SOP Class pynetdicom knows
(PS3.4 B.5, Table B.5-1), each with every transfer syntax pydicom knows plus the few newer ones
listed in :data:`EXTRA_TRANSFER_SYNTAXES`; data is stored as received, so accepting a syntax
never requires a codec.

With a commitment sink, also the Storage Commitment Push Model with the peer in the SCP role
(PS3.4 J.3.3, SCP/SCU Role Selection PS3.7 D.3.3.4; see
:func:`~dicom_nodes.forward.commitment.commitment_scp_context`): destinations send their
N-EVENT-REPORTs here, on associations of their own, and
:func:`~dicom_nodes.forward.commitment.handle_commitment_report` records them in the sink for
the worker that waits.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom.uid
from psycopg_pool import ConnectionPool
from pynetdicom import AE, _config, dimse_messages, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from config import Settings, data_path
from dicom_nodes import accelerator
from dicom_nodes.audit_events import AuditWriter, association_event
from dicom_nodes.db.commitment import PostgresCommitmentSink
from dicom_nodes.db.ingest import IngestRecorder, PostgresIngest
from dicom_nodes.db.signals import SignalRecorder
from dicom_nodes.forward.commitment import (
    CommitmentSink,
    commitment_scp_context,
    handle_commitment_report,
)
from dicom_nodes.scp import metrics as scp_metrics
from dicom_nodes.scp.accept import AcceptTurn
from dicom_nodes.scp.handlers import (
    handle_echo,
    handle_store,
    log_association_event,
    record_association_end,
)
from dicom_nodes.scp.mpps import MPPS_SOP_CLASS, handle_n_create, handle_n_set
from dicom_nodes.scp.transport import MAX_ASSOCIATE_RQ, ReceiverServer, make_tls_context
from dicom_nodes.spool.receiving import ReceiveFile
from dicom_nodes.spool.store import Spool

__all__ = [
    "EXTRA_TRANSFER_SYNTAXES",
    "build_server",
    "make_commitment_sink",
    "make_pool",
    "make_spool",
    "transfer_syntaxes",
]

LOGGER = logging.getLogger(__name__)

EXTRA_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.8.1",  # Deflated Image Frame Compression
    "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
    "1.2.840.10008.1.2.4.111",  # JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112",  # JPEG XL
    "1.2.840.10008.1.2.4.94",  # JPIP Referenced
    "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
)


def transfer_syntaxes() -> list[str]:
    """Every transfer syntax the SCP accepts, uncompressed ones first."""
    first = [pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian]
    rest = [str(ts) for ts in pydicom.uid.AllTransferSyntaxes if ts not in first]
    extra = [ts for ts in EXTRA_TRANSFER_SYNTAXES if ts not in rest]
    return [str(ts) for ts in first] + rest + extra


def make_spool(settings: Settings) -> Spool:
    return Spool(
        data_path(settings, settings.spool.path),
        min_free_bytes=settings.spool.min_free_bytes,
        min_free_percent=settings.spool.min_free_percent,
        fsync=settings.spool.fsync,
    )


def make_pool(dsn: str, size: int, timeout: float) -> ConnectionPool:
    """A psycopg pool that keeps trying to connect in the background (never blocks start-up)."""
    pool = ConnectionPool(
        dsn,
        min_size=1,
        max_size=size,
        timeout=timeout,
        kwargs={"connect_timeout": max(1, int(timeout))},
        open=False,
        name="radiogate-scp",
        reconnect_timeout=0,
    )
    pool.open(wait=False)
    return pool


def build_server(
    settings: Settings,
    spool: Spool,
    recorder: IngestRecorder,
    *,
    sock_host: str | None = None,
    listener: socket.socket | None = None,
    accept_turn: AcceptTurn | None = None,
    audit_writer: AuditWriter | None = None,
    commitment_sink: CommitmentSink | None = None,
    signals: SignalRecorder | None = None,
) -> ReceiverServer:
    """Create (bind, listen) the association server for one receiver process; with
    *commitment_sink*, it also receives storage commitment reports into it; with *signals*,
    it is a Modality Performed Procedure Step SCP (PS3.4 F.7) and records when associations
    end (both tell the pipeline that a series is complete). With *listener* it accepts from
    that listening socket (inherited from the supervisor) instead of binding its own, taking
    turns with the other receivers through *accept_turn*."""
    scp = settings.scp
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"
    # pynetdicom streams datasets into NamedTemporaryFile(): keep those on the spool's file
    # system so that committing is a rename.
    tempfile.tempdir = str(spool.incoming)
    # ... through a file that turns a full disk into 0xA700 instead of an aborted association
    # (stock pynetdicom's decoder names NamedTemporaryFile; the accelerator uses ReceiveFile).
    dimse_messages.NamedTemporaryFile = ReceiveFile  # type: ignore[attr-defined,assignment]

    ae = AE(ae_title=scp.ae_title)
    ae.maximum_associations = scp.max_associations
    ae.acse_timeout = scp.acse_timeout
    ae.dimse_timeout = scp.dimse_timeout
    ae.network_timeout = scp.network_timeout
    ae.maximum_pdu_size = scp.max_pdu_size
    ae.require_called_aet = scp.require_called_aet
    if scp.allowed_calling_aets:
        ae.require_calling_aet = list(scp.allowed_calling_aets)
    syntaxes = transfer_syntaxes()
    ae.add_supported_context(Verification, syntaxes)
    for cx in AllStoragePresentationContexts:
        assert cx.abstract_syntax is not None
        ae.add_supported_context(cx.abstract_syntax, syntaxes)
    if signals is not None:
        ae.add_supported_context(MPPS_SOP_CLASS, syntaxes[:2])
    if commitment_sink is not None:
        commitment = commitment_scp_context()
        assert commitment.abstract_syntax is not None
        ae.add_supported_context(
            commitment.abstract_syntax,
            commitment.transfer_syntax,
            scu_role=commitment.scu_role,
            scp_role=commitment.scp_role,
        )

    tls = scp.tls
    ssl_context = None
    if tls.enabled:
        ssl_context = make_tls_context(
            tls.certificate, tls.private_key, tls.ca_certificates, tls.require_client_certificate
        )
    handlers: list[Any] = [
        (evt.EVT_C_STORE, handle_store, [spool, recorder, settings.node.name, audit_writer]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_ACCEPTED, log_association_event, [audit_writer, settings.node.name]),
        (evt.EVT_REJECTED, log_association_event, [audit_writer, settings.node.name]),
        (evt.EVT_RELEASED, log_association_event),
        (evt.EVT_ABORTED, log_association_event, [audit_writer, settings.node.name]),
    ]
    if commitment_sink is not None:
        handlers.append((evt.EVT_N_EVENT_REPORT, handle_commitment_report, [commitment_sink]))
    if signals is not None:
        handlers += [
            (evt.EVT_N_CREATE, handle_n_create, [signals]),
            (evt.EVT_N_SET, handle_n_set, [signals]),
            (evt.EVT_RELEASED, record_association_end, [signals, True]),
            (evt.EVT_ABORTED, record_association_end, [signals, False]),
        ]
    ReceiverServer.quickack = scp.tcp_quickack
    ReceiverServer.allowed_networks = tuple(
        ipaddress.ip_network(n, strict=False) for n in scp.allowed_networks
    )
    ReceiverServer.tls_handshake_timeout = scp.acse_timeout
    ReceiverServer.artim_timeout = scp.artim_timeout
    ReceiverServer.max_connections_per_peer = scp.max_connections_per_peer
    ReceiverServer.max_read = max(scp.max_pdu_size, MAX_ASSOCIATE_RQ) if scp.max_pdu_size else 0
    ReceiverServer.listener = listener
    ReceiverServer.turn = accept_turn
    server = ae.make_server(
        (sock_host or scp.host, scp.port),
        ssl_context=ssl_context,
        evt_handlers=handlers,
        server_class=ReceiverServer,
    )
    assert isinstance(server, ReceiverServer)
    if audit_writer is not None:
        server.on_refused = _refusal_auditor(audit_writer, settings)
    accelerator.accelerate_server(server, scp.accelerate)
    ae._servers.append(server)
    return server


def _refusal_auditor(writer: AuditWriter, settings: Settings) -> Callable[[str, str], None]:
    """Connections refused before any association (network not allowed, TLS handshake failed)
    are Security Alert events (PS3.15 A.5.3.11)."""

    def refused(peer: str, reason: str) -> None:
        code = reason.split(":", 1)[0]
        scp_metrics.association("refused", code)
        writer.write(
            association_event(
                node=settings.node.name,
                accepted=False,
                calling_ae="",
                called_ae=settings.scp.ae_title,
                peer_address=peer,
                reason=code,
            )
        )

    return refused


def spool_root(settings: Settings) -> Path:
    return data_path(settings, settings.spool.path)


def make_recorder(pool: ConnectionPool, settings: Settings) -> PostgresIngest:
    from dicom_nodes.db.ingest import receiver_pseudonym
    from dicom_nodes.state.repository import study_touch_interval

    return PostgresIngest(
        pool,
        timeout=settings.database.connect_timeout,
        pseudonym=receiver_pseudonym(settings),
        different_bytes=settings.scp.different_bytes,
        different_bytes_archived=settings.scp.different_bytes_archived,
        study_touch=study_touch_interval(settings.pipeline.quiet_period),
    )


def make_commitment_sink(dsn: str, pool: ConnectionPool, settings: Settings) -> CommitmentSink:
    """Storage commitment reports go to PostgreSQL, one pooled transaction each."""
    return PostgresCommitmentSink(dsn, pool=pool, timeout=settings.database.connect_timeout)

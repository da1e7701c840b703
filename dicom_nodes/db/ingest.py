"""Ingest bookkeeping in PostgreSQL: one short transaction per received instance."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

import audit
from config import Settings
from dicom_nodes.audit_events import instance_received, study_reopened
from dicom_nodes.errors import DatabaseUnavailable
from dicom_nodes.spool.inspect import DatasetIdentity
from dicom_nodes.spool.store import SpooledFile
from dicom_nodes.state.jobs import ROUTE_PRIORITY, ROUTE_TASK, queue_name, route_lock
from dicom_nodes.state.repository import INGEST_SQL

__all__ = ["IngestRecorder", "PostgresIngest", "Receipt", "RecordOutcome", "receiver_pseudonym"]

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Receipt:
    """Who sent an instance, over which association, to which node (no PHI)."""

    calling_ae: str
    called_ae: str
    peer_address: str
    peer_port: int
    node: str
    association_id: uuid.UUID


class RecordOutcome(Enum):
    NEW = "new"
    DUPLICATE_SAME = "duplicate-same-bytes"
    DUPLICATE_DIFFERENT = "duplicate-different-bytes"


class IngestRecorder(Protocol):
    """Records a spooled instance durably (the database commit of the durability contract)."""

    def record(
        self, identity: DatasetIdentity, spooled: SpooledFile, receipt: Receipt
    ) -> RecordOutcome:
        """Record the instance; raise :class:`DatabaseUnavailable` when that is not possible."""
        ...


def _received_event(
    identity: DatasetIdentity, receipt: Receipt, row: tuple[Any, ...], patient: str | None
) -> audit.AuditEvent:
    inserted, bytes_differ, reopened = row[0], row[1], row[4]
    reason = None
    if not inserted:
        reason = "resent-different-bytes" if bytes_differ else "resent-identical"
    elif reopened:
        reason = "study-reopened"
    return instance_received(
        node=receipt.node,
        calling_ae=receipt.calling_ae,
        called_ae=receipt.called_ae,
        peer_address=receipt.peer_address,
        study_uid=identity.study_instance_uid,
        series_uid=identity.series_instance_uid,
        sop_uid=identity.sop_instance_uid,
        sop_class_uid=identity.sop_class_uid,
        reason=reason,
        patient=patient,
    )


class PostgresIngest:
    """:class:`IngestRecorder` on a psycopg connection pool."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        timeout: float,
        pseudonym: Callable[[DatasetIdentity], str] | None = None,
    ) -> None:
        self.pool = pool
        self.timeout = timeout
        self.pseudonym = pseudonym
        """The patient's keyed pseudonym of an instance (recorded with it and in its audit
        event, so every event of the instance names the patient); None: not recorded."""

    def record(
        self, identity: DatasetIdentity, spooled: SpooledFile, receipt: Receipt
    ) -> RecordOutcome:
        patient = self.pseudonym(identity) if self.pseudonym is not None else None
        params = {
            "patient": patient,
            "sop": identity.sop_instance_uid,
            "cls": identity.sop_class_uid,
            "study": identity.study_instance_uid,
            "series": identity.series_instance_uid,
            "modality": identity.modality,
            "ts": identity.transfer_syntax_uid,
            "size": spooled.size,
            "b3": spooled.blake3,
            "path": str(spooled.path),
            "calling": receipt.calling_ae,
            "called": receipt.called_ae,
            "addr": receipt.peer_address,
            "port": receipt.peer_port,
            "node": receipt.node,
            "assoc": receipt.association_id,
            "queue": queue_name(receipt.node),
            "qlock": route_lock(receipt.node),
            "task": ROUTE_TASK,
            "priority": ROUTE_PRIORITY,
        }
        last_error: Exception | None = None
        # Attempt 2 covers a pooled connection broken by a database restart; attempt 3 a
        # concurrent first insert of the same SOP Instance UID (then a duplicate).
        for _attempt in range(3):
            try:
                with self.pool.connection(timeout=self.timeout) as conn:
                    row = conn.execute(INGEST_SQL, params).fetchone()
                    assert row is not None
                    if row[0] or row[1] is not None:
                        # The "received" audit event commits with the instance row.
                        audit.enqueue(conn, _received_event(identity, receipt, row, patient))
                    if row[0] and row[4]:
                        # The study was complete: this receipt is its late-arrival event.
                        audit.enqueue(
                            conn,
                            study_reopened(receipt.node, receipt.called_ae,
                                           identity.study_instance_uid),
                        )  # fmt: skip
            except PoolTimeout as exc:
                raise DatabaseUnavailable("no database connection available") from exc
            except psycopg.OperationalError as exc:
                last_error = exc
                continue
            except psycopg.Error as exc:
                raise DatabaseUnavailable(f"database error {type(exc).__name__}") from exc
            inserted, bytes_differ = row[0], row[1]
            if inserted:
                return RecordOutcome.NEW
            if bytes_differ is not None:
                return (
                    RecordOutcome.DUPLICATE_DIFFERENT
                    if bytes_differ
                    else RecordOutcome.DUPLICATE_SAME
                )
        raise DatabaseUnavailable(f"database unavailable ({type(last_error).__name__})")


def receiver_pseudonym(settings: Settings) -> Callable[[DatasetIdentity], str] | None:
    """The patient pseudonym the receiver records per instance: the keyed value
    de-identification will give (no de-identification happens in the receiver)."""
    from dicom_nodes.deid.patient import receiver_pseudonym as make

    return make(settings)

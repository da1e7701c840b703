"""Ingest bookkeeping in PostgreSQL: one short transaction per received instance."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

import audit
from dicom_nodes.audit_events import instance_received
from dicom_nodes.errors import DatabaseUnavailable
from dicom_nodes.spool.inspect import DatasetIdentity
from dicom_nodes.spool.store import SpooledFile

__all__ = ["IngestRecorder", "PostgresIngest", "Receipt", "RecordOutcome"]

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


_RECORD_SQL = """
WITH existing AS (
    SELECT blake3 FROM ingest_instance WHERE sop_instance_uid = %(sop)s
), ins AS (
    INSERT INTO ingest_instance (
        sop_instance_uid, sop_class_uid, study_instance_uid, series_instance_uid, modality,
        transfer_syntax_uid, size_bytes, blake3, spool_path, calling_ae, called_ae,
        peer_address, peer_port, node, association_id)
    SELECT %(sop)s, %(cls)s, %(study)s, %(series)s, %(modality)s, %(ts)s, %(size)s, %(b3)s,
           %(path)s, %(calling)s, %(called)s, %(addr)s, %(port)s, %(node)s, %(assoc)s
    WHERE NOT EXISTS (SELECT 1 FROM existing)
    ON CONFLICT (sop_instance_uid) DO NOTHING
    RETURNING 1
), dup AS (
    INSERT INTO ingest_duplicate (
        sop_instance_uid, bytes_differ, blake3, size_bytes, spool_path, calling_ae, called_ae,
        peer_address, peer_port, node, association_id, note)
    SELECT %(sop)s, existing.blake3 <> %(b3)s, %(b3)s, %(size)s, %(path)s, %(calling)s,
           %(called)s, %(addr)s, %(port)s, %(node)s, %(assoc)s,
           CASE WHEN existing.blake3 <> %(b3)s
                THEN 're-sent with different bytes; kept as ' || %(path)s
                ELSE 're-sent with identical bytes' END
    FROM existing
    RETURNING bytes_differ
), prior_study AS (
    SELECT state FROM study WHERE study_instance_uid = %(study)s
), study_row AS (
    INSERT INTO study AS s (study_instance_uid)
    SELECT %(study)s WHERE EXISTS (SELECT 1 FROM ins)
    ON CONFLICT (study_instance_uid) DO UPDATE
        SET last_received_at = clock_timestamp(),
            state = 'receiving',
            increments = s.increments + (s.state = 'complete')::int
    RETURNING increments
), job AS (
    -- The job that routes what this node received: deferred in this same transaction, at most
    -- one waiting per node (procrastinate's queueing lock; a conflict means one is waiting).
    INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock, queueing_lock, args)
    SELECT %(queue)s, 'radiogate.route_received', 100, %(qlock)s, %(qlock)s,
           jsonb_build_object('node', %(node)s::text)
    WHERE EXISTS (SELECT 1 FROM ins)
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM ins), (SELECT bytes_differ FROM dup),
       (SELECT count(*) FROM study_row), (SELECT count(*) FROM job),
       coalesce((SELECT state = 'complete' FROM prior_study), false)
"""


def _received_event(
    identity: DatasetIdentity, receipt: Receipt, row: tuple[Any, ...]
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
    )


class PostgresIngest:
    """:class:`IngestRecorder` on a psycopg connection pool."""

    def __init__(self, pool: ConnectionPool, *, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout

    def record(
        self, identity: DatasetIdentity, spooled: SpooledFile, receipt: Receipt
    ) -> RecordOutcome:
        params = {
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
            "queue": f"node:{receipt.node}",
            "qlock": f"route:{receipt.node}",
        }
        last_error: Exception | None = None
        # Attempt 2 covers a pooled connection broken by a database restart; attempt 3 a
        # concurrent first insert of the same SOP Instance UID (then a duplicate).
        for _attempt in range(3):
            try:
                with self.pool.connection(timeout=self.timeout) as conn:
                    row = conn.execute(_RECORD_SQL, params).fetchone()
                    assert row is not None
                    if row[0] or row[1] is not None:
                        # The "received" audit event commits with the instance row.
                        audit.enqueue(conn, _received_event(identity, receipt, row))
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

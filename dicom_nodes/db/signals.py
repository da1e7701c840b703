"""What the receiver records besides instances: MPPS steps and the end of associations.

Both are signals that a series is complete (``dicom_nodes.pipeline.triage.complete_series``).
Writes are one short statement each, from the SCP's handlers; a write that fails is reported
to the caller (MPPS answers a failure status so the modality retries; an association end that
cannot be recorded only means the series waits for its quiet period).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Protocol

from psycopg_pool import ConnectionPool

__all__ = ["MppsRecorder", "PostgresSignals", "SignalRecorder"]

LOGGER = logging.getLogger(__name__)


class MppsRecorder(Protocol):
    def mpps_created(self, sop_uid: str, status: str, series: Sequence[str], calling: str) -> bool:
        """Record an N-CREATE; False when the instance exists already (PS3.4 F.7.2.1.1:
        0x0111 Duplicate SOP Instance)."""
        ...

    def mpps_set(self, sop_uid: str, status: str | None, series: Sequence[str]) -> str | None:
        """Apply an N-SET (new status, the series performed); returns the status the step had
        before (None: no such step)."""
        ...


class SignalRecorder(MppsRecorder, Protocol):
    def association_ended(self, association_id: uuid.UUID, released: bool) -> None: ...


class PostgresSignals:
    """:class:`SignalRecorder` on the receiver's connection pool."""

    def __init__(self, pool: ConnectionPool, node: str, timeout: float = 3.0) -> None:
        self.pool, self.node, self.timeout = pool, node, timeout

    def mpps_created(self, sop_uid: str, status: str, series: Sequence[str], calling: str) -> bool:
        with self.pool.connection(timeout=self.timeout) as conn:
            row = conn.execute(
                """INSERT INTO mpps (sop_instance_uid, node, status, series_uids, calling_ae)
                   VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1""",
                (sop_uid, self.node, status, list(series), calling),
            ).fetchone()
        return row is not None

    def mpps_set(self, sop_uid: str, status: str | None, series: Sequence[str]) -> str | None:
        with self.pool.connection(timeout=self.timeout) as conn, conn.transaction():
            row = conn.execute(
                "SELECT status FROM mpps WHERE sop_instance_uid = %s FOR UPDATE", (sop_uid,)
            ).fetchone()
            if row is None or row[0] != "IN PROGRESS":
                return None if row is None else str(row[0])
            conn.execute(
                """UPDATE mpps SET status = coalesce(%s, status),
                       series_uids = ARRAY(SELECT DISTINCT unnest(series_uids || %s::text[])),
                       updated_at = clock_timestamp()
                   WHERE sop_instance_uid = %s""",
                (status, list(series), sop_uid),
            )
        return str(row[0])

    def association_ended(self, association_id: uuid.UUID, released: bool) -> None:
        try:
            with self.pool.connection(timeout=self.timeout) as conn:
                conn.execute(
                    """INSERT INTO association_end (association_id, node, released)
                       VALUES (%s, %s, %s) ON CONFLICT DO NOTHING""",
                    (association_id, self.node, released),
                )
        except Exception as exc:
            LOGGER.warning("end of association %s not recorded: %s", association_id,
                           type(exc).__name__)  # fmt: skip

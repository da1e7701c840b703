"""Storage commitment requests and reports in PostgreSQL (PS3.4 J.3; migration 0006).

:class:`PostgresCommitmentSink` is the :class:`~dicom_nodes.forward.commitment.CommitmentSink`
that lets the SCP receive a report the worker waits for:

* the worker records its request (:meth:`~PostgresCommitmentSink.expect`, one committed row
  in ``commitment_request``) before it sends the N-ACTION;
* the SCP's report handler records the report (:meth:`~PostgresCommitmentSink.put`): one
  statement in one short transaction writes a ``commitment_result`` row per referenced
  instance (committed, or failed with its Failure Reason; reporting AE and address; the
  destination the transaction was asked of) and sends ``NOTIFY radiogate_commitment`` with
  the Transaction UID, delivered when it commits;
* the worker waits (:meth:`~PostgresCommitmentSink.wait`) on a connection of its own that
  listens on that channel (``LISTEN``), and re-reads the table every ``poll_interval``
  seconds as well, so a lost connection or a notification it could not see costs at most that
  much delay; the report it reads is marked taken (``commitment_request.taken_at``);
* a report nobody took still counts: :meth:`~PostgresCommitmentSink.committed_earlier` applies
  the reuse rule of :mod:`dicom_nodes.forward.commitment` to the results younger than
  ``retention``.

Clean-up: rows older than ``retention`` (default 7 days) are deleted by the worker, at most
once every ``purge_interval`` (default 10 minutes), when it next records a request.

Connections: the SCP passes its pool (a report is one pooled transaction); a worker passes
only the DSN and uses a short connection per call, plus one for each wait.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from dicom_nodes.errors import DatabaseUnavailable
from dicom_nodes.forward.commitment import CommitmentReport, latest_committed

__all__ = [
    "CHANNEL",
    "PURGE_INTERVAL",
    "RETENTION",
    "PostgresCommitmentSink",
]

LOGGER = logging.getLogger(__name__)

CHANNEL = "radiogate_commitment"
"""The NOTIFY channel; the payload is the Transaction UID of the report just recorded."""
RETENTION = 7 * 86400.0
"""Seconds requests and results are kept (and a late report still counts)."""
PURGE_INTERVAL = 600.0
"""Least seconds between two clean-ups by one worker process."""

_PUT_SQL = """
WITH request AS (
    UPDATE commitment_request SET reported_at = coalesce(reported_at, clock_timestamp())
    WHERE transaction_uid = %(tx)s
    RETURNING destination
), result AS (
    INSERT INTO commitment_result AS r (
        transaction_uid, sop_instance_uid, sop_class_uid, committed, failure_reason,
        event_type, destination, reporter_ae, reporter_address)
    SELECT %(tx)s, v.uid, v.cls, v.reason IS NULL, v.reason, %(event)s,
           coalesce((SELECT destination FROM request), ''), %(ae)s, %(addr)s
    FROM unnest(%(uids)s::text[], %(classes)s::text[], %(reasons)s::integer[])
         AS v(uid, cls, reason)
    ON CONFLICT (transaction_uid, sop_instance_uid) DO UPDATE SET
        sop_class_uid = EXCLUDED.sop_class_uid, committed = EXCLUDED.committed,
        failure_reason = EXCLUDED.failure_reason, event_type = EXCLUDED.event_type,
        reporter_ae = EXCLUDED.reporter_ae, reporter_address = EXCLUDED.reporter_address,
        received_at = clock_timestamp()
    RETURNING 1
)
SELECT (SELECT count(*) FROM result), (SELECT count(*) FROM request),
       pg_notify(%(channel)s, %(tx)s)
"""
"""A report in one statement: results upserted (a re-sent report replaces the first), the
request marked as answered, the waiting worker notified at commit."""

_EXPECT_SQL = """
INSERT INTO commitment_request (transaction_uid, destination, peer_ae, calling_ae, instance_count)
VALUES (%s, %s, %s, %s, %s)
"""

_LOAD_SQL = """
SELECT sop_instance_uid, sop_class_uid, failure_reason, event_type, reporter_ae,
       reporter_address, extract(epoch FROM received_at)::float8
FROM commitment_result WHERE transaction_uid = %s
"""

_TAKEN_SQL = """
UPDATE commitment_request SET taken_at = coalesce(taken_at, clock_timestamp())
WHERE transaction_uid = %s
"""

_EARLIER_SQL = """
SELECT extract(epoch FROM r.received_at)::float8, r.sop_instance_uid, r.sop_class_uid,
       r.committed, q.taken_at IS NOT NULL
FROM commitment_result r JOIN commitment_request q USING (transaction_uid)
WHERE q.destination = %s AND q.peer_ae = %s AND r.sop_instance_uid = ANY(%s)
  AND r.received_at > clock_timestamp() - make_interval(secs => %s)
"""

_PURGE_SQL = """
WITH results AS (
    DELETE FROM commitment_result
    WHERE received_at < clock_timestamp() - make_interval(secs => %(keep)s) RETURNING 1
), requests AS (
    DELETE FROM commitment_request
    WHERE requested_at < clock_timestamp() - make_interval(secs => %(keep)s) RETURNING 1
)
SELECT (SELECT count(*) FROM results), (SELECT count(*) FROM requests)
"""


class PostgresCommitmentSink:
    """:class:`~dicom_nodes.forward.commitment.CommitmentSink` on PostgreSQL (module doc)."""

    def __init__(
        self,
        dsn: str,
        *,
        pool: ConnectionPool | None = None,
        timeout: float = 5.0,
        poll_interval: float = 1.0,
        retention: float = RETENTION,
        purge_interval: float = PURGE_INTERVAL,
    ) -> None:
        self.dsn = dsn
        self.pool = pool
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.retention = retention
        self.purge_interval = purge_interval
        self._next_purge = 0.0
        self._purge_lock = threading.Lock()

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection whose work commits when the block ends without an exception."""
        try:
            if self.pool is not None:
                with self.pool.connection(timeout=self.timeout) as conn:
                    yield conn
            else:
                with psycopg.connect(self.dsn, connect_timeout=_seconds(self.timeout)) as conn:
                    yield conn
        except PoolTimeout as exc:
            raise DatabaseUnavailable("no database connection available") from exc
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"database error {type(exc).__name__}") from exc

    # -- the SCP's side ----------------------------------------------------------------

    def put(self, report: CommitmentReport) -> None:
        """Record *report* and notify waiters, in one transaction; raises
        :class:`~dicom_nodes.errors.DatabaseUnavailable` (then nothing is recorded)."""
        uids = [*report.committed, *report.failed]
        params = {
            "tx": report.transaction_uid,
            "event": int(report.event_type),
            "ae": report.reporter_ae,
            "addr": report.reporter_address,
            "uids": uids,
            "classes": [report.sop_classes.get(uid, "") for uid in uids],
            "reasons": [report.failed.get(uid) for uid in uids],
            "channel": CHANNEL,
        }
        with self._connection() as conn:
            row = conn.execute(_PUT_SQL, params).fetchone()
        if row is not None and not row[1]:
            LOGGER.warning(
                "storage commitment report %s from %s answers no request of ours "
                "(recorded, not used)",
                report.transaction_uid,
                report.reporter_ae,
            )

    # -- the worker's side -------------------------------------------------------------

    def expect(
        self,
        transaction_uid: str,
        destination: str,
        peer_ae: str,
        calling_ae: str,
        instances: Sequence[tuple[str, str]],
    ) -> None:
        """Record the request (committed before this returns), then clean up if due."""
        with self._connection() as conn:
            conn.execute(
                _EXPECT_SQL, (transaction_uid, destination, peer_ae, calling_ae, len(instances))
            )
        self._purge_if_due()

    def wait(self, transaction_uid: str, timeout: float) -> CommitmentReport | None:
        """The report for *transaction_uid* (then marked taken), or ``None`` after *timeout* s.

        LISTENs before it first reads the table, so a report recorded in between is seen
        either way; re-reads the table at least every ``poll_interval`` seconds; survives a
        lost connection by reconnecting until the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(
                    self.dsn, autocommit=True, connect_timeout=_seconds(self.timeout)
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while True:
                        report = _load(conn, transaction_uid)
                        if report is not None:
                            conn.execute(_TAKEN_SQL, (transaction_uid,))
                            return report
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return None
                        for note in conn.notifies(timeout=min(remaining, self.poll_interval)):
                            if note.payload == transaction_uid:
                                break
            except psycopg.Error as exc:
                LOGGER.warning(
                    "waiting for storage commitment report %s: database error %s",
                    transaction_uid,
                    type(exc).__name__,
                )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                time.sleep(min(remaining, self.poll_interval))

    def committed_earlier(
        self, destination: str, peer_ae: str, instances: Sequence[tuple[str, str]]
    ) -> set[str]:
        if not instances:
            return set()
        uids = sorted({uid for _cls, uid in instances})
        with self._connection() as conn:
            rows = conn.execute(
                _EARLIER_SQL, (destination, peer_ae, uids, self.retention)
            ).fetchall()
        return latest_committed(
            [(float(r[0]), str(r[1]), str(r[2]), bool(r[3]), bool(r[4])) for r in rows],
            instances,
        )

    def purge(self) -> tuple[int, int]:
        """Delete results and requests older than ``retention``; (results, requests) deleted."""
        with self._connection() as conn:
            row = conn.execute(_PURGE_SQL, {"keep": self.retention}).fetchone()
        assert row is not None
        results, requests = int(row[0]), int(row[1])
        if results or requests:
            LOGGER.info(
                "storage commitment: deleted %d results and %d requests older than %g days",
                results,
                requests,
                self.retention / 86400,
            )
        return results, requests

    def _purge_if_due(self) -> None:
        with self._purge_lock:
            now = time.monotonic()
            if now < self._next_purge:
                return
            self._next_purge = now + self.purge_interval
        try:
            self.purge()
        except DatabaseUnavailable as exc:
            LOGGER.warning("storage commitment clean-up skipped: %s", exc)


def _seconds(timeout: float) -> int:
    """libpq's connect_timeout: whole seconds, at least 2 (smaller values mean 2 anyway)."""
    return max(2, int(timeout + 0.999))


def _load(conn: psycopg.Connection[Any], transaction_uid: str) -> CommitmentReport | None:
    rows = conn.execute(_LOAD_SQL, (transaction_uid,)).fetchall()
    if not rows:
        return None
    committed = frozenset(str(r[0]) for r in rows if r[2] is None)
    failed = {str(r[0]): int(r[2]) for r in rows if r[2] is not None}
    return CommitmentReport(
        transaction_uid,
        committed,
        failed,
        {str(r[0]): str(r[1]) for r in rows},
        event_type=max(int(r[3]) for r in rows),
        reporter_ae=str(rows[0][4]),
        reporter_address=str(rows[0][5]),
        received_at=max(float(r[6]) for r in rows),
    )

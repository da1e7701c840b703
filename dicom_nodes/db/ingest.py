"""Ingest bookkeeping in PostgreSQL: one short transaction per received instance.

A new instance of a study that is not complete (nearly every receipt) is recorded by one
statement in autocommit, its audit event included (``INGEST_NEW_SQL``): one round trip where
BEGIN, the statement, the event and COMMIT took four. Any other receipt (a re-send, a late
arrival, a concurrent first insert) finds that statement wrote nothing and takes the
transaction below. Measured with ``bench/bench_receive.py --count 300 --reps 2 --baseline``
(2 cores, load average 4-6): with the spool's hash computed while writing, x1.46 img/s and
-21 % CPU per 10 KB instance over 1 association, x1.43 over 4, against the same code with the
four round trips, paired per round. Sending the event and the COMMIT together in psycopg's
pipeline mode instead cost more client CPU than the round trip it saved (0.37-0.41 ms against
0.28 ms per transaction, synchronous_commit off): not used.

The outcome of a COMMIT whose connection broke is unknown: the server may have committed before
the answer was lost. :meth:`PostgresIngest.record` never guesses it. Before trying again it
asks a fresh connection whether this receipt's row is there (by SOP Instance UID, BLAKE3 and
association); when no connection can be had it raises :class:`CommitOutcomeUnknown`, which the
SCP answers with 0xA700 (PS3.4 B.2.3) while keeping the spool file a committed row may name.

A re-send with different bytes follows ``scp.different_bytes``: with ``replace`` the new copy
takes the first one's place while the first is still ``received`` (not routed: nothing
downstream has seen it) and belongs to the same study and series; otherwise the first copy
stays. Either way the new copy is recorded in ``ingest_duplicate`` and audited (``received``
with reason ``replaced-unrouted-copy`` or ``resent-different-bytes``).

Once the first copy is archived (``released``: every destination confirmed it),
``scp.different_bytes_archived`` decides: ``keep`` as above; ``replace-in-archive`` or
``quarantine`` carry the new copy in the first one's place
(:func:`~dicom_nodes.state.repository.resend_archived`: the instance goes back to ``received``
and is routed again, its forward items renewed ``pending`` or held ``quarantined``), audited
``received`` with reason ``replaces-archived-copy`` or ``archived-copy-quarantined`` plus the
instance's ``rerouted`` event naming the decision.

A re-send (same or different bytes) of an instance whose spool file was lost (``missing``)
carries the re-send's copy in its place (:func:`~dicom_nodes.state.repository.restore_missing`:
``file-restored``, back to ``received``, routed again), audited ``received`` with reason
``restores-missing-copy``: the copy is never discarded as a duplicate of a file that is gone.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

import audit
from config import DifferentBytes, DifferentBytesArchived, Settings
from dicom_nodes.audit_events import instance_received, pipeline_sink, study_reopened
from dicom_nodes.errors import DatabaseUnavailable
from dicom_nodes.spool.inspect import DatasetIdentity
from dicom_nodes.spool.store import SpooledFile
from dicom_nodes.state.jobs import ROUTE_PRIORITY, ROUTE_TASK, queue_name, route_lock
from dicom_nodes.state.repository import (
    INGEST_NEW_SQL,
    INGEST_SQL,
    REPLACE_UNROUTED_SQL,
    RESTORED_NOTE,
    ArchivedCopyDecision,
    AuditEntry,
    AuditSink,
    resend_archived,
    restore_missing,
)

__all__ = [
    "CommitOutcomeUnknown",
    "IngestRecorder",
    "PostgresIngest",
    "Receipt",
    "RecordOutcome",
    "receiver_pseudonym",
]

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
    REPLACED = "replaced-unrouted-copy"
    """Different bytes that replaced an unrouted first copy (``replaced_path()`` names the
    first copy's file, which no row needs any more)."""
    RESENT_OVER_ARCHIVED = "resent-over-archived-copy"
    """Different bytes carried in place of an archived first copy (routed again; the new
    copy's file is the instance's now)."""
    RESTORED = "restored-missing-copy"
    """A re-send of an instance whose spool file was lost (``missing``): the new copy is the
    instance's file now, routed again (never discarded as a duplicate)."""


_DECISIONS = {
    DifferentBytesArchived.REPLACE_IN_ARCHIVE: ArchivedCopyDecision.REPLACE_IN_ARCHIVE,
    DifferentBytesArchived.QUARANTINE: ArchivedCopyDecision.QUARANTINE,
}
_ARCHIVED_REASONS = {
    ArchivedCopyDecision.REPLACE_IN_ARCHIVE: "replaces-archived-copy",
    ArchivedCopyDecision.QUARANTINE: "archived-copy-quarantined",
}


class CommitOutcomeUnknown(DatabaseUnavailable):
    """The connection broke during COMMIT and no connection could tell whether it committed:
    the spool file must be kept (a committed row may point to it)."""


_COMMITTED_SQL = """
SELECT i.blake3 = %(b3)s AND i.association_id = %(assoc)s AND i.spool_path = %(path)s,
       i.blake3 = %(b3)s,
       EXISTS (SELECT 1 FROM ingest_duplicate d
               WHERE d.sop_instance_uid = %(sop)s AND d.association_id = %(assoc)s
                 AND d.blake3 = %(b3)s)
FROM ingest_instance i WHERE i.sop_instance_uid = %(sop)s
"""
"""Whether a receipt's transaction committed: its instance row (inserted by this association
with these bytes) or its duplicate row."""


class IngestRecorder(Protocol):
    """Records a spooled instance durably (the database commit of the durability contract)."""

    def record(
        self, identity: DatasetIdentity, spooled: SpooledFile, receipt: Receipt
    ) -> RecordOutcome:
        """Record the instance; raise :class:`DatabaseUnavailable` when that is not possible
        (:class:`CommitOutcomeUnknown` when it may have been recorded)."""
        ...

    def replaced_path(self) -> str | None:
        """After :attr:`RecordOutcome.REPLACED` in this thread: the replaced copy's path."""
        ...

    def unreferenced(self, paths: list[str]) -> list[str]:
        """The spool *paths* no recorded row names (raise :class:`DatabaseUnavailable` when
        that cannot be known)."""
        ...


def _received_event(
    identity: DatasetIdentity,
    receipt: Receipt,
    row: tuple[Any, ...],
    patient: str | None,
    replaced: str | None = None,
) -> audit.AuditEvent:
    inserted, bytes_differ, reopened = row[0], row[1], row[4]
    reason = None
    if replaced:
        reason = replaced
    elif not inserted:
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


def _collect(into: list[AuditEntry]) -> AuditSink:
    """An audit sink that keeps the entries (appended after the receipt's own event)."""

    def sink(_conn: Any, entries: Any) -> None:
        into.extend(entries)

    return sink


class PostgresIngest:
    """:class:`IngestRecorder` on a psycopg connection pool."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        timeout: float,
        pseudonym: Callable[[DatasetIdentity], str] | None = None,
        different_bytes: DifferentBytes = DifferentBytes.REPLACE,
        different_bytes_archived: DifferentBytesArchived = DifferentBytesArchived.KEEP,
        study_touch: float = 0.0,
    ) -> None:
        self.pool = pool
        self.study_touch = study_touch
        """Seconds a receiving study's ``last_received_at`` may lag before a receipt moves it
        (``repository.study_touch_interval``; 0: every receipt writes the study row)."""
        self.timeout = timeout
        self.pseudonym = pseudonym
        """The patient's keyed pseudonym of an instance (recorded with it and in its audit
        event, so every event of the instance names the patient); None: not recorded."""
        self.different_bytes = different_bytes
        self.archived_decision = _DECISIONS.get(different_bytes_archived)
        """What a re-send over an archived first copy does (None: keep the archived copy)."""
        self._local = threading.local()

    def replaced_path(self) -> str | None:
        path: str | None = getattr(self._local, "replaced", None)
        return path

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
            "touch": self.study_touch,
        }
        last_error: Exception | None = None
        uncertain = False
        self._local.replaced = None
        # The common case (a new instance of a study that is not complete) first: one
        # statement in autocommit, so that the whole transaction is one round trip.
        try:
            if self._record_new(identity, receipt, params, patient):
                return RecordOutcome.NEW
        except psycopg.Error as exc:
            # Broken while the statement committed, or failed: find out before anything else.
            uncertain = True
            last_error = exc
        # Attempt 2 covers a pooled connection broken by a database restart; attempt 3 a
        # concurrent first insert of the same SOP Instance UID (then a duplicate).
        for _attempt in range(3):
            if uncertain:
                known = self._committed(params)
                if known is not None:
                    LOGGER.info("instance %s: the interrupted commit had committed",
                                identity.sop_instance_uid)  # fmt: skip
                    return known
                uncertain = False
            committing = False
            try:
                with self.pool.connection(timeout=self.timeout) as conn:
                    row = conn.execute(INGEST_SQL, params).fetchone()
                    assert row is not None
                    replaced = None
                    resent: ArchivedCopyDecision | None = None
                    if row[1] and self.different_bytes is DifferentBytes.REPLACE:
                        found = conn.execute(REPLACE_UNROUTED_SQL, params).fetchone()
                        replaced = None if found is None else str(found[0])
                    later: list[AuditEntry] = []  # after the "received" event
                    decision = self.archived_decision
                    if (
                        row[1] and replaced is None and decision is not None
                        and resend_archived(conn, _collect(later), params, decision)
                    ):  # fmt: skip
                        resent = decision
                    restored = (
                        row[1] is not None and replaced is None and resent is None
                        and restore_missing(conn, _collect(later), params)
                    )  # fmt: skip
                    if row[0] or row[1] is not None:
                        # The "received" audit event commits with the instance row.
                        reason = (
                            "replaced-unrouted-copy" if replaced is not None
                            else _ARCHIVED_REASONS[resent] if resent is not None
                            else RESTORED_NOTE if restored else None
                        )  # fmt: skip
                        audit.enqueue(
                            conn, _received_event(identity, receipt, row, patient, reason)
                        )
                    pipeline_sink(receipt.node, receipt.called_ae)(conn, later)
                    if row[0] and row[4]:
                        # The study was complete: this receipt is its late-arrival event.
                        audit.enqueue(
                            conn,
                            study_reopened(receipt.node, receipt.called_ae,
                                           identity.study_instance_uid),
                        )  # fmt: skip
                    committing = True
                    conn.commit()
            except PoolTimeout as exc:
                raise DatabaseUnavailable("no database connection available") from exc
            except psycopg.OperationalError as exc:
                # Broken during COMMIT: it may have committed; find out before anything else.
                uncertain = committing
                last_error = exc
                continue
            except psycopg.Error as exc:
                if committing:
                    uncertain = True
                    last_error = exc
                    continue
                raise DatabaseUnavailable(f"database error {type(exc).__name__}") from exc
            inserted, bytes_differ = row[0], row[1]
            if inserted:
                return RecordOutcome.NEW
            if replaced is not None:
                self._local.replaced = replaced
                return RecordOutcome.REPLACED
            if resent is not None:
                return RecordOutcome.RESENT_OVER_ARCHIVED
            if restored:
                return RecordOutcome.RESTORED
            if bytes_differ is not None:
                return (
                    RecordOutcome.DUPLICATE_DIFFERENT
                    if bytes_differ
                    else RecordOutcome.DUPLICATE_SAME
                )
        if uncertain:
            known = self._committed(params)
            if known is not None:
                return known
        raise DatabaseUnavailable(f"database unavailable ({type(last_error).__name__})")

    def _record_new(
        self,
        identity: DatasetIdentity,
        receipt: Receipt,
        params: dict[str, Any],
        patient: str | None,
    ) -> bool:
        """:data:`INGEST_NEW_SQL` with the instance's ``received`` event, committed on its own
        (autocommit): True when it recorded a new instance, False when it wrote nothing (not
        the common case). :class:`DatabaseUnavailable` when no connection can be had."""
        event = _received_event(identity, receipt, (1, None, 1, 1, False), patient)
        try:
            with self.pool.connection(timeout=self.timeout) as conn:
                conn.autocommit = True
                try:
                    row = conn.execute(INGEST_NEW_SQL, params | audit.enqueue_params(event))
                    found = row.fetchone()
                finally:
                    if not conn.closed:
                        conn.autocommit = False
        except PoolTimeout as exc:
            raise DatabaseUnavailable("no database connection available") from exc
        return bool(found and found[0])

    def _committed(self, params: dict[str, Any]) -> RecordOutcome | None:
        """The outcome of this receipt's transaction if it committed, None if it did not;
        :class:`CommitOutcomeUnknown` when no connection can tell."""
        try:
            with self.pool.connection(timeout=self.timeout) as conn:
                row = conn.execute(_COMMITTED_SQL, params).fetchone()
        except (PoolTimeout, psycopg.Error) as exc:
            raise CommitOutcomeUnknown(
                f"commit outcome unknown ({type(exc).__name__}); the spool file is kept"
            ) from exc
        if row is None:
            return None
        ours, same_bytes, duplicate = row
        if ours:
            return RecordOutcome.NEW
        if duplicate:
            return RecordOutcome.DUPLICATE_SAME if same_bytes else RecordOutcome.DUPLICATE_DIFFERENT
        return None

    def unreferenced(self, paths: list[str]) -> list[str]:
        try:
            with self.pool.connection(timeout=self.timeout) as conn:
                rows = conn.execute(_UNREFERENCED_SQL, {"paths": paths}).fetchall()
        except (PoolTimeout, psycopg.Error) as exc:
            raise DatabaseUnavailable(f"database unavailable ({type(exc).__name__})") from exc
        return [str(r[0]) for r in rows]


_UNREFERENCED_SQL = """
SELECT p FROM unnest(%(paths)s::text[]) AS p
WHERE NOT EXISTS (SELECT 1 FROM ingest_instance WHERE spool_path = p
                  AND state <> 'released' AND state <> 'purged')
  AND NOT EXISTS (SELECT 1 FROM ingest_duplicate WHERE spool_path = p AND bytes_differ)
  AND NOT EXISTS (SELECT 1 FROM deid_output WHERE spool_path = p)
"""
"""Spool paths no row needs: files of receipts that were never recorded, or identical
re-sends of instances whose spool copy is gone for good (released, purged). A ``missing``
row keeps its file: the row found no file once (a spool that was not mounted, say); a file
there now is its only copy. Used by the receivers' sweep of the files they marked and the
worker's sweep of old files (:func:`orphaned_paths`)."""

_NAMED_ELSEWHERE_SQL = """
SELECT EXISTS (SELECT 1 FROM ingest_instance
               WHERE node = %(node)s AND state <> 'released' AND state <> 'purged'
                 AND left(spool_path, %(n)s) <> %(root)s)
    OR EXISTS (SELECT 1 FROM ingest_duplicate
               WHERE node = %(node)s AND bytes_differ AND left(spool_path, %(n)s) <> %(root)s)
    OR EXISTS (SELECT 1 FROM deid_output d JOIN ingest_instance i USING (sop_instance_uid)
               WHERE i.node = %(node)s AND left(d.spool_path, %(n)s) <> %(root)s)
"""


def orphaned_paths(conn: psycopg.Connection[Any], paths: list[str]) -> list[str]:
    """The spool *paths* no row needs (:data:`_UNREFERENCED_SQL`), in this connection."""
    return [str(r[0]) for r in conn.execute(_UNREFERENCED_SQL, {"paths": paths}).fetchall()]


def named_elsewhere(conn: psycopg.Connection[Any], node: str, root: str) -> bool:
    """Whether a row of *node* that needs its file names it under another directory than
    *root* (a spool moved, or its path spelt differently): then a file's absence from the
    rows says nothing, since they are matched by path."""
    prefix = root.rstrip("/") + "/"
    row = conn.execute(_NAMED_ELSEWHERE_SQL, {"node": node, "n": len(prefix), "root": prefix})
    found = row.fetchone()
    return bool(found and found[0])


def receiver_pseudonym(settings: Settings) -> Callable[[DatasetIdentity], str] | None:
    """The patient pseudonym the receiver records per instance: the keyed value
    de-identification will give (no de-identification happens in the receiver)."""
    from dicom_nodes.deid.patient import receiver_pseudonym as make

    return make(settings)

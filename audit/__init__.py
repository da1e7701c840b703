"""Radiogate's tamper-evident audit trail: DICOM PS3.15 A.5 (IHE ATNA) events in PostgreSQL.

This package imports nothing else of Radiogate's except :mod:`config`.

Recording an event (e.g. in the SCP, in the transaction that records the instance)::

    import audit

    event = audit.AuditEvent(
        event_id=audit.EventID.INSTANCES_TRANSFERRED,   # or "110104"
        action=audit.EventAction.CREATE,                # or "C"
        step=audit.Step.RECEIVED,                       # or "received"
        participants=(
            audit.ActiveParticipant.application("CT1", address="10.0.0.5", requestor=True,
                                                role=audit.RoleID.SOURCE),
            audit.ActiveParticipant.application("RADIOGATE", role=audit.RoleID.DESTINATION),
        ),
        source=audit.AuditSource("node1"),
        objects=(audit.Study(study_uid, (series_uid,), (audit.Instance(sop_uid, class_uid),)),),
        outcome=audit.EventOutcome.SUCCESS,
    )
    with conn.transaction():           # psycopg 3 connection, the caller's transaction
        conn.execute(...)               # the state change the event describes
        seq, hash_ = audit.append(conn, event)   # last statement before commit

:func:`append` (and :func:`append_many` for several events) takes the head lock that
serialises all appends until the caller's transaction ends, so call it last. One round trip
when this process wrote the previous event, two otherwise (see :mod:`audit.store`). It raises
:class:`psycopg.Error` like any statement; the caller's error handling applies.

Throughput choice: the head lock is held through the caller's commit, so one-event
transactions with :func:`append` run at about one WAL flush each, serially (~1,000/s on the
2-core test machine). :func:`enqueue` / :func:`enqueue_many` (same arguments, no result) insert
into ``audit_pending`` without the lock — concurrent transactions commit together — and the
sealer in ``radiogate audit checkpoint --watch`` chains them within ``audit.seal_interval``
seconds (see :mod:`audit.sealer`). Use :func:`append` when the caller needs the sequence number
and hash at once, :func:`enqueue` for high-rate paths such as C-STORE.

Signed checkpoints: run ``radiogate audit checkpoint --watch`` beside the services, or call
:meth:`Checkpointer.maybe_checkpoint` on an idle connection now and then.

Database roles: migration ``audit/0001`` creates the NOLOGIN role ``radiogate_app`` (if the
migrating role may create roles) with SELECT on the audit tables, INSERT on
``audit_checkpoint`` and EXECUTE on ``audit_append()`` only: no UPDATE, DELETE or TRUNCATE,
and no direct INSERT into ``audit_event`` (the SECURITY DEFINER function keeps the head and the
chain consistent). Sites run migrations as the schema owner and the services as a login role
that is a member of it, e.g.::

    CREATE ROLE radiogate_scp LOGIN PASSWORD '...' IN ROLE radiogate_app;
    -- database.dsn = "host=db dbname=radiogate user=radiogate_scp"

The components owning other tables grant them to ``radiogate_app`` in their migrations.
"""

from __future__ import annotations

from audit.atna import to_atna_syslog, to_atna_xml
from audit.chain import GENESIS, chain_hashes, link_hash
from audit.checkpoint import (
    Checkpoint,
    Checkpointer,
    FileSink,
    SyslogSink,
    load_checkpoints,
    read_checkpoint_file,
    sign_checkpoint,
)
from audit.codes import (
    EventAction,
    EventID,
    EventOutcome,
    EventTypeCode,
    RoleID,
    Step,
    SystemObjectKind,
)
from audit.event import (
    ActiveParticipant,
    AuditEvent,
    AuditSource,
    Instance,
    ParticipantObject,
    Patient,
    QueryObject,
    Study,
    SystemObject,
)
from audit.identifiers import AuditEventError
from audit.keys import (
    Keyring,
    Signer,
    SigningKeyError,
    SigningKeyMissingError,
    generate_key,
    rotate_key,
)
from audit.query import AuditQuery, StoredEvent, audited_search, search
from audit.sealer import (
    ENQUEUE_SELECT_SQL,
    enqueue,
    enqueue_many,
    enqueue_params,
    pending_count,
    seal,
)
from audit.store import AppendResult, Head, append, append_many, read_head
from audit.syslog import SyslogSender, format_rfc5424
from audit.verify import Damage, DamageKind, VerifyReport, verify

__all__ = [
    "ENQUEUE_SELECT_SQL",
    "GENESIS",
    "ActiveParticipant",
    "AppendResult",
    "AuditEvent",
    "AuditEventError",
    "AuditQuery",
    "AuditSource",
    "Checkpoint",
    "Checkpointer",
    "Damage",
    "DamageKind",
    "EventAction",
    "EventID",
    "EventOutcome",
    "EventTypeCode",
    "FileSink",
    "Head",
    "Instance",
    "Keyring",
    "ParticipantObject",
    "Patient",
    "QueryObject",
    "RoleID",
    "Signer",
    "SigningKeyError",
    "SigningKeyMissingError",
    "Step",
    "StoredEvent",
    "Study",
    "SyslogSender",
    "SyslogSink",
    "SystemObject",
    "SystemObjectKind",
    "VerifyReport",
    "append",
    "append_many",
    "audited_search",
    "chain_hashes",
    "enqueue",
    "enqueue_many",
    "enqueue_params",
    "format_rfc5424",
    "generate_key",
    "link_hash",
    "load_checkpoints",
    "pending_count",
    "read_checkpoint_file",
    "read_head",
    "rotate_key",
    "seal",
    "search",
    "sign_checkpoint",
    "to_atna_syslog",
    "to_atna_xml",
    "verify",
]

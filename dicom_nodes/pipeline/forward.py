"""Stage 3, forward: send due ``pending`` items to their destination, one batch per round.

In one transaction a round claims a batch (one lane, most urgent first), sends it, records
each item's outcome as a forward-item event, confirms what was sent — a routine batch together
with earlier ones, several per query (:mod:`dicom_nodes.pipeline.confirm`) — and settles the
instances
(:mod:`dicom_nodes.pipeline.release`):

==========================  =====================  ========================================
outcome                     event                  then
==========================  =====================  ========================================
accepted (0x0000, warning)  sent                   confirmed now, or asked again later
no answer, busy, refused    retryable-failure      next attempt after a back-off (per item)
refused for good            permanent-failure      ``dead`` with the status; an admin decides
original file gone          cancelled              the instance is ``missing`` (terminal,
                                                   audited, counted); its other items are
                                                   cancelled too; never sent, never retried
copy missing or unreadable  permanent-failure      ``dead`` (``spool-file-missing`` /
                                                   ``deid-copy-missing`` /
                                                   ``unreadable-file``), never sent
==========================  =====================  ========================================

An item that cannot be sent never stops the others: failures back off per item, and an item
retrying cannot help is isolated as ``dead`` with its reason, so the rest of the destination's
queue keeps moving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from dicom_nodes.forward.model import OutgoingFile, SendResult
from dicom_nodes.pipeline import confirm, release
from dicom_nodes.pipeline.claims import ClaimedForward, claim_forwards, next_due, outgoing
from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.pipeline.metrics import observe
from dicom_nodes.state import (
    FORWARD,
    INSTANCE,
    Change,
    ForwardEvent,
    ForwardState,
    InstanceEvent,
)
from dicom_nodes.state import repository as repo
from dicom_nodes.state.jobs import defer_forward

__all__ = ["forward_round"]

LOGGER = logging.getLogger(__name__)


def forward_round(
    ctx: PipelineContext, destination: str, *, only: Sequence[str] | None = None
) -> int:
    """Send one batch of due items to *destination* (of *only* these SOP Instance UIDs when
    given); returns how many were claimed."""
    dest = ctx.destinations[destination]
    with ctx.pool.connection() as conn, conn.transaction():
        batch = claim_forwards(
            conn, ctx.node, destination, ctx.settings.batch_size, ctx.settings.wait_ceiling,
            only=only,
        )  # fmt: skip
        if not batch:
            _schedule_next(conn, ctx, destination)
            return 0
        sendable: list[tuple[ClaimedForward, OutgoingFile]] = []
        broken: list[tuple[ClaimedForward, str]] = []
        for item in batch:
            if item.spool_path is None:
                broken.append((item, "deid-copy-missing"))
            elif not item.spool_path.exists():
                broken.append((item, "spool-file-missing"))
            else:
                try:
                    sendable.append((item, outgoing(item)))
                except (OSError, ValueError):
                    broken.append((item, "unreadable-file"))
        gone = _originals_gone(conn, [item for item, r in broken if r == "spool-file-missing"])
        broken = [(item, r) for item, r in broken if item.sop_instance_uid not in gone]
        for item, reason in broken:
            LOGGER.error(
                "%s cannot be sent to %s (%s); it is held as dead for an admin",
                item.sop_instance_uid, destination, reason,
            )  # fmt: skip
        _mark_missing(conn, ctx, sorted(gone))
        started = time.perf_counter()
        results = _send(dest, [f for _, f in sendable]) if sendable else []
        observe("forward", started, len(sendable), ctx.node, destination)
        sent = _record(conn, ctx, sendable, results, broken)
        earlier = confirm.confirm_now(conn, ctx, destination, sent)
        release.settle(
            conn, ctx.audit, sorted({item.sop_instance_uid for item in batch} | set(earlier))
        )
    return len(batch)


def _originals_gone(conn: psycopg.Connection[Any], items: Sequence[ClaimedForward]) -> set[str]:
    """The instances among *items* whose original spool file is gone (nothing can be sent or
    de-identified again; a de-identified copy that vanished alone is not this)."""
    if not items:
        return set()
    rows = conn.execute(
        "SELECT sop_instance_uid, spool_path FROM ingest_instance WHERE sop_instance_uid = ANY(%s)",
        (sorted({i.sop_instance_uid for i in items}),),
    ).fetchall()
    return {str(uid) for uid, path in rows if not Path(path).exists()}


def _mark_missing(conn: psycopg.Connection[Any], ctx: PipelineContext, uids: list[str]) -> None:
    """Instances whose original vanished after routing: every item still open is cancelled
    (``spool-file-missing``) and the instance is ``missing``: terminal, audited, counted by
    ``radiogate_missing_instances``, never retried. Items another round holds are skipped
    (that round finds the file gone too); the instance moves once."""
    if not uids:
        return
    reason = {"reason": repo.FILE_MISSING_CANCEL}
    open_ = conn.execute(
        """SELECT sop_instance_uid, spool_path FROM ingest_instance
           WHERE sop_instance_uid = ANY(%s) AND state = ANY(%s)
           ORDER BY sop_instance_uid FOR UPDATE""",
        (uids, sorted(INSTANCE.transition(InstanceEvent.FILE_MISSING).sources)),
    ).fetchall()
    # Looked at again under the row lock: a re-send that put the file back before it was
    # recorded (as a duplicate of this routed row) leaves the instance to be sent as it is.
    gone = [str(uid) for uid, path in open_ if not Path(path).exists()]
    if not gone:
        return
    for uid in gone:
        LOGGER.error("spool file of %s vanished after routing; the instance is missing", uid)
    items = conn.execute(
        """SELECT sop_instance_uid, destination FROM forward_item
           WHERE sop_instance_uid = ANY(%s) AND state = ANY(%s)
           ORDER BY sop_instance_uid, destination FOR UPDATE SKIP LOCKED""",
        (gone, sorted(FORWARD.transition(ForwardEvent.CANCELLED).sources)),
    ).fetchall()
    repo.apply(conn, ctx.audit, FORWARD, ForwardEvent.CANCELLED,
               [Change((str(u), str(d)), reason) for u, d in items])  # fmt: skip
    repo.apply(conn, ctx.audit, INSTANCE, InstanceEvent.FILE_MISSING,
               [Change((uid,), reason) for uid in gone])  # fmt: skip
    release.delete_spool_copies(conn, gone)


def _send(dest: Any, files: Sequence[OutgoingFile]) -> list[SendResult]:
    """The destination's results, or retryable ones when it raised (it should not)."""
    try:
        return list(dest.send(files))
    except Exception as exc:
        LOGGER.exception("destination %s failed on a batch (%s)", dest.name, type(exc).__name__)
        return [
            SendResult(f.sop_instance_uid, None, ok=False, retryable=True, note=type(exc).__name__)
            for f in files
        ]


def _record(
    conn: psycopg.Connection[Any],
    ctx: PipelineContext,
    sendable: Sequence[tuple[ClaimedForward, OutgoingFile]],
    results: Sequence[SendResult],
    broken: Sequence[tuple[ClaimedForward, str]],
) -> list[tuple[ClaimedForward, OutgoingFile]]:
    """Every item's outcome as an event; returns the items that were sent."""
    by_uid = {r.sop_instance_uid: r for r in results}
    sent: list[tuple[ClaimedForward, OutgoingFile, SendResult]] = []
    retry: list[tuple[ClaimedForward, SendResult]] = []
    dead: list[tuple[ClaimedForward, int | None, str, str]] = [
        (item, None, reason, reason) for item, reason in broken
    ]
    for item, file in sendable:
        result = by_uid.get(file.sop_instance_uid) or SendResult(
            file.sop_instance_uid, None, ok=False, retryable=True, note="no result"
        )
        if result.ok:
            sent.append((item, file, result))
        elif result.retryable:
            retry.append((item, result))
        else:
            code = "send-refused" if result.status is None else f"status-{result.status:04x}"
            dead.append((item, result.status, result.note[:500], code))
            LOGGER.error(
                "forwarding %s to %s failed permanently (status %s): %s; "
                "`radiogate job retry` re-queues it",
                item.sop_instance_uid, item.destination, result.status, result.note,
            )  # fmt: skip
    repo.apply(
        conn, ctx.audit, FORWARD, ForwardEvent.SENT,
        [Change(i.key, {"status": r.status}) for i, _f, r in sent],
        values={
            "status": [r.status for _i, _f, r in sent],
            "note": [r.note for _i, _f, r in sent],
            "syntax": [r.sent_transfer_syntax for _i, _f, r in sent],
            "delay": [ctx.backoff(i.attempts + 1) for i, _f, _r in sent],
        },
    )  # fmt: skip
    repo.apply(
        conn, ctx.audit, FORWARD, ForwardEvent.RETRYABLE_FAILURE,
        [Change(i.key, {"status": r.status}) for i, r in retry],
        values={
            "status": [r.status for _i, r in retry],
            "error": [r.note[:500] for _i, r in retry],
            "delay": [ctx.backoff(i.attempts + 1) for i, _r in retry],
        },
    )  # fmt: skip
    repo.apply(
        conn, ctx.audit, FORWARD, ForwardEvent.PERMANENT_FAILURE,
        [Change(i.key, {"status": status, "reason": code}) for i, status, _e, code in dead],
        values={
            "status": [status for _i, status, _e, _c in dead],
            "error": [error for _i, _s, error, _c in dead],
            "reason": [code for _i, _s, _e, code in dead],
        },
    )  # fmt: skip
    return [(item, file) for item, file, _r in sent]


def _schedule_next(conn: psycopg.Connection[Any], ctx: PipelineContext, destination: str) -> None:
    """If items wait for a later attempt, defer a forwarding job for that moment."""
    due = next_due(conn, ctx.node, destination, ForwardState.PENDING)
    if due is not None:
        defer_forward(conn, ctx.node, destination, due[1], due[0])

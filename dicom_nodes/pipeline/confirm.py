"""Stage 4, confirm: ask the destination which sent items it holds (C-FIND query or Storage
Commitment, :meth:`dicom_nodes.forward.model.Destination.confirm`) before anything is released.

Right after a batch is sent, :func:`confirm_now` asks about it in the same transaction (a
routine batch together with the ones sent before it, see there); items the destination
confirms become ``confirmed``; the others stay ``sent`` until their next
attempt, when :func:`confirm_round` asks again: ``confirmed``, or ``not-confirmed`` back to
``pending`` (sent again: destinations are idempotent by SOP Instance UID). A destination that
cannot be asked (down, no report in time) changes no state; the items are asked again after a
back-off.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from dicom_nodes.forward.model import Instance, OutgoingFile
from dicom_nodes.pipeline import release
from dicom_nodes.pipeline.claims import (
    ClaimedForward,
    any_due,
    claim_sent,
    claim_unconfirmed,
    next_due,
    outgoing,
)
from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.pipeline.metrics import observe
from dicom_nodes.state import FORWARD, Change, ForwardEvent, ForwardState, Lane
from dicom_nodes.state import repository as repo
from dicom_nodes.state.jobs import defer_confirm, defer_forward

__all__ = ["ask", "confirm_now", "confirm_round"]

LOGGER = logging.getLogger(__name__)


def ask(
    ctx: PipelineContext, destination: str, sent: Sequence[tuple[ClaimedForward, OutgoingFile]]
) -> Mapping[tuple[str, str], bool] | None:
    """The destination's answer per item key, or None when it could not be asked."""
    if not sent:
        return {}
    started = time.perf_counter()
    try:
        answers = ctx.destinations[destination].confirm(
            [Instance(f.sop_class_uid, f.sop_instance_uid) for _, f in sent]
        )
    except Exception as exc:
        LOGGER.warning("confirmation from %s failed: %s", destination, type(exc).__name__)
        return None
    observe("confirm", started, len(sent), ctx.node, destination)
    return {item.key: bool(answers.get(f.sop_instance_uid)) for item, f in sent}


def confirm_now(
    conn: psycopg.Connection[Any],
    ctx: PipelineContext,
    destination: str,
    sent: Sequence[tuple[ClaimedForward, OutgoingFile]],
) -> list[str]:
    """Confirm a batch just sent, together with the items earlier routine rounds left
    ``sent``; what is not confirmed yet is asked about later. Returns the SOP Instance UIDs of
    the earlier rounds' items that were asked about (their instances need settling too).

    A routine batch is not asked about alone while more items wait to be sent: it waits for
    the next round, until ``pipeline.confirm_batches`` rounds' worth are asked in one query
    (the C-FIND takes up to :data:`~dicom_nodes.forward.query.UIDS_PER_QUERY` UIDs per
    request). A critical or urgent batch, and the last one of a backlog, are asked about at
    once; items no round takes along are asked about by :func:`confirm_round` when due."""
    if not sent:
        return []
    together = list(sent)
    earlier: list[ClaimedForward] = []
    batches = ctx.settings.confirm_batches
    if batches > 1 and min(item.lane.rank for item, _ in sent) >= Lane.ROUTINE.rank:
        limit = batches * ctx.settings.batch_size
        mine = {item.key for item, _ in sent}
        earlier = [
            item
            for item in claim_unconfirmed(conn, ctx.node, destination, limit)
            if item.key not in mine
        ]
        if len(sent) + len(earlier) < limit and any_due(conn, ctx.node, destination):
            _schedule_next(conn, ctx, destination)  # if no later round takes them along
            return []
        for item in earlier:
            with contextlib.suppress(OSError, ValueError):  # gone: asked again when due
                together.append((item, outgoing(item)))
    answers = ask(ctx, destination, together) or {}
    done = [item for item, _ in together if answers.get(item.key)]
    repo.apply(conn, ctx.audit, FORWARD, ForwardEvent.CONFIRMED, [Change(i.key) for i in done])
    if len(done) < len(together):
        _schedule_next(conn, ctx, destination)
    return sorted({item.sop_instance_uid for item in earlier})


def confirm_round(ctx: PipelineContext, destination: str) -> int:
    """Ask again about one batch of due ``sent`` items; returns how many were claimed."""
    with ctx.pool.connection() as conn, conn.transaction():
        batch = claim_sent(conn, ctx.node, destination, ctx.settings.batch_size)
        if not batch:
            _schedule_next(conn, ctx, destination)
            return 0
        sent: list[tuple[ClaimedForward, OutgoingFile]] = []
        lost: list[ClaimedForward] = []
        for item in batch:
            try:
                sent.append((item, outgoing(item)))
            except (OSError, ValueError):
                lost.append(item)  # its copy is gone: send again (forwarding isolates it)
        answers = ask(ctx, destination, sent)
        if answers is None:
            repo.defer_attempts(
                conn,
                [item.key for item, _ in sent],
                ctx.backoff(max(item.attempts for item, _ in sent)) if sent else 0.0,
                error="confirmation unavailable",
            )
            answers = {}
            sent = []
        done = [item for item, _ in sent if answers.get(item.key)]
        again = [item for item, _ in sent if not answers.get(item.key)] + lost
        repo.apply(conn, ctx.audit, FORWARD, ForwardEvent.CONFIRMED, [Change(i.key) for i in done])
        repo.apply(
            conn, ctx.audit, FORWARD, ForwardEvent.NOT_CONFIRMED,
            [Change(i.key, {"reason": "not-held-by-destination"}) for i in again],
            values={"delay": [ctx.backoff(i.attempts) for i in again]},
        )  # fmt: skip
        release.settle(conn, ctx.audit, sorted({item.sop_instance_uid for item in batch}))
        _schedule_next(conn, ctx, destination)
        if again:  # sent again once their back-off has passed
            due = next_due(conn, ctx.node, destination, ForwardState.PENDING)
            if due is not None:
                defer_forward(conn, ctx.node, destination, due[1], due[0])
    return len(batch)


def _schedule_next(conn: psycopg.Connection[Any], ctx: PipelineContext, destination: str) -> None:
    due = next_due(conn, ctx.node, destination, ForwardState.SENT)
    if due is not None:
        defer_confirm(conn, ctx.node, destination, due[0])

"""Claiming work: the rows a round works on, locked ``FOR UPDATE SKIP LOCKED`` in its transaction.

A round claims rows, does the work and records the outcome through
:mod:`dicom_nodes.state.repository` in one transaction: a worker killed in the middle leaves
nothing half-done; its rows are unlocked when PostgreSQL notices the dead connection and another
worker takes them (a destination receiving an instance twice is harmless; forwarding is
idempotent by SOP Instance UID). Nothing here writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from dicom_nodes.forward.model import OutgoingFile
from dicom_nodes.state.lanes import Lane

__all__ = [
    "ClaimedForward",
    "ReceivedInstance",
    "any_due",
    "claim_forwards",
    "claim_received",
    "claim_sent",
    "claim_unconfirmed",
    "next_due",
    "outgoing",
]

Conn = psycopg.Connection[Any]
_LANES = {lane.rank: lane for lane in Lane}


@dataclass(frozen=True)
class ReceivedInstance:
    """A received instance waiting to be routed, with the facts recorded at ingest."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    spool_path: Path
    calling_ae: str
    called_ae: str
    modality: str = ""
    series_instance_uid: str = ""
    received_at: dt.datetime | None = None
    patient_pseudonym: str | None = None
    size: int | None = None
    """Bytes of the spool file as recorded (None: not known)."""


def claim_received(
    conn: Conn,
    node: str,
    limit: int,
    *,
    only: Sequence[str] | None = None,
    skip: Collection[str] = (),
) -> list[ReceivedInstance]:
    """Up to *limit* instances of *node* in state ``received`` (of *only* these SOP Instance
    UIDs when given, never those in *skip*), all of one lane: those of studies already known
    to be critical, else urgent (an early triage decision raised the study's lane), else the
    rest; within the lane the associations that sent them take turns (the first waiting
    instance of each, oldest first, then the second of each, ...).

    Routing, with de-identification, is the costliest step before a lane is known: in strict
    arrival order a study sent behind a bulk transfer (a backlog of priors, a migration) would
    wait for all of it. Taking turns bounds that wait by the number of sending associations, not
    the size of the transfer, and an association still loses nothing of its own order. Once a
    study is known to be critical, the rest of it (and the triage SR and KOS made for it) is
    routed before anything else, so that it is complete, decided and archived first; a batch
    of its lane carries nothing else (routing, with de-identification, costs time per instance)."""
    rows = conn.execute(
        """WITH waiting AS (
               SELECT i.sop_instance_uid, i.received_at,
                      CASE s.lane WHEN 'critical' THEN 0 WHEN 'urgent' THEN 1 ELSE 2 END
                          AS lane_rank,
                      row_number() OVER (PARTITION BY i.association_id
                                         ORDER BY i.received_at) AS turn
               FROM ingest_instance i
               LEFT JOIN study s USING (study_instance_uid)
               WHERE i.node = %(node)s AND i.state = 'received'
                 AND (%(only)s::text[] IS NULL OR i.sop_instance_uid = ANY(%(only)s))
                 AND NOT i.sop_instance_uid = ANY(%(skip)s::text[])),
           chosen AS (
               SELECT sop_instance_uid FROM waiting
               WHERE lane_rank = (SELECT min(lane_rank) FROM waiting)
               ORDER BY turn, received_at
               LIMIT %(limit)s)
           SELECT i.sop_instance_uid, i.sop_class_uid, i.study_instance_uid,
                  i.transfer_syntax_uid, i.spool_path, i.calling_ae, i.called_ae, i.modality,
                  i.series_instance_uid, i.received_at, i.patient_pseudonym, i.size_bytes
           FROM ingest_instance i JOIN chosen USING (sop_instance_uid)
           WHERE i.state = 'received'
           ORDER BY i.received_at
           FOR UPDATE OF i SKIP LOCKED""",
        {
            "node": node,
            "limit": limit,
            "only": None if only is None else list(only),
            "skip": list(skip),
        },
    ).fetchall()
    return [
        ReceivedInstance(
            r[0], r[1], r[2], r[3], Path(r[4]), r[5], r[6], r[7], r[8], r[9], r[10], r[11]
        )
        for r in rows
    ]


@dataclass(frozen=True)
class ClaimedForward:
    """A forward item to send (or to ask about), with the file it stands for."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    spool_path: Path | None
    """The file to send: the instance as received, or its de-identified copy (``profile``);
    None when the item's profile has no recorded copy (it must never fall back to the
    original)."""
    destination: str
    lane: Lane
    attempts: int
    profile: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.sop_instance_uid, self.destination)


_ANY_TIME = """FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
           LEFT JOIN deid_output d
                  ON d.sop_instance_uid = f.sop_instance_uid AND d.profile = f.profile
           WHERE f.destination = %(destination)s AND f.state = %(state)s AND i.node = %(node)s"""
_ITEMS = _ANY_TIME + " AND f.next_attempt_at <= clock_timestamp()"

_COLUMNS = """f.sop_instance_uid, i.sop_class_uid, i.study_instance_uid,
              coalesce(d.transfer_syntax_uid, i.transfer_syntax_uid),
              CASE WHEN f.profile = '' THEN i.spool_path ELSE d.spool_path END,
              f.destination, f.lane_rank, f.attempts, f.profile"""


def _claimed(rows: list[tuple[Any, ...]]) -> list[ClaimedForward]:
    return [
        ClaimedForward(
            r[0], r[1], r[2], r[3], None if r[4] is None else Path(r[4]), r[5],
            _LANES[int(r[6])], int(r[7]), r[8],
        )
        for r in rows
    ]  # fmt: skip


def claim_forwards(
    conn: Conn,
    node: str,
    destination: str,
    limit: int,
    ceiling: float = 0.0,
    *,
    only: Sequence[str] | None = None,
) -> list[ClaimedForward]:
    """Due ``pending`` items for *destination* of the most urgent lane that has any, oldest first
    — except that items waiting longer than *ceiling* seconds (0: never) come first, whatever
    their lane, so that a stream of urgent work cannot starve the routine backlog. With
    *only*, the due items of these SOP Instance UIDs (a triage decision's SR and KOS).

    A batch holds one lane only: a batch is sent and confirmed as a whole, so a critical
    item in a batch filled up with routine ones would wait for all of them."""
    if only is not None:
        rows = conn.execute(
            f"""SELECT {_COLUMNS} {_ITEMS} AND f.sop_instance_uid = ANY(%(only)s)
                ORDER BY f.lane_rank, f.created_at LIMIT %(limit)s FOR UPDATE OF f SKIP LOCKED""",
            {"destination": destination, "state": "pending", "node": node, "limit": limit,
             "only": list(only)},
        ).fetchall()  # fmt: skip
        return _claimed(rows)
    rank = (
        "CASE WHEN %(ceiling)s > 0 AND f.created_at < clock_timestamp()"
        " - make_interval(secs => %(ceiling)s) THEN -1 ELSE f.lane_rank END"
    )
    params = {"destination": destination, "state": "pending", "node": node, "ceiling": ceiling,
              "limit": limit}  # fmt: skip
    head = conn.execute(
        f"SELECT {rank} {_ITEMS} ORDER BY {rank}, f.created_at LIMIT 1 FOR UPDATE OF f SKIP LOCKED",
        params,
    ).fetchone()
    if head is None:
        return []
    rows = conn.execute(
        f"""SELECT {_COLUMNS} {_ITEMS} AND {rank} = %(head)s
            ORDER BY f.created_at LIMIT %(limit)s FOR UPDATE OF f SKIP LOCKED""",
        {**params, "head": head[0]},
    ).fetchall()
    return _claimed(rows)


def claim_sent(conn: Conn, node: str, destination: str, limit: int) -> list[ClaimedForward]:
    """Due ``sent`` items for *destination*: sent, not confirmed yet, time to ask again."""
    rows = conn.execute(
        f"""SELECT {_COLUMNS} {_ITEMS}
            ORDER BY f.lane_rank, f.next_attempt_at LIMIT %(limit)s FOR UPDATE OF f SKIP LOCKED""",
        {"destination": destination, "state": "sent", "node": node, "limit": limit},
    ).fetchall()
    return _claimed(rows)


def claim_unconfirmed(conn: Conn, node: str, destination: str, limit: int) -> list[ClaimedForward]:
    """``sent`` items for *destination*, due or not (the ones a forwarding round confirms
    together with its own), oldest first; items another round holds are skipped."""
    rows = conn.execute(
        f"""SELECT {_COLUMNS} {_ITEMS.split("AND f.next_attempt_at", maxsplit=1)[0]}
            ORDER BY f.lane_rank, f.sent_at LIMIT %(limit)s FOR UPDATE OF f SKIP LOCKED""",
        {"destination": destination, "state": "sent", "node": node, "limit": limit},
    ).fetchall()
    return _claimed(rows)


def any_due(conn: Conn, node: str, destination: str) -> bool:
    """Whether *destination* has ``pending`` items due (another round may hold them)."""
    row = conn.execute(
        """SELECT 1 FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
           WHERE f.destination = %s AND f.state = 'pending' AND i.node = %s
             AND f.next_attempt_at <= clock_timestamp()
           LIMIT 1""",
        (destination, node),
    ).fetchone()
    return row is not None


def next_due(
    conn: Conn, node: str, destination: str, state: str
) -> tuple[dt.datetime, Lane] | None:
    """When the next item of *destination* in *state* is due, and the most urgent lane waiting."""
    row = conn.execute(
        """SELECT min(f.next_attempt_at), min(f.lane_rank)
           FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
           WHERE f.destination = %s AND f.state = %s AND i.node = %s""",
        (destination, state, node),
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return row[0], _LANES[int(row[1])]


def outgoing(item: ClaimedForward) -> OutgoingFile:
    """What to send for *item*: the original as recorded, or the copy as its own header says
    (a de-identified copy carries new UIDs). Raises OSError/ValueError for a file that is gone
    or unreadable."""
    if item.spool_path is None:
        raise FileNotFoundError(f"no de-identified copy of {item.sop_instance_uid} is recorded")
    if item.profile:
        return OutgoingFile.from_path(item.spool_path)
    return OutgoingFile(
        item.spool_path, item.sop_class_uid, item.sop_instance_uid, item.transfer_syntax_uid
    )

"""Routing claims against a real PostgreSQL: associations take turns, each keeps its order."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

from dicom_nodes.pipeline.claims import claim_received

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _received(
    conn: psycopg.Connection[Any], association: uuid.UUID, second: float, study: str = "1.2.3"
) -> str:
    uid = f"2.25.{uuid.uuid4().int}"
    conn.execute(
        """INSERT INTO ingest_instance (sop_instance_uid, sop_class_uid, study_instance_uid,
               series_instance_uid, transfer_syntax_uid, size_bytes, blake3, spool_path,
               calling_ae, called_ae, peer_address, peer_port, node, association_id,
               received_at)
           VALUES (%s, '1.2.840.10008.5.1.4.1.1.2', %s, %s || '.4', '1.2.840.10008.1.2.1',
                   1, %s, %s, 'CT1', 'RADIOGATE', '127.0.0.1', 1, 'node1', %s, %s)""",
        (
            uid,
            study,
            study,
            b"\0" * 32,
            f"/nowhere/{uid}.dcm",
            association,
            T0 + dt.timedelta(seconds=second),
        ),
    )
    return uid


def test_a_study_behind_a_bulk_transfer_takes_turns_with_it(fresh_dsn: str) -> None:
    bulk, study = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(fresh_dsn) as conn:
        backlog = [_received(conn, bulk, i) for i in range(100)]
        urgent = [_received(conn, study, 200 + i) for i in range(5)]
        first = [i.sop_instance_uid for i in claim_received(conn, "node1", 6)]
        # Three of each association, each association's own oldest first; in arrival order.
        assert first == [*backlog[:3], *urgent[:3]]
        conn.execute(
            "UPDATE ingest_instance SET state = 'routed' WHERE sop_instance_uid = ANY(%s)",
            (first,),
        )
        second = [i.sop_instance_uid for i in claim_received(conn, "node1", 6)]
        assert second == [*backlog[3:7], *urgent[3:5]]


def test_a_study_known_to_be_critical_goes_first(fresh_dsn: str) -> None:
    bulk, flagged, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(fresh_dsn) as conn:
        conn.execute("INSERT INTO study (study_instance_uid, lane) VALUES ('9.1', 'critical'), "
                     "('9.2', 'urgent'), ('9.3', 'routine')")  # fmt: skip
        backlog = [_received(conn, bulk, i, "9.3") for i in range(10)]
        urgent = [_received(conn, other, 20 + i, "9.2") for i in range(3)]
        critical = [_received(conn, flagged, 30 + i, "9.1") for i in range(3)]
        # One lane per batch, the most urgent first; a critical batch carries nothing else.
        batches = []
        for _lane in range(3):
            batch = [i.sop_instance_uid for i in claim_received(conn, "node1", 7)]
            batches.append(batch)
            conn.execute(
                "UPDATE ingest_instance SET state = 'routed' WHERE sop_instance_uid = ANY(%s)",
                (batch,),
            )
        assert batches == [critical, urgent, backlog[:7]]
        # A round for given instances takes only those (the triage job's SR and KOS).
        only = [i.sop_instance_uid for i in claim_received(conn, "node1", 7, only=[backlog[9]])]
        assert only == [backlog[9]]


def test_rows_locked_by_another_round_are_skipped(fresh_dsn: str) -> None:
    one = uuid.uuid4()
    with psycopg.connect(fresh_dsn) as setup:
        uids = [_received(setup, one, i) for i in range(4)]
    with psycopg.connect(fresh_dsn) as a, psycopg.connect(fresh_dsn) as b:
        taken = [i.sop_instance_uid for i in claim_received(a, "node1", 2)]
        assert taken == uids[:2]
        # b's choice includes a's locked rows; it skips them rather than wait or take twice.
        others = [i.sop_instance_uid for i in claim_received(b, "node1", 4)]
        assert others == uids[2:]

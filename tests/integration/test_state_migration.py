"""Migration 0005 brings rows written before the state model in line: instances stuck in
'routed' although nothing waits for a destination become held or cancelled, and the states no
longer used are mapped."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from dicom_nodes.db.migrate import available, migrate

pytestmark = pytest.mark.integration


def _migrate_before_state_model(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        """CREATE TABLE schema_migration (component text NOT NULL, version integer NOT NULL,
               name text NOT NULL, checksum text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"""
    )
    for mig in available():
        if mig.component == "ingest" and mig.version >= 5:
            continue
        conn.execute(mig.sql.encode())
        conn.execute(
            "INSERT INTO schema_migration VALUES (%s, %s, %s, %s)",
            (mig.component, mig.version, mig.name, mig.checksum),
        )


def _instance(conn: psycopg.Connection[Any], state: str, items: list[str]) -> str:
    uid = f"2.25.{uuid.uuid4().int}"
    conn.execute(
        """INSERT INTO ingest_instance (sop_instance_uid, sop_class_uid, study_instance_uid,
               series_instance_uid, transfer_syntax_uid, size_bytes, blake3, spool_path,
               calling_ae, called_ae, peer_address, peer_port, node, association_id, state)
           VALUES (%s, '1.2.3', '1.2.3.1', '1.2.3.2', '1.2.840.10008.1.2.1', 1, %s, '/x',
                   'CT1', 'RG', '127.0.0.1', 1, 'node1', %s, %s)""",
        (uid, b"\0" * 32, uuid.uuid4(), state),
    )
    for index, item in enumerate(items):
        conn.execute(
            """INSERT INTO forward_item (sop_instance_uid, destination, lane_rank, state,
                   last_status) VALUES (%s, %s, 2, %s, %s)""",
            (uid, f"d{index}", item, 0xA900 if item == "dead" else None),
        )
    return uid


def test_rows_stuck_in_routed_are_backfilled(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn) as admin:
        admin.execute("DROP SCHEMA public CASCADE")
        admin.execute("CREATE SCHEMA public")
        admin.commit()
    with psycopg.connect(fresh_dsn) as conn:
        _migrate_before_state_model(conn)
        cases = {
            "quarantined": _instance(conn, "routed", ["quarantined"]),
            "dead-and-confirmed": _instance(conn, "routed", ["dead", "confirmed"]),
            "cancelled": _instance(conn, "routed", ["cancelled", "confirmed"]),
            "waiting": _instance(conn, "routed", ["pending", "quarantined"]),
            "forwarded": _instance(conn, "forwarded", ["sent"]),
            "confirmed": _instance(conn, "confirmed", ["confirmed"]),
        }
        conn.commit()
        assert "ingest/0005_state_model.sql" in migrate(conn)
        states: dict[str, str] = dict(
            conn.execute("SELECT sop_instance_uid, state FROM ingest_instance")
        )
        reasons: dict[str, str] = dict(
            conn.execute("SELECT state, hold_reason FROM forward_item WHERE hold_reason <> ''")
        )
    got = {name: states[uid] for name, uid in cases.items()}
    assert got == {
        "quarantined": "held",
        "dead-and-confirmed": "held",
        "cancelled": "cancelled",
        "waiting": "routed",
        "forwarded": "routed",
        "confirmed": "routed",  # released by the worker, which deletes its spool copy
    }
    assert reasons == {"quarantined": "unrecorded", "dead": "status-a900"}

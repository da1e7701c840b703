"""The receiver's ingest statements on a real PostgreSQL: receipts of one study do not queue
on its study row, and the study row still records what it must."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from blake3 import blake3

import audit
from dicom_nodes.audit_events import instance_received
from dicom_nodes.state.jobs import ROUTE_PRIORITY, ROUTE_TASK, queue_name, route_lock
from dicom_nodes.state.repository import INGEST_NEW_SQL, INGEST_SQL

pytestmark = pytest.mark.integration

STUDY = "1.2.826.0.1.3680043.8.498.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _params(sop: str, touch: float = 60.0) -> dict[str, Any]:
    return {
        "patient": "PSEUDO-0042", "sop": sop, "cls": CT, "study": STUDY,
        "series": STUDY + ".1", "modality": "CT", "ts": "1.2.840.10008.1.2.1", "size": 10,
        "b3": blake3(sop.encode()).digest(), "path": f"/spool/{sop}.dcm", "calling": "CT1",
        "called": "RADIOGATE", "addr": "127.0.0.1", "port": 4000, "node": "node1",
        "assoc": uuid.uuid4(), "queue": queue_name("node1"), "qlock": route_lock("node1"),
        "task": ROUTE_TASK, "priority": ROUTE_PRIORITY, "touch": touch,
    }  # fmt: skip


def _with_event(params: dict[str, Any]) -> dict[str, Any]:
    event = instance_received(
        node="node1", calling_ae="CT1", called_ae="RADIOGATE", peer_address="127.0.0.1",
        study_uid=STUDY, series_uid=STUDY + ".1", sop_uid=params["sop"], sop_class_uid=CT,
        reason=None, patient="PSEUDO-0042",
    )  # fmt: skip
    return params | audit.enqueue_params(event)


def test_receipts_of_one_study_do_not_wait_for_each_others_commit(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn) as first, psycopg.connect(fresh_dsn) as second:
        first.execute(INGEST_SQL, _params(STUDY + ".1.1"))
        first.commit()  # the study exists
        row = first.execute(INGEST_SQL, _params(STUDY + ".1.2")).fetchone()
        assert row is not None and row[0] == 1  # recorded, not committed yet
        # A receipt that had to wait for the first transaction's locks fails here instead.
        second.execute("SET lock_timeout = '5s'")
        row = second.execute(INGEST_SQL, _params(STUDY + ".1.3")).fetchone()
        assert row is not None and row[0] == 1
        second.commit()
        first.commit()
        count = first.execute("SELECT count(*) FROM ingest_instance").fetchone()
        assert count is not None and count[0] == 3


def test_a_stale_study_row_is_touched_and_a_complete_one_reopened(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn) as conn:
        conn.execute(INGEST_SQL, _params(STUDY + ".2.1"))
        conn.execute("UPDATE study SET last_received_at = now() - interval '1 hour'")
        conn.commit()
        conn.execute(INGEST_SQL, _params(STUDY + ".2.2"))
        conn.commit()
        fresh = conn.execute(
            "SELECT last_received_at > now() - interval '10 minutes' FROM study"
        ).fetchone()
        assert fresh == (True,)
        conn.execute("UPDATE study SET state = 'complete'")
        conn.commit()
        row = conn.execute(INGEST_SQL, _params(STUDY + ".2.3")).fetchone()
        assert row is not None and row[4]  # the receiver appends study-reopened for it
        conn.commit()
        state = conn.execute("SELECT state, increments FROM study").fetchone()
        assert state == ("receiving", 1)


def test_the_one_statement_form_takes_only_the_common_case(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        new = _with_event(_params(STUDY + ".3.1"))
        assert conn.execute(INGEST_NEW_SQL, new).fetchone() == (1,)
        # A re-send, or any receipt of a complete study, is left to INGEST_SQL.
        assert conn.execute(INGEST_NEW_SQL, new).fetchone() == (0,)
        conn.execute("UPDATE study SET state = 'complete'")
        late = _with_event(_params(STUDY + ".3.2"))
        assert conn.execute(INGEST_NEW_SQL, late).fetchone() == (0,)
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM ingest_instance), (SELECT count(*) FROM audit_pending"
            " WHERE step = 'received'), (SELECT count(*) FROM procrastinate_jobs)"
        ).fetchone()
        assert counts == (1, 1, 1)  # the instance, its event and its routing job, once

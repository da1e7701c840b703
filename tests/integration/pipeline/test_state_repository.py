"""The repository against a real PostgreSQL, driven by the transition tables: every allowed
transition works and appends exactly one audit event of its step; every other one raises and
changes nothing; the CHECK constraints accept exactly the enums' states."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from dicom_nodes.audit_events import pipeline_sink
from dicom_nodes.state import FORWARD, INSTANCE, STUDY, Change, InvalidTransition
from dicom_nodes.state import repository as repo
from dicom_nodes.state.model import (
    ALERT,
    ANALYSIS,
    DELIVERY,
    MACHINES,
    SERIES,
    TRIAGE,
    Machine,
)

pytestmark = pytest.mark.integration

SAMPLE = {"route": "r", "lane": "routine", "status": 0, "note": "", "delay": 1.0,
          "syntax": "1.2.840.10008.1.2.1", "error": "e", "reason": "test", "by": "test",
          "rule_lane": "routine", "model_lane": None, "score": 0.5, "quality": "complete",
          "reasons": "[]", "flagged": "[]", "early": False, "rank": 2, "profile": ""}  # fmt: skip
SINK = pipeline_sink("node1", "RADIOGATE")


@pytest.fixture
def conn(fresh_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(fresh_dsn) as c:
        yield c


def _instance(conn: psycopg.Connection[Any], state: str = "routed") -> str:
    uid = f"2.25.{uuid.uuid4().int}"
    conn.execute(
        """INSERT INTO ingest_instance (sop_instance_uid, sop_class_uid, study_instance_uid,
               series_instance_uid, transfer_syntax_uid, size_bytes, blake3, spool_path,
               calling_ae, called_ae, peer_address, peer_port, node, association_id, state)
           VALUES (%s, '1.2.840.10008.5.1.4.1.1.2', '1.2.3', '1.2.3.4', '1.2.840.10008.1.2.1',
                   1, %s, %s, 'CT1', 'RADIOGATE', '127.0.0.1', 1, 'node1', %s, %s)""",
        (uid, b"\0" * 32, f"/nowhere/{uid}.dcm", uuid.uuid4(), state),
    )
    return uid


def _row(conn: psycopg.Connection[Any], machine: Machine[Any, Any], state: str) -> tuple[str, ...]:
    """A row of *machine* in *state* (written directly: this is the test's fixture)."""
    if machine is INSTANCE:
        return (_instance(conn, state),)
    if machine is FORWARD:
        uid = _instance(conn)
        conn.execute(
            """INSERT INTO forward_item (sop_instance_uid, destination, lane_rank, state)
               VALUES (%s, 'archive', 2, %s)""",
            (uid, state),
        )
        return (uid, "archive")
    if machine is SERIES or machine is TRIAGE:
        uid = f"2.25.{uuid.uuid4().int}"
        conn.execute(
            """INSERT INTO series (series_instance_uid, study_instance_uid, node, state)
               VALUES (%s, '1.2.3', 'node1', %s)""",
            (uid, state if machine is SERIES else "complete"),
        )
        if machine is TRIAGE:
            conn.execute(
                """INSERT INTO series_triage (series_instance_uid, study_instance_uid, node,
                       state) VALUES (%s, '1.2.3', 'node1', %s)""",
                (uid, state),
            )
        return (uid,)
    if machine is ANALYSIS:
        uid = f"2.25.{uuid.uuid4().int}"
        conn.execute(
            """INSERT INTO series (series_instance_uid, study_instance_uid, node)
               VALUES (%s, '1.2.3', 'node1')""",
            (uid,),
        )
        conn.execute(
            """INSERT INTO series_analysis (analysis_id, series_instance_uid,
                   study_instance_uid, node, pipeline, state)
               VALUES (%s, %s, '1.2.3', 'node1', 'chest-ct', %s)""",
            (uid + ":chest-ct", uid, state),
        )
        return (uid + ":chest-ct",)
    if machine is ALERT or machine is DELIVERY:
        alert_id = uuid.uuid4().hex[:16]
        conn.execute(
            """INSERT INTO alert (alert_id, alert_key, node, study_instance_uid, category,
                   payload, escalate_at, state)
               VALUES (%s, %s, 'node1', '1.2.3', 1, '{}', now(), %s)""",
            (alert_id, alert_id, state if machine is ALERT else "open"),
        )
        if machine is ALERT:
            return (alert_id,)
        conn.execute(
            """INSERT INTO alert_delivery (delivery_id, alert_id, target, level, state)
               VALUES (%s, %s, 'pager', 0, %s)""",
            (f"{alert_id}:0:pager", alert_id, state),
        )
        return (f"{alert_id}:0:pager",)
    uid = f"2.25.{uuid.uuid4().int}"
    conn.execute("INSERT INTO study (study_instance_uid, state) VALUES (%s, %s)", (uid, state))
    return (uid,)


def _state(conn: psycopg.Connection[Any], machine: Machine[Any, Any], key: tuple[str, ...]) -> str:
    where = " AND ".join(f"{k} = %s" for k in machine.keys)
    row = conn.execute(f"SELECT state FROM {machine.table} WHERE {where}", key).fetchone()
    assert row is not None
    return str(row[0])


def _events(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT body FROM audit_pending ORDER BY id").fetchall()
    return [json.loads(bytes(r[0])) for r in rows]


CASES = [
    pytest.param(machine, state, event, id=f"{machine.name}:{state}:{event}")
    for machine in MACHINES
    for state, event in itertools.product(machine.states, machine.events)
    # made by the SQL function the archive plugin shares (tests/integration/alerts/
    # test_ack_function.py drives it through the same table)
    if (machine.name, str(event)) not in repo._BY_FUNCTION
]


@pytest.mark.parametrize(("machine", "state", "event"), CASES)
def test_table_driven(
    conn: psycopg.Connection[Any], machine: Machine[Any, Any], state: Any, event: Any
) -> None:
    key = _row(conn, machine, state.value)
    conn.commit()
    rule = machine.transition(event)
    values = {name: [SAMPLE[name]] for name in repo.value_names(machine, event)}
    before = len(_events(conn))
    if state in rule.sources:
        with conn.transaction():
            count = repo.apply(conn, SINK, machine, event, [Change(key)], values=values)
        assert count == 1
        assert _state(conn, machine, key) == rule.target.value
        events = _events(conn)[before:]
        assert len(events) == 1, events
        assert events[0]["step"] == rule.step.value
    else:
        with pytest.raises(InvalidTransition, match=f"is {state.value}"), conn.transaction():
            repo.apply(conn, SINK, machine, event, [Change(key)], values=values)
        assert _state(conn, machine, key) == state.value
        assert len(_events(conn)) == before


def test_a_batch_with_one_wrong_row_changes_nothing(conn: psycopg.Connection[Any]) -> None:
    good = [_row(conn, FORWARD, "pending") for _ in range(3)]
    bad = _row(conn, FORWARD, "confirmed")
    conn.commit()
    changes = [Change(k) for k in [*good, bad]]
    values = {n: [SAMPLE[n]] * 4 for n in repo.value_names(FORWARD, "sent")}
    with pytest.raises(InvalidTransition, match="1 not in"), conn.transaction():
        repo.apply(conn, SINK, FORWARD, FORWARD.events("sent"), changes, values=values)
    assert {_state(conn, FORWARD, k) for k in good} == {"pending"}
    assert _events(conn) == []


def test_unknown_rows_raise(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(InvalidTransition, match="absent"), conn.transaction():
        repo.apply(conn, SINK, STUDY, STUDY.events("study-quiet"), [Change(("9.9.9",))],
                   values={"by": ["x"]})  # fmt: skip


def test_missing_values_are_refused_before_any_sql(conn: psycopg.Connection[Any]) -> None:
    key = _row(conn, INSTANCE, "received")
    with pytest.raises(ValueError, match="needs values"):
        repo.apply(conn, SINK, INSTANCE, INSTANCE.events("routed"), [Change(key)])


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_check_constraint_mirrors_the_enum(
    conn: psycopg.Connection[Any], machine: Machine[Any, Any]
) -> None:
    for state in machine.states:
        _row(conn, machine, state.value)
    conn.commit()
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        _row(conn, machine, "no-such-state")

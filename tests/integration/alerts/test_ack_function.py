"""Acknowledging an alert has one writer, ``radiogate_acknowledge_alert()`` (migration 0019),
shared by the state repository and the archive plugin. Applied to an alert in every state with
a delivery in every state, against a real PostgreSQL, it changes exactly what the ALERT and
DELIVERY tables allow — so the function and the tables cannot drift apart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import pytest

from dicom_nodes.state.model import (
    ALERT,
    DELIVERY,
    AlertEvent,
    AlertState,
    DeliveryEvent,
    DeliveryState,
    Machine,
)
from dicom_nodes.state.repository import (
    AlertNotOpen,
    AuditEntry,
    Change,
    acknowledge_alert,
    apply,
)

pytestmark = pytest.mark.integration
STUDY = "1.2.826.0.1.3680043.8.498.7"


class Recorded:
    """An audit sink that keeps what it was given (the real one is tested with the CLI)."""

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    def __call__(self, _conn: Any, entries: Sequence[AuditEntry]) -> None:
        self.entries += entries


def _seed(conn: psycopg.Connection[Any], alert_id: str, state: AlertState) -> None:
    conn.execute(
        """INSERT INTO alert (alert_id, alert_key, node, study_instance_uid, category, payload,
               state, escalate_at) VALUES (%s, %s, 'node1', %s, 1, '{}', %s, clock_timestamp())""",
        (alert_id, alert_id, STUDY, state.value),
    )
    for delivery in DeliveryState:
        conn.execute(
            """INSERT INTO alert_delivery (delivery_id, alert_id, target, level, state)
               VALUES (%s, %s, %s, 0, %s)""",
            (f"{alert_id}:{delivery.value}", alert_id, f"to-{delivery.value}", delivery.value),
        )


@pytest.mark.parametrize("state", list(AlertState))
def test_the_function_makes_exactly_the_tables_transitions(
    fresh_dsn: str, state: AlertState
) -> None:
    ack = ALERT.transition(AlertEvent.ACKNOWLEDGED)
    cancel = DELIVERY.transition(DeliveryEvent.CANCELLED)
    with psycopg.connect(fresh_dsn) as conn:
        conn.execute(
            """INSERT INTO study (study_instance_uid, state, lane, first_received_at,
                   last_received_at, patient_pseudonym)
               VALUES (%s, 'complete', 'critical', now(), now(), 'RG0123456789ABCDEF')""",
            (STUDY,),
        )
        _seed(conn, "a1", state)
        sink = Recorded()
        if state in ack.sources:
            assert acknowledge_alert(conn, sink, "a1", "dr-house") == sum(
                d in cancel.sources for d in DeliveryState
            )
        else:
            with pytest.raises(AlertNotOpen) as refused:
                acknowledge_alert(conn, sink, "a1", "dr-house")
            assert refused.value.state == state.value
        alert = conn.execute("SELECT state, acknowledged_by FROM alert").fetchone()
        deliveries: dict[str, str] = dict(
            conn.execute("SELECT target, state FROM alert_delivery").fetchall()
        )
    moved = state in ack.sources
    assert alert == ((ack.target.value, "dr-house") if moved else (state.value, ""))
    assert deliveries == {
        f"to-{d.value}": (cancel.target.value if moved and d in cancel.sources else d.value)
        for d in DeliveryState
    }
    expected = (
        [(cancel.step, f"to-{d.value}") for d in DeliveryState if d in cancel.sources]
        + [(ack.step, None)]
        if moved
        else []
    )
    assert [(e.step, e.details.get("destination")) for e in sink.entries] == expected
    assert all(e.user == "dr-house" and e.details["study_instance_uid"] == STUDY
               and e.details["patient"] == "RG0123456789ABCDEF" for e in sink.entries)  # fmt: skip


def test_an_unknown_alert_raises_and_apply_refuses_the_event(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn) as conn:
        with pytest.raises(AlertNotOpen) as refused:
            acknowledge_alert(conn, Recorded(), "feedfeedfeedfeed", "dr-house")
        assert refused.value.state is None and "absent" in str(refused.value)
        _seed(conn, "a2", AlertState.OPEN)
        refused_events: list[tuple[Machine[Any, Any], object, tuple[str, ...]]] = [
            (ALERT, AlertEvent.ACKNOWLEDGED, ("a2",)),
            (DELIVERY, DeliveryEvent.CANCELLED, ("a2:pending",)),
        ]
        for machine, event, key in refused_events:
            with pytest.raises(ValueError, match="acknowledge_alert"):
                apply(conn, Recorded(), machine, event, [Change(key)], user="x")
        assert conn.execute("SELECT state FROM alert").fetchone() == ("open",)

"""``radiogate_acknowledge_alert()`` (migration 0018) makes the transitions the state tables
define for acknowledging: ALERT ``acknowledged`` and DELIVERY ``cancelled``, from their sources."""

from __future__ import annotations

import re
from pathlib import Path

from dicom_nodes.state.model import ALERT, DELIVERY, AlertEvent, DeliveryEvent

SQL = (Path(__file__).resolve().parents[3] / "dicom_nodes/db/migrations/0018_pacs.sql").read_text()
BODY = SQL.split("CREATE FUNCTION radiogate_acknowledge_alert", 1)[1]


def _update(table: str) -> str:
    match = re.search(rf"UPDATE {table} \w+ SET (.*?);", BODY, re.S)
    assert match, table
    return match.group(1)


def test_alert_transition_matches_the_table() -> None:
    rule = ALERT.transition(AlertEvent.ACKNOWLEDGED)
    update = _update("alert")
    assert f"state = '{rule.target.value}'" in update
    assert [s.value for s in rule.sources] == ["open"]
    assert "a.state = 'open'" in update and "IF v_state <> 'open'" in BODY
    assert "acknowledged_by = p_user" in update and "state_changed_at" in update


def test_delivery_transition_matches_the_table() -> None:
    rule = DELIVERY.transition(DeliveryEvent.CANCELLED)
    update = _update("alert_delivery")
    assert f"state = '{rule.target.value}'" in update
    assert {s.value for s in rule.sources} == {"pending"}
    assert "d.state = 'pending'" in update

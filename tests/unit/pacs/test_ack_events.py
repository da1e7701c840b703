"""An alert acknowledged from the viewer side is recorded as ``radiogate alert ack`` records it:
the plugin's events equal the pipeline's events of the state repository's entries."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from audit import AuditEvent, Step
from dicom_nodes.audit_events import pipeline_event
from dicom_nodes.state import repository
from dicom_nodes.state.repository import acknowledgement_entries
from pacs_plugin import queries
from pacs_plugin.events import ack_events

WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _at(events: list[AuditEvent]) -> list[AuditEvent]:
    return [dataclasses.replace(e, time=WHEN) for e in events]


@pytest.mark.parametrize("patient", [None, "RG0123456789ABCDEF"])
@pytest.mark.parametrize("cancelled", [[], ["reading-room", "oncall"]])
def test_plugin_events_equal_the_repository_events(
    patient: str | None, cancelled: list[str]
) -> None:
    entries = acknowledgement_entries("1.2.3.4", patient, cancelled, "alice")
    expected = [pipeline_event("node1", "RADIOGATE", e) for e in entries]
    ours = ack_events("node1", "RADIOGATE", "alice", None, study_uid="1.2.3.4",
                      patient=patient, cancelled=cancelled)  # fmt: skip
    assert _at(ours) == _at(expected)
    assert [e.step for e in ours] == [Step.CANCELLED] * len(cancelled) + [Step.ALERT_ACKNOWLEDGED]


def test_the_requesters_address_is_added_when_known() -> None:
    (event,) = ack_events("node1", "RADIOGATE", "alice", "127.0.0.1", study_uid="1.2.3.4",
                          patient=None, cancelled=[])  # fmt: skip
    assert event.participants[0].user_id == "alice"
    assert event.participants[0].network_address == "127.0.0.1"


def test_both_run_the_same_statement() -> None:
    assert queries.ACKNOWLEDGE_SQL == repository.ACKNOWLEDGE_SQL

"""Audit event model: validation on construction, canonical bytes (PS3.15 A.5)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from audit import (
    ActiveParticipant,
    AuditEvent,
    AuditEventError,
    AuditSource,
    EventAction,
    EventID,
    EventOutcome,
    Patient,
    QueryObject,
    Step,
    Study,
    SystemObject,
)
from tests.unit.audit._factory import received


def test_enums_accept_strings() -> None:
    assert EventID("110104") is EventID.INSTANCES_TRANSFERRED
    assert EventID("DICOM Instances Transferred") is EventID.INSTANCES_TRANSFERRED
    assert EventID("query") is EventID.QUERY
    assert EventID(110113) is EventID.SECURITY_ALERT
    assert EventAction("c") is EventAction.CREATE
    assert EventAction("execute") is EventAction.EXECUTE
    # The integer enum also accepts its code or meaning as a string.
    assert EventOutcome("8") is EventOutcome.SERIOUS_FAILURE  # type: ignore[arg-type]
    assert EventOutcome("minor failure") is EventOutcome.MINOR_FAILURE  # type: ignore[arg-type]
    assert Step("re-identified") is Step.REIDENTIFIED
    assert Step("RESULTS_STORED") is Step.RESULTS_STORED
    event = received()
    assert event.event_id is EventID.INSTANCES_TRANSFERRED
    assert event.step is Step.RECEIVED


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", "999999"),
        ("action", "X"),
        ("outcome", 3),
        ("step", "teleported"),
        ("time", dt.datetime(2024, 1, 1)),  # no zone
        ("participants", ()),
        ("reason", "Patient John Doe"),
    ],
)
def test_invalid_fields_are_refused(field: str, value: object) -> None:
    good = received()
    kwargs = {f: getattr(good, f) for f in good.__dataclass_fields__}
    kwargs[field] = value
    with pytest.raises(AuditEventError):
        AuditEvent(**kwargs)


@pytest.mark.parametrize(
    "value",
    ["DOE^JOHN", "John Doe", "JOHNDOEX", "19700101", "1970-01-01", "PSN-1970-01-01", "short1"],
)
def test_patient_names_and_dates_cannot_be_pseudonyms(value: str) -> None:
    with pytest.raises(AuditEventError):
        Patient(value)


def test_pseudonyms_and_hex_digests_are_accepted() -> None:
    assert Patient("PSN-7c1e90b24a").pseudonym == "PSN-7c1e90b24a"
    assert Patient("3f19840512ab77c0d2e1").pseudonym  # 8-digit run inside hex is not a date


@pytest.mark.parametrize("uid", ["1.2.03", "1..2", "abc", "1.2." + "3" * 70, ""])
def test_bad_uids_are_refused(uid: str) -> None:
    with pytest.raises(AuditEventError):
        Study(uid)


def test_participants_are_validated() -> None:
    with pytest.raises(AuditEventError):
        ActiveParticipant("Dr Jane Smith")  # a display name is not a user ID
    with pytest.raises(AuditEventError):
        ActiveParticipant.application("A\\B")
    with pytest.raises(AuditEventError):
        ActiveParticipant("alice", network_address="not an address!")
    app = ActiveParticipant.application("CT SCANNER 1", address="::1")
    assert app.user_id == "CT SCANNER 1"
    assert app.network_address == "::1"


def test_query_parameters_are_restricted() -> None:
    with pytest.raises(AuditEventError):
        QueryObject(parameters=(("patient_name", "DOE^JOHN"),))
    with pytest.raises(AuditEventError):
        QueryObject(parameters=(("patient", "DOE^JOHN"),))
    assert QueryObject(parameters=(("study", "1.2.3"),)).parameters == (("study", "1.2.3"),)


def test_canonical_bytes_are_sorted_compact_utf8_and_round_trip() -> None:
    event = received(3)
    data = event.to_bytes()
    doc = json.loads(data)
    assert data == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert b" " not in data
    assert doc["time"] == "2024-05-01T12:00:03.000000+00:00"
    assert AuditEvent.from_bytes(data) == event
    assert AuditEvent.from_bytes(data).to_bytes() == data


def test_time_keeps_its_zone() -> None:
    tz = dt.timezone(dt.timedelta(hours=2))
    event = AuditEvent(
        EventID("110100"), EventAction("E"), Step("application-started"),
        (ActiveParticipant("radiogate-scp"),), AuditSource("node1"),
        time=dt.datetime(2024, 5, 1, 14, 0, tzinfo=tz),
    )  # fmt: skip
    assert b'"time":"2024-05-01T14:00:00.000000+02:00"' in event.to_bytes()
    assert AuditEvent.from_bytes(event.to_bytes()).time.utcoffset() == dt.timedelta(hours=2)


def test_non_canonical_or_foreign_bytes_are_refused() -> None:
    data = received().to_bytes()
    with pytest.raises(AuditEventError):
        AuditEvent.from_bytes(json.dumps(json.loads(data), indent=1).encode())
    doc = json.loads(data)
    doc["objects"][0]["name"] = "DOE^JOHN"
    with pytest.raises(AuditEventError):
        AuditEvent.from_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


def test_index_keys() -> None:
    keys = received(0, study="1.2.3").index_keys()
    assert keys == [
        "user:CT1", "ae:CT1", "user:RADIOGATE", "ae:RADIOGATE", "patient:PSN-7c1e90b24a",
        "study:1.2.3", "series:1.2.3.1", "sop:1.2.3.1.1",
    ]  # fmt: skip
    system = SystemObject("configuration", "scp.port")  # type: ignore[arg-type]  # kind by name
    assert system.kind.code == "RG-CONFIG"

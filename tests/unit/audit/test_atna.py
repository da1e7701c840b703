"""ATNA export: PS3.15 A.5.1 XML valid against the standard's RELAX NG schema; RFC 5424 syslog."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from pathlib import Path

import pytest
from lxml import etree  # type: ignore[import-untyped]

import audit
from audit import (
    ActiveParticipant,
    AuditEvent,
    AuditSource,
    EventAction,
    EventID,
    EventOutcome,
    EventTypeCode,
    QueryObject,
    Step,
    SyslogSender,
    SystemObject,
    SystemObjectKind,
    to_atna_syslog,
    to_atna_xml,
)
from tests.unit.audit._factory import received

SCHEMA = Path(audit.__file__).parent / "schema" / "audit_schema_2023b.rng"


@pytest.fixture(scope="module")
def relaxng() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMA)))


def _events() -> list[AuditEvent]:
    user = ActiveParticipant("alice", requestor=True, network_address="ws1.example.org")
    return [
        received(),
        AuditEvent(EventID("110112"), EventAction("E"), Step("audit-queried"), (user,),
                   AuditSource("node1", "site-1"),
                   objects=(QueryObject(parameters=(("study", "1.2.3"), ("since", "2024-01-01"))),)),
        AuditEvent(EventID("110100"), EventAction("E"), Step("config-changed"),
                   (ActiveParticipant("radiogate-cli"),), AuditSource("node1"),
                   objects=(SystemObject(SystemObjectKind("configuration"), "scp.port"),),
                   event_types=(EventTypeCode("110131"),), outcome=EventOutcome(4),
                   reason="restart-required"),
        AuditEvent(EventID("110113"), EventAction("E"), Step("association-rejected"),
                   (ActiveParticipant.application("UNKNOWN", address="192.0.2.7", requestor=True),),
                   AuditSource("node1"), outcome=EventOutcome(8), reason="calling-ae-not-allowed"),
    ]  # fmt: skip


@pytest.mark.parametrize("index", range(4))
def test_messages_validate_against_the_schema(relaxng: etree.RelaxNG, index: int) -> None:
    xml = to_atna_xml(_events()[index], seq=index + 1)
    doc = etree.fromstring(xml)
    assert relaxng.validate(doc), relaxng.error_log
    assert b"\n" not in xml


def test_received_message_content() -> None:
    doc = etree.fromstring(to_atna_xml(received()))
    ident = doc.find("EventIdentification")
    assert ident is not None
    assert ident.get("EventActionCode") == "C"
    assert ident.find("EventID").get("csd-code") == "110104"
    codes = [e.get("csd-code") for e in ident.findall("EventTypeCode")]
    assert codes == ["received"]
    source = doc.find("ActiveParticipant")
    assert source is not None and source.get("AlternativeUserID") == "AETITLES=CT1"
    assert source.get("NetworkAccessPointTypeCode") == "2"
    patient = doc.find("ParticipantObjectIdentification")
    assert patient is not None and patient.get("ParticipantObjectID") == "PSN-7c1e90b24a"
    assert doc.find(".//SOPClass").get("NumberOfInstances") == "1"


def test_syslog_frame_over_udp_and_tcp() -> None:
    frame = to_atna_syslog(received())
    assert frame.startswith(b"<85>1 2024-05-01T12:00:00.000000+00:00 ")
    assert b" IHE+RFC-3881 - \xef\xbb\xbf<AuditMessage>" in frame

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    with SyslogSender("127.0.0.1", udp.getsockname()[1], "UDP") as sender:
        sender.send(frame)
    assert udp.recv(65536) == frame
    udp.close()

    srv = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def accept() -> None:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            got.append(data)

    t = threading.Thread(target=accept)
    t.start()
    with SyslogSender("127.0.0.1", srv.getsockname()[1], "TCP") as sender:
        sender.send(frame)
        sender.send(frame)
    t.join(5)
    srv.close()
    assert got == [2 * (f"{len(frame)} ".encode() + frame)]  # RFC 6587 octet counting


def test_time_offset_preserved_in_xml() -> None:
    tz = dt.timezone(dt.timedelta(hours=-5))
    event = AuditEvent(EventID("110100"), EventAction("E"), Step("application-started"),
                       (ActiveParticipant("svc"),), AuditSource("node1"),
                       time=dt.datetime(2024, 1, 1, 8, tzinfo=tz))  # fmt: skip
    assert b'EventDateTime="2024-01-01T08:00:00.000000-05:00"' in to_atna_xml(event)

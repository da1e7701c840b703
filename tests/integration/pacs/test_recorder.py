"""The recorder on a real PostgreSQL: exactly once, segments deleted once recorded, torn and
foreign lines skipped, resources gone still recorded, resolution failures retried."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest

from dicom_nodes.pacs.recorder import Recorder, ResolverUnavailable
from pacs_plugin.journal import JournalWriter, segments
from tests.integration.pacs.conftest import Pacs, chained

pytestmark = pytest.mark.integration
OID = "0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d"


class Resolver:
    def __init__(self) -> None:
        self.down = False
        self.asked = 0

    def study_uids(self, level: str, orthanc_id: str) -> tuple[str, ...]:
        self.asked += 1
        if self.down:
            raise ResolverUnavailable("test")
        return ("1.2.3.4",) if orthanc_id == OID else ()


def _read(n: int, **more: object) -> dict[str, object]:
    return {"k": "read", "t": time.time(), "u": f"user{n}", "ip": "127.0.0.1", "api": "rest",
            "lvl": "study", "id": OID, **more}  # fmt: skip


def test_exactly_once_across_segments(fresh_dsn: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    first = JournalWriter(journal, 0.05, 4096)
    for n in range(40):
        first.append(_read(n))
    first.close()
    old = segments(journal)
    assert len(old) > 1  # rolled over at 4 kB
    with old[-1].open("ab") as fh:
        fh.write(b'{"k":"read","t":1')  # cut short by a crash
    second = JournalWriter(journal, 0.05, 4096)  # a restarted Orthanc
    second.append(_read(99, study="1.2.3.5", api="dicomweb"))
    second.append(_read(100, id="ffffffff-ffffffff-ffffffff-ffffffff-ffffffff"))  # gone
    with segments(journal)[-1].open("ab") as fh:
        fh.write(b"not a record\n")
    resolver = Resolver()
    rec = Recorder(fresh_dsn, journal, "node1", "ORTHANC", resolver)
    resolver.down = True
    with pytest.raises(ResolverUnavailable):
        rec.record_once()
    assert chained(fresh_dsn, event_id="110103") == []  # nothing half-recorded
    resolver.down = False
    assert rec.record_once() == 43
    assert rec.skipped == 1
    assert [p.name for p in segments(journal)] == [segments(journal)[-1].name]  # old ones gone
    events = chained(fresh_dsn, event_id="110103")
    assert len(events) == 42
    assert sorted({e.event.participants[0].user_id for e in events})[:2] == ["user0", "user1"]
    by_user = {e.event.participants[0].user_id: e.event for e in events}
    assert [o.study_uid for o in by_user["user99"].objects] == ["1.2.3.5"]
    assert by_user["user99"].reason == "dicomweb"
    assert by_user["user100"].objects == () and by_user["user100"].reason == "rest-resource-gone"
    second.append(_read(101))
    assert rec.record_once() == 1 and rec.record_once() == 0
    assert len(chained(fresh_dsn, event_id="110103")) == 43
    second.close()
    with psycopg.connect(fresh_dsn) as conn:
        rows = conn.execute("SELECT segment FROM pacs_journal").fetchall()
    assert rows == [(segments(journal)[-1].name,)]


def test_reading_findings_is_an_access_and_explorer_is_extended(pacs: Pacs) -> None:
    assert pacs.call("alice", "/radiogate/studies/1.2.3.77").status == 404
    [line] = [r for r in pacs.journal_lines() if r["k"] == "read"]
    assert line["api"] == "radiogate" and line["study"] == "1.2.3.77" and line["u"] == "alice"
    js = pacs.call("alice", "/plugins/explorer.js")  # where Orthanc serves extensions
    assert js.status == 200 and b"radiogate-lane-badge" in js.body
    assert json.loads(pacs.call("alice", "/radiogate/status").body)["labels"] is False

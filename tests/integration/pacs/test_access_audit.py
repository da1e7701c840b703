"""Reads through Orthanc's REST API, DICOMweb and WADO-URI each give one 110103 event with the
user and the study UID; refusals give 110113; reads go on while PostgreSQL is down and their
events are recorded when it is back."""

from __future__ import annotations

import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dicom_nodes.services.postgres import PrivateCluster
from tests.integration.pacs.conftest import (
    Pacs,
    chained,
    recorder,
    start_pacs,
    upload,
    wait_for,
)

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[2] / "data"


def _study(pacs: Pacs) -> tuple[str, str]:
    stored = upload(pacs, DATA / "ctbrain1.dcm")
    study_id = stored["ParentStudy"]
    uid = pacs.call("service", f"/studies/{study_id}").json()["MainDicomTags"]["StudyInstanceUID"]
    return study_id, uid


def _reads(pacs: Pacs) -> list[dict[str, object]]:
    return [r for r in pacs.journal_lines() if r["k"] == "read"]


def test_rest_dicomweb_and_wado_reads_each_give_one_accessed_event(pacs: Pacs) -> None:
    study_id, uid = _study(pacs)
    assert _reads(pacs) == []  # the archive's own account is the pipeline: not journaled
    answer = pacs.call("alice", f"/studies/{study_id}/archive")
    assert answer.status == 200 and answer.body[:2] == b"PK"
    wait_for(lambda: len(_reads(pacs)) == 1, what="the REST read in the journal")
    assert recorder(pacs).record_once() == 1
    events = chained(pacs.dsn, study_uid=uid, event_id="110103")
    assert len(events) == 1
    e = events[0].event
    assert e.reason == "rest" and e.participants[0].user_id == "alice"
    assert e.participants[0].requestor and e.participants[0].network_address == "127.0.0.1"

    answer = pacs.call("alice", f"/dicom-web/studies/{uid}/metadata")
    assert answer.status == 200, answer.body
    assert recorder(pacs).record_once() == 1
    events = chained(pacs.dsn, study_uid=uid, event_id="110103")
    assert [x.event.reason for x in events] == ["rest", "dicomweb"]
    assert events[1].event.participants[0].user_id == "alice"

    inst = pacs.call("service", f"/studies/{study_id}/instances").json()[0]["MainDicomTags"]
    series = pacs.call("service", f"/studies/{study_id}/series").json()[0]["MainDicomTags"]
    query = urllib.parse.urlencode({"requestType": "WADO", "studyUID": uid,
                                    "seriesUID": series["SeriesInstanceUID"],
                                    "objectUID": inst["SOPInstanceUID"]})  # fmt: skip
    answer = pacs.call("olga", f"/wado?{query}")
    assert answer.status == 200 and answer.body[:2] == b"\xff\xd8"  # a JPEG rendering
    assert recorder(pacs).record_once() == 1
    events = chained(pacs.dsn, study_uid=uid, event_id="110103")
    assert [(x.event.reason, x.event.participants[0].user_id) for x in events] == [
        ("rest", "alice"), ("dicomweb", "alice"), ("wado-uri", "olga")]  # fmt: skip
    # Recorded once: another pass finds nothing new.
    assert recorder(pacs).record_once() == 0
    assert len(chained(pacs.dsn, event_id="110103")) == 3


def test_refusals_give_security_alerts(pacs: Pacs) -> None:
    study_id, uid = _study(pacs)
    assert pacs.call("mallory", f"/studies/{study_id}").status == 403  # no role
    assert pacs.call("alice", f"/studies/{study_id}", method="DELETE").status == 403
    answer = pacs.call("alice", "/radiogate/audit")
    assert answer.status == 403 and answer.json() == {"error": "role-required", "detail": "admin"}
    assert pacs.call("service", f"/studies/{study_id}").status == 200  # still there
    assert recorder(pacs).record_once() == 3
    alerts = chained(pacs.dsn, event_id="110113")
    got = [(a.event.participants[0].user_id, a.event.reason, int(a.event.outcome)) for a in alerts]
    assert got == [("mallory", "no-role", 4), ("alice", "write-not-allowed", 4),
                   ("alice", "role-required-admin", 4)]  # fmt: skip
    assert [o.study_uid for o in alerts[0].event.objects] == [uid]


def test_reads_go_on_while_postgresql_is_down_and_are_recorded_after(
    own_cluster: PrivateCluster, tmp_path: Path
) -> None:
    pacs = start_pacs(own_cluster.dsn, tmp_path / "pacs")
    try:
        study_id, uid = _study(pacs)
        running = recorder(pacs)  # as `radiogate pacs record` runs: one connection, kept
        stop = threading.Event()
        loop = threading.Thread(target=running.run, args=(0.1, stop.is_set))
        loop.start()
        own_cluster.stop(mode="immediate")
        for _ in range(5):
            answer = pacs.call("alice", f"/studies/{study_id}/archive", timeout=10)
            assert answer.status == 200 and answer.body[:2] == b"PK"
        down = pacs.call("alice", "/radiogate/worklist", timeout=10)
        assert down.status == 503 and down.json() == {"error": "database-unavailable"}
        assert len(_reads(pacs)) == 5
        with pytest.raises(psycopg.OperationalError):
            recorder(pacs).record_once()
        time.sleep(1)  # the running recorder fails a few passes too
        own_cluster.start()

        def recorded() -> list[Any]:
            return chained(own_cluster.dsn, study_uid=uid, event_id="110103")

        wait_for(lambda: len(recorded()) == 5, timeout=30, what="the reads recorded")
        stop.set()
        loop.join(timeout=10)
        assert recorder(pacs).record_once() == 0  # each read once
        events = recorded()
        assert len(events) == 5 and {e.event.participants[0].user_id for e in events} == {"alice"}
        assert pacs.call("alice", "/radiogate/worklist").status == 200
    finally:
        pacs.orthanc.stop()

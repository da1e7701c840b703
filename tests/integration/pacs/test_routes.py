"""Each route with and without the right role, the JSON it answers, the worklist's order."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.integration.pacs.conftest import Pacs, chained, seed_study, upload

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[2] / "data"

ROUTES = [
    ("GET", "/radiogate/worklist", "alice"),
    ("GET", "/radiogate/studies/1.2.3", "alice"),
    ("POST", "/radiogate/alerts/a1/ack", "alice"),
    ("GET", "/radiogate/audit", "olga"),
    ("GET", "/radiogate/audit/verify", "olga"),
]


@pytest.mark.parametrize(("method", "path", "allowed"), ROUTES)
def test_each_route_needs_its_role(pacs: Pacs, method: str, path: str, allowed: str) -> None:
    for who in ("alice", "olga", "mallory"):
        answer = pacs.call(who, path, method=method, body=b"" if method == "POST" else None)
        if who == allowed:
            assert answer.status in (200, 404), answer.body  # 404: unknown study / alert
        else:
            assert answer.status == 403
            assert answer.json()["error"] == "role-required"
        assert answer.json() is not None  # JSON either way


def test_status_errors_are_json(pacs: Pacs) -> None:
    assert pacs.call("alice", "/radiogate/status").json()["roles"] == ["radiologist"]
    assert pacs.call("alice", "/radiogate/nowhere").json() == {"error": "no-such-route"}
    bad = pacs.call("alice", "/radiogate/worklist?lane=soon")
    assert bad.status == 400 and bad.json()["error"] == "bad-parameter"
    wrong = pacs.call("alice", "/radiogate/worklist", method="POST", body=b"")
    assert wrong.status == 405  # Orthanc answers 405 itself (its dedicated call has no body)
    assert pacs.call("alice", "/radiogate/studies/not-a-uid").status == 400


def test_worklist_order_and_shape(pacs: Pacs) -> None:
    # Ceilings (conftest): routine 60 min, urgent 30 min.
    seed_study(pacs.dsn, "1.2.826.0.1.1", lane="routine", age_minutes=5)
    seed_study(pacs.dsn, "1.2.826.0.1.2", lane="urgent", age_minutes=10)
    seed_study(pacs.dsn, "1.2.826.0.1.3", lane="routine", age_minutes=90)  # over the ceiling
    seed_study(pacs.dsn, "1.2.826.0.1.4", lane="critical", age_minutes=1)
    seed_study(pacs.dsn, "1.2.826.0.1.5", lane="urgent", age_minutes=45)  # over its ceiling
    answer = pacs.call("alice", "/radiogate/worklist")
    assert answer.status == 200
    body = answer.json()
    order = [s["study_uid"].rsplit(".", 1)[1] for s in body["studies"]]
    assert order == ["4", "5", "3", "2", "1"]
    first = body["studies"][0]
    assert set(first) >= {"study_uid", "lane", "certainty", "reasons", "completeness",
                          "analysis", "seconds_since_last_image", "overdue", "orthanc_id",
                          "modalities", "waiting_seconds"}  # fmt: skip
    assert [s["overdue"] for s in body["studies"]] == [False, True, True, False, False]
    assert body["ceilings_minutes"] == {"routine": 60.0, "urgent": 30.0}
    only = pacs.call("alice", "/radiogate/worklist?lane=urgent").json()["studies"]
    assert [s["lane"] for s in only] == ["urgent", "urgent"]


def test_study_findings_and_alert_acknowledgement(pacs: Pacs) -> None:
    stored = upload(pacs, DATA / "ctbrain1.dcm")
    study_id = stored["ParentStudy"]
    uid = pacs.call("service", f"/studies/{study_id}").json()["MainDicomTags"]["StudyInstanceUID"]
    received = seed_study(pacs.dsn, uid, lane="critical", age_minutes=3)
    with psycopg.connect(pacs.dsn) as conn:
        conn.execute(
            """INSERT INTO series (series_instance_uid, study_instance_uid, node, modality,
                   state, archive_series_uid) VALUES ('9.9.1', %s, 'node1', 'CT', 'complete',
                   '9.9.1.5')""",
            (received,),
        )
        conn.execute(
            """INSERT INTO series_triage (series_instance_uid, study_instance_uid, node, state,
                   lane, score, quality, reasons) VALUES ('9.9.1', %s, 'node1', 'decided',
                   'critical', 0.93, 'complete', '{model-critical}')""",
            (received,),
        )
        conn.execute(
            """INSERT INTO alert (alert_id, alert_key, node, study_instance_uid, category,
                   payload, escalate_at) VALUES ('a1', 'k1', 'node1', %s, 1,
                   '{"kind": "critical", "finding": "demo"}', clock_timestamp())""",
            (received,),
        )
        conn.execute(
            "INSERT INTO alert_delivery (delivery_id, alert_id, target, level) "
            "VALUES ('d1', 'a1', 'reading-room', 0)"
        )
    for key in (study_id, uid):
        study = pacs.call("alice", f"/radiogate/studies/{key}")
        assert study.status == 200, study.body
        s = study.json()
        assert s["study_uid"] == uid and s["orthanc_id"] == study_id and s["lane"] == "critical"
        assert received not in study.body.decode()  # the received UID never leaves
        assert s["triage"][0]["certainty"] == pytest.approx(0.93)
        assert s["triage"][0]["series_uid"] == "9.9.1.5"
        assert s["alerts"][0]["state"] == "open" and s["alerts"][0]["acknowledged_by"] is None
        assert set(s) >= {"measures", "model_outputs", "objects", "analysis", "audit"}
    wl = pacs.call("alice", "/radiogate/worklist").json()["studies"][0]
    assert wl["orthanc_id"] == study_id and wl["certainty"] == pytest.approx(0.93)
    assert wl["reasons"] == ["model-critical"] and wl["completeness"] == "complete"

    assert pacs.call("olga", "/radiogate/alerts/a1/ack", method="POST", body=b"").status == 403
    ack = pacs.call("alice", "/radiogate/alerts/a1/ack", method="POST", body=b"")
    assert ack.status == 200 and ack.json()["acknowledged_by"] == "alice"
    again = pacs.call("alice", "/radiogate/alerts/a1/ack", method="POST", body=b"")
    assert again.status == 409 and again.json() == {"error": "already-acknowledged"}
    missing = pacs.call("alice", "/radiogate/alerts/nope/ack", method="POST", body=b"")
    assert missing.status == 404
    with psycopg.connect(pacs.dsn) as conn:
        assert conn.execute("SELECT state, acknowledged_by FROM alert").fetchone() == (
            "acknowledged", "alice")  # fmt: skip
        assert conn.execute("SELECT state FROM alert_delivery").fetchone() == ("cancelled",)
    acks = chained(pacs.dsn, step="alert-acknowledged")
    assert len(acks) == 1 and acks[0].event.participants[0].user_id == "alice"
    after = pacs.call("alice", f"/radiogate/studies/{study_id}").json()
    assert after["alerts"][0]["acknowledged_by"] == "alice"
    assert "alert-acknowledged" in [h["step"] for h in after["audit"]]


def test_audit_query_and_verify_for_admins(pacs: Pacs) -> None:
    seed_study(pacs.dsn, "1.2.826.0.9", lane="routine", age_minutes=1)
    verify = pacs.call("olga", "/radiogate/audit/verify")
    assert verify.status == 200, verify.body
    v = verify.json()
    assert v["ok"] is True and v["damages"] == []
    found = pacs.call("olga", "/radiogate/audit?step=audit-verified")
    assert found.status == 200
    chained(pacs.dsn)  # seal the verification event
    body = pacs.call("olga", "/radiogate/audit?step=audit-verified").json()
    assert body["count"] == 1 and body["events"][0]["event"]["participants"][0]["user"] == "olga"
    queries = chained(pacs.dsn, event_id="110112")
    assert len(queries) == 2  # each search is itself audited
    bad = pacs.call("olga", "/radiogate/audit?since=yesterday")
    assert bad.status == 400 and bad.json()["error"] == "bad-parameter"

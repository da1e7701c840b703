"""Alerts against a real PostgreSQL, a real Mosquitto and a webhook receiver that is down at
first: delivered once each, signed, pseudonymous only, retried until the webhook is up,
escalated while nobody acknowledges, stopped by an acknowledgement — every step audited."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from config import Settings
from config.alerts import AlertSettings, AlertTargetSettings
from dicom_nodes.alerts.model import AlertSpec
from dicom_nodes.alerts.outbox import (
    AlertContext,
    acknowledge,
    deliver_round,
    escalate_due,
    raise_alert,
)
from dicom_nodes.alerts.targets import build_targets, canonical, sign
from dicom_nodes.audit_events import pipeline_sink
from tests.support.services import HttpReceiver, Mosquitto, mqtt_messages

pytestmark = pytest.mark.integration

SINK = pipeline_sink("node1", "RADIOGATE")
ORIGINAL_STUDY = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "mosquitto").start()
    yield server
    server.stop()


def _spec(**changes: Any) -> AlertSpec:
    spec = AlertSpec(
        node="node1",
        study_uid=ORIGINAL_STUDY,
        series_uid=ORIGINAL_STUDY + ".2",
        category=1,
        kind="finding",
        finding="critical-finding",
        lane="critical",
        pseudonymous_study_uid="2.25.1111",
        pseudonymous_series_uid="2.25.2222",
        model={"name": "demo", "version": "1", "blake3": "ab" * 32},
        certainty=97.25,
        patient_pseudonym="RG0123456789ABCDEF",
        reasons=("score-above-critical",),
    )
    return dataclasses.replace(spec, **changes)


def _settings(tmp_path: Path, webhook: HttpReceiver, broker: Mosquitto) -> Settings:
    from config.schema import NodeSettings

    return Settings(
        node=NodeSettings(data_dir=str(tmp_path / "node")),
        alerts=AlertSettings(
            targets=["webhook", "mqtt"],
            escalation_targets=["oncall"],
            retry_initial=0.1,
            retry_max=0.1,
            target=[
                AlertTargetSettings(name="webhook", kind="webhook", url=webhook.url, timeout=2),
                AlertTargetSettings(name="mqtt", kind="mqtt", port=broker.port, topic="rg/alerts"),
                AlertTargetSettings(
                    name="oncall", kind="mqtt", port=broker.port, topic="rg/oncall"
                ),
            ],
        ),
    )


def _steps(dsn: str) -> list[tuple[str, set[str]]]:
    """(step, every participant's user id) of each audit event, in order."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT step, body FROM audit_pending ORDER BY id").fetchall()
    return [(step, {p["user"] for p in json.loads(bytes(body))["participants"]})
            for step, body in rows]  # fmt: skip


def _due(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE alert_delivery SET next_attempt_at = clock_timestamp()")


def test_delivery_retry_escalation_and_acknowledgement(
    fresh_dsn: str, tmp_path: Path, broker: Mosquitto
) -> None:
    webhook = HttpReceiver()  # down at first
    settings = _settings(tmp_path, webhook, broker)
    targets = build_targets(settings)
    pool = ConnectionPool(fresh_dsn, min_size=1, max_size=2, open=True)
    ctx = AlertContext("node1", pool, settings.alerts, targets, SINK)
    key = (tmp_path / "node" / "alerts" / "mqtt.key").read_bytes()
    try:
        with mqtt_messages(broker.port, "rg/#") as inbox:
            with psycopg.connect(fresh_dsn) as conn:
                assert raise_alert(conn, SINK, _spec(), settings.alerts)
                assert not raise_alert(conn, SINK, _spec(), settings.alerts)  # idempotent
            assert deliver_round(ctx) == 2
            topic, body = inbox.get(timeout=10)
            assert topic == "rg/alerts/1"
            signature = body.pop("signature")
            assert signature == sign(key, canonical(body))
            assert body["study"] == "2.25.1111" and body["patient"] == "RG0123456789ABCDEF"
            assert body["certainty"] == 97.2 and body["level"] == 0
            assert ORIGINAL_STUDY not in json.dumps(body)  # pseudonymous identifiers only
            with psycopg.connect(fresh_dsn) as conn:
                states: dict[str, str] = dict(conn.execute(
                    "SELECT target, state FROM alert_delivery").fetchall())  # fmt: skip
            assert states == {"mqtt": "delivered", "webhook": "pending"}
            # The webhook comes up: the retried delivery reaches it, signed.
            webhook.up()
            _due(fresh_dsn)
            assert deliver_round(ctx) == 1
            ((headers, raw),) = webhook.requests
            webhook_key = (tmp_path / "node" / "alerts" / "webhook.key").read_bytes()
            assert headers["X-Radiogate-Signature"] == sign(webhook_key, raw)
            assert json.loads(raw)["alert_id"] == _spec().alert_id
            # Nobody acknowledges: level 1 re-sends to the targets, level 2 goes on call.
            for level in (1, 2):
                with psycopg.connect(fresh_dsn) as conn:
                    conn.execute("UPDATE alert SET escalate_at = clock_timestamp()")
                assert escalate_due(ctx) == 1
                assert deliver_round(ctx) == (2 if level == 1 else 1)
            topics = [inbox.get(timeout=10)[0] for _ in range(2)]
            assert topics == ["rg/alerts/1", "rg/oncall/1"]
            assert len(webhook.requests) == 2
        # A radiologist acknowledges: what was not sent is cancelled, escalation stops.
        with psycopg.connect(fresh_dsn) as conn:
            conn.execute("UPDATE alert SET escalate_at = clock_timestamp()")
        assert escalate_due(ctx) == 1  # level 3: pending deliveries to on-call
        with psycopg.connect(fresh_dsn) as conn:
            assert acknowledge(conn, SINK, _spec().alert_id, "dr-house") == "acknowledged"
            assert acknowledge(conn, SINK, _spec().alert_id, "dr-house") == "already"
            assert acknowledge(conn, SINK, "feedfeedfeedfeed", "dr-house") == "unknown"
            rows = conn.execute(
                "SELECT state, acknowledged_by FROM alert").fetchall()  # fmt: skip
            pending = conn.execute(
                "SELECT count(*) FROM alert_delivery WHERE state = 'pending'").fetchone()  # fmt: skip
        assert rows == [("acknowledged", "dr-house")]
        assert pending == (0,)
        assert escalate_due(ctx) == 0
    finally:
        webhook.down()
        pool.close()
    steps = _steps(fresh_dsn)
    names = [s for s, _who in steps]
    assert names[0] == "alert-raised" and names.count("alert-raised") == 1
    assert names.count("alert-delivery-failed") == 1
    assert names.count("alert-delivered") == 5
    assert names.count("alert-escalated") == 3
    delivered_to = [who for s, who in steps if s == "alert-delivered"]
    assert [bool({"mqtt", "webhook", "oncall"} & who) for who in delivered_to] == [True] * 5
    assert names[-2:] == ["cancelled", "alert-acknowledged"]  # the on-call delivery, then ack
    assert all("dr-house" in who for _s, who in steps[-2:])


def test_alert_cli_lists_and_acknowledges(fresh_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(fresh_dsn) as conn:
        raise_alert(conn, SINK, _spec(), AlertSettings())
    env = {**os.environ, "RADIOGATE_DATABASE__DSN": fresh_dsn,
           "RADIOGATE_NODE__DATA_DIR": str(tmp_path)}  # fmt: skip

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dicom_nodes.cli", "alert", *args],
                              capture_output=True, text=True, env=env, check=False)  # fmt: skip

    listed = cli("list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("alert\tstate\tcategory")
    assert lines[1].split("\t")[:5] == [_spec().alert_id, "open", "1", "finding",
                                        "critical-finding"]  # fmt: skip
    acked = cli("ack", _spec().alert_id, "--user", "dr-grey")
    assert acked.returncode == 0 and "acknowledged" in acked.stdout
    twice = cli("ack", _spec().alert_id)
    assert twice.returncode == 1 and "already acknowledged" in twice.stdout
    unknown = cli("ack", "feedfeedfeedfeed")
    assert unknown.returncode == 1 and "unknown alert" in unknown.stdout
    assert cli("list").stdout.count("\n") == 1  # header only: nothing open
    assert "dr-grey" in cli("list", "--all").stdout

"""Service starts and stops are audit events naming the effective configuration's hash; a
start with another configuration than last time is a config-changed security alert."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import psycopg
import pytest

from config import Settings
from dicom_nodes.lifecycle import config_hash, record_start, record_stop

pytestmark = pytest.mark.integration


def _events(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT body FROM audit_pending ORDER BY id").fetchall()
    return [json.loads(bytes(r[0])) for r in rows]


def test_config_change_is_detected_per_service(fresh_dsn: str) -> None:
    settings = Settings()
    assert record_start(fresh_dsn, settings, "worker")
    assert record_start(fresh_dsn, settings, "worker")  # same configuration: no change event
    changed = dataclasses.replace(
        settings, pipeline=dataclasses.replace(settings.pipeline, batch_size=7)
    )
    assert config_hash(changed) != config_hash(settings)
    assert record_start(fresh_dsn, changed, "worker")
    assert record_stop(fresh_dsn, changed, "worker")
    steps = [(e["step"], e.get("reason")) for e in _events(fresh_dsn)]
    assert steps == [
        ("config-changed", "first-start"),
        ("application-started", None),
        ("application-started", None),
        ("config-changed", "configuration-changed"),
        ("application-started", None),
        ("application-stopped", None),
    ]
    change = _events(fresh_dsn)[3]
    assert change["event"] == "110113" and change["types"] == ["110131"]
    assert [o["id"] for o in change["objects"]] == [config_hash(changed), config_hash(settings)]
    started = _events(fresh_dsn)[4]
    assert started["types"] == ["110120"]
    assert started["objects"][0]["id"] == config_hash(changed)


def test_an_unreachable_database_does_not_stop_a_start() -> None:
    dsn = "host=127.0.0.1 port=1 dbname=none user=none"
    assert record_start(dsn, Settings(), "scp", timeout=1) is False
    assert record_stop(dsn, Settings(), "scp", timeout=1) is False

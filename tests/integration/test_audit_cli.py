"""``radiogate audit ...`` run as an admin would, against a real database."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from lxml import etree  # type: ignore[import-untyped]

import audit
from audit import append_many, enqueue_many
from tests.unit.audit._factory import received

pytestmark = pytest.mark.integration

SCHEMA = Path(audit.__file__).parent / "schema" / "audit_schema_2023b.rng"


def _cli(dsn: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADIOGATE_")}
    env.update(
        RADIOGATE_DATABASE__DSN=dsn,
        RADIOGATE_NODE__DATA_DIR=str(data_dir),
        RADIOGATE_AUDIT__CHECKPOINT_EVERY="10",
    )
    return subprocess.run(
        [sys.executable, "-m", "dicom_nodes.cli", "audit", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def test_keygen_checkpoint_verify_query_export_rotate(fresh_dsn: str, tmp_path: Path) -> None:
    data = tmp_path / "node"
    assert "signing key" in _ok(_cli(fresh_dsn, data, "keygen"))
    assert (data / "audit" / "signing_key.pem").exists()
    assert _cli(fresh_dsn, data, "keygen").returncode == 2  # never overwrites

    with psycopg.connect(fresh_dsn) as conn:
        append_many(conn, [received(i) for i in range(20)])
        append_many(conn, [received(i, study="1.2.3.9") for i in range(3)])
        conn.commit()
    assert "checkpoint at seq 23" in _ok(_cli(fresh_dsn, data, "checkpoint"))
    assert (data / "audit" / "checkpoints.jsonl").read_text().count("\n") == 1

    out = _ok(_cli(fresh_dsn, data, "verify"))
    assert "intact: 23 events" in out

    lines = _ok(_cli(fresh_dsn, data, "query", "--study", "1.2.3.9", "--format", "jsonl"))
    docs = [json.loads(line) for line in lines.splitlines()]
    assert [d["seq"] for d in docs] == [21, 22, 23]
    assert docs[0]["event"]["event"] == "110104"

    table = _cli(fresh_dsn, data, "query", "--event", "110112", "--as-user", "privacy1")
    assert table.returncode == 0
    assert "110112 Query" in table.stdout  # the first query's own event
    assert "recorded as event 25" in table.stderr

    rows = list(csv.DictReader(io.StringIO(_ok(_cli(fresh_dsn, data, "query", "--format",
                                                        "csv", "--step", "audit-queried")))))  # fmt: skip
    assert [r["seq"] for r in rows] == ["24", "25"]
    assert rows[1]["participants"].startswith("privacy1*")

    export = tmp_path / "atna.xml"
    _ok(_cli(fresh_dsn, data, "export", "--atna", "--ae", "CT1", "--output", str(export)))
    messages = export.read_text().splitlines()
    assert len(messages) == 23
    relaxng = etree.RelaxNG(etree.parse(str(SCHEMA)))
    for message in messages:
        assert relaxng.validate(etree.fromstring(message.encode())), relaxng.error_log

    _ok(_cli(fresh_dsn, data, "rotate-key"))
    assert "intact" in _ok(_cli(fresh_dsn, data, "verify"))
    keyring = json.loads((data / "audit" / "keyring.json").read_text())
    assert len(keyring["keys"]) == 2

    with psycopg.connect(fresh_dsn) as conn:
        enqueue_many(conn, [received(i) for i in range(2)])
        conn.commit()
    # Two verifications and the key rotation were recorded too (security configuration,
    # audit log used: PS3.15 A.5.3.11 / A.5.3.2), waiting for the sealer with the two above.
    assert "5 enqueued events sealed" in _ok(_cli(fresh_dsn, data, "seal"))
    assert "intact: 32 events" in _ok(_cli(fresh_dsn, data, "verify"))
    with psycopg.connect(fresh_dsn) as conn:
        audit.seal(conn)
        events = conn.execute(
            "SELECT step, body FROM audit_event WHERE step IN ('key-rotated', 'audit-verified')"
            " ORDER BY seq"
        ).fetchall()
    steps = [r[0] for r in events]
    assert steps == ["audit-verified", "key-rotated", "audit-verified", "audit-verified"], steps
    rotated = json.loads(bytes(events[1][1]))
    assert rotated["event"] == "110113" and rotated["types"] == ["110129"]
    assert [o["id"] for o in rotated["objects"]] == [k["key_id"] for k in keyring["keys"]]


def test_verify_reports_damage_with_exit_status(fresh_dsn: str, tmp_path: Path) -> None:
    data = tmp_path / "node"
    _ok(_cli(fresh_dsn, data, "keygen"))
    with psycopg.connect(fresh_dsn) as conn:
        append_many(conn, [received(i) for i in range(12)])
        conn.commit()
    _ok(_cli(fresh_dsn, data, "checkpoint"))
    with psycopg.connect(fresh_dsn) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE audit_event SET body = body || ' '::bytea WHERE seq = 5")
        conn.commit()
    result = _cli(fresh_dsn, data, "verify")
    assert result.returncode == 1
    assert "DAMAGED: edited at seq 5" in result.stdout
    with psycopg.connect(fresh_dsn) as conn:
        (body,) = conn.execute("SELECT body FROM audit_pending").fetchone() or (b"",)
    verified = json.loads(bytes(body))
    assert (verified["step"], verified["outcome"], verified["reason"]) == (
        "audit-verified",
        8,
        "edited",
    )


def test_checkpoint_without_key_is_a_clear_error(fresh_dsn: str, tmp_path: Path) -> None:
    result = _cli(fresh_dsn, tmp_path / "node", "checkpoint")
    assert result.returncode == 4  # a missing file, named
    assert "radiogate audit keygen" in result.stderr
    assert str(tmp_path / "node" / "audit" / "signing_key.pem") in result.stderr

"""Privileged admin commands run as the admin's own PostgreSQL role, never a self-declared name.

Each admin is a login role of their own; ``radiogate_privacy`` membership is required to
re-identify and ``radiogate_admin`` to release, cancel, retry, re-route and complete. The
session's role is the user in the audit trail, and a refusal is a Security Alert naming the
refused role — written even when that role may not write to the audit trail itself.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dicom_nodes.deid.model import VaultEntry
from dicom_nodes.deid.secrets import ENV_VAULT_KEY, VaultKey
from dicom_nodes.deid.vault import Vault
from tests.support.roles import admin_role

pytestmark = pytest.mark.integration

KEY = VaultKey(bytes(range(32)))
PSEUDONYM = "RG4K7Q2M9X1T3B8CZN"
PATIENT = VaultEntry("patient", PSEUDONYM, {"patient_id": "PAT-77813", "issuer": "",
                                            "name": "Doe^Jane", "birth_date": "19610203"})  # fmt: skip
STUDY = "1.2.826.0.1.3680043.8.498.77"


def _run(dsn: str, data_dir: Path, admin: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADIOGATE_")}
    env.update(
        RADIOGATE_DATABASE__DSN=dsn,
        RADIOGATE_DATABASE__ADMIN_DSN=admin,
        RADIOGATE_NODE__DATA_DIR=str(data_dir),
    )
    env[ENV_VAULT_KEY] = base64.b64encode(KEY.key).decode()
    return subprocess.run(
        [sys.executable, "-m", "dicom_nodes.cli", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _events(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT body FROM audit_event UNION ALL SELECT body FROM audit_pending"
        ).fetchall()
    return [json.loads(bytes(r[0])) for r in rows]


def _requestor(event: dict[str, Any]) -> str:
    (user,) = [p["user"] for p in event["participants"] if p["requestor"]]
    return str(user)


def test_roles_decide_and_are_recorded(fresh_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(fresh_dsn) as conn, conn.transaction():
        Vault(KEY).record(conn, [PATIENT])
    alice = admin_role(fresh_dsn, "alice", "radiogate_privacy")  # privacy officer
    carol = admin_role(fresh_dsn, "carol", "radiogate_admin")  # operations admin
    bob = admin_role(fresh_dsn, "bob")  # a node's service login: neither
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:  # no privilege at all
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'eve'").fetchone():
            conn.execute("CREATE ROLE eve LOGIN")
    eve = fresh_dsn.replace("user=radiogate", "user=eve")

    # Without radiogate_privacy nobody re-identifies, whatever else they may do.
    for who, dsn in (("bob", bob), ("carol", carol), ("eve", eve)):
        refused = _run(fresh_dsn, tmp_path, dsn, "reidentify", PSEUDONYM, "--json")
        assert refused.returncode == 8, refused.stderr
        assert refused.stdout == ""
        assert f"role '{who}' is not a member of radiogate_privacy" in refused.stderr
        assert "PAT-77813" not in refused.stderr
    alerts = [e for e in _events(fresh_dsn) if e["event"] == "110113"]
    assert [_requestor(e) for e in alerts] == ["bob", "carol", "eve"]
    for e in alerts:
        assert e["step"] == "re-identified" and e["outcome"] == 4
        assert e["reason"] == "not-authorised"
        assert e["objects"] == [{"type": "patient", "id": PSEUDONYM}]
        assert e["types"] == ["110132"]  # Use of Restricted Function

    # The privacy officer may; the trail names her role, and no flag can name anybody else.
    found = _run(fresh_dsn, tmp_path, alice, "reidentify", PSEUDONYM, "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["original"]["patient_id"] == "PAT-77813"
    (read,) = [e for e in _events(fresh_dsn) if e["event"] == "110110"]
    assert _requestor(read) == "alice" and read["outcome"] == 0
    spoofed = _run(fresh_dsn, tmp_path, alice, "reidentify", PSEUDONYM, "--user", "mallory")
    assert spoofed.returncode == 2 and "--user" in spoofed.stderr

    # Study completion (like release, cancel, retry) needs radiogate_admin.
    refused = _run(fresh_dsn, tmp_path, alice, "study", "complete", STUDY)
    assert refused.returncode == 8, refused.stderr
    assert "role 'alice' is not a member of radiogate_admin" in refused.stderr
    (alert,) = [e for e in _events(fresh_dsn) if e["step"] == "study-completed"]
    assert alert["event"] == "110113" and _requestor(alert) == "alice"
    assert alert["objects"] == [{"type": "study", "uid": STUDY}]
    for args in (("job", "cancel", "1.2.3.4"), ("quarantine", "release", "1.2.3.4")):
        assert _run(fresh_dsn, tmp_path, bob, *args).returncode == 8
    # carol is authorised: the command runs (and finds no such study).
    allowed = _run(fresh_dsn, tmp_path, carol, "study", "complete", STUDY)
    assert allowed.returncode == 1 and "unknown" in allowed.stderr, allowed.stderr
    steps = sorted(e["step"] for e in _events(fresh_dsn) if e["event"] == "110113")
    assert steps == ["cancelled", "quarantine-released", "re-identified", "re-identified",
                     "re-identified", "study-completed"]  # fmt: skip

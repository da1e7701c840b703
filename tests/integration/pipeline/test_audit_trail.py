"""Every transition of every instance leaves exactly one audit event; no PHI anywhere in them."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pydicom
import pytest

import audit
from dicom_nodes.deid.patient import patient_fields
from dicom_nodes.deid.pseudonyms import Pseudonymiser
from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.support import dcmtk
from tests.support.data import DATA, extract_ct
from tests.support.pipeline import Node

pytestmark = pytest.mark.integration


def test_pipeline_events_per_instance(
    fresh_dsn: str, tmp_path: Path, orthanc: ManagedOrthanc
) -> None:
    files = extract_ct(tmp_path / "ct")[:6]
    phi_files = [DATA / "ctbrain1.dcm", DATA / "ctbrain2.dcm"]
    secret = os.urandom(32)
    node = Node(
        fresh_dsn, tmp_path / "node", orthanc,
        extra_env={"RADIOGATE_DEID_SECRET": base64.b64encode(secret).decode()},
    ).start()  # fmt: skip
    try:
        assert node.scp is not None
        result = subprocess.run(
            [dcmtk("storescu"), "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1", str(node.scp.port), *map(str, files)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        fake_phi = subprocess.run(
            [dcmtk("storescu"), "-xy", "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1", str(node.scp.port), *map(str, phi_files)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert fake_phi.returncode == 0, fake_phi.stderr
        # Both fake-PHI files carry the same SOP Instance UID with different bytes: the second
        # is recorded as a duplicate (both copies kept), not as a new instance.
        node.wait_released(len(files) + 1)
        assert node.query("SELECT bytes_differ FROM ingest_duplicate") == [(True,)]
        bad = subprocess.run(
            [dcmtk("echoscu"), "-aet", "CT1", "-aec", "WRONG_AE", "127.0.0.1", str(node.scp.port)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert bad.returncode != 0
        # The receiver counts it by reason, apart from the accepted ones.
        # (the peer has its A-ASSOCIATE-RJ before the receiver has counted it: wait a moment)
        url = f"http://127.0.0.1:{node.scp.metrics_port}/metrics"
        rejected_line = (
            'radiogate_associations_total{node="node1",reason="called-ae-not-recognised",'
            'result="rejected"} 1.0'
        )
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(url, timeout=10) as rsp:
                metrics = rsp.read().decode()
            if rejected_line in metrics or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert rejected_line in metrics, metrics
        accepted = re.search(
            r'^radiogate_associations_total\{node="node1",reason="",result="accepted"\} (\S+)$',
            metrics, re.M,
        )  # fmt: skip
        assert accepted is not None, metrics
    finally:
        node.stop()
    with psycopg.connect(fresh_dsn) as conn:
        audit.seal(conn)
    env = node.scp.env() if node.scp else {}

    def query(*args: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            [sys.executable, "-m", "dicom_nodes.cli", "audit", "query", *args, "--format", "jsonl", "--as-user", "tester"],
            capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    patients: set[str] = set()
    for f in files:
        uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        found = query("--sop", uid)
        # Every event of the instance names its patient by pseudonym (the same one), and a
        # search by that pseudonym finds all of them.
        named = {
            o["id"] for doc in found for o in doc["event"].get("objects", ())
            if o["type"] == "patient"
        }  # fmt: skip
        assert len(named) == 1, found
        assert all(any(o["type"] == "patient" for o in doc["event"]["objects"]) for doc in found), (
            found
        )
        patients |= named
        by_patient = {doc["seq"] for doc in query("--patient", next(iter(named)))}
        assert {doc["seq"] for doc in found} <= by_patient
        steps = Counter(doc["event"]["step"] for doc in found)
        assert steps == {
            "received": 1,
            "routed": 1,
            "forwarded": 1,
            "confirmed": 1,
            "released": 1,
        }, steps
    with psycopg.connect(fresh_dsn) as conn:
        rows = conn.execute("SELECT body FROM audit_event").fetchall()
    bodies = b"\n".join(bytes(r[0]) for r in rows)
    # Each service's start (with its configuration's hash; the first start is a configuration
    # change) and stop is an event.
    lifecycle = Counter(
        (doc["step"], doc["participants"][0]["user"])
        for doc in (json.loads(bytes(r[0])) for r in rows)
        if doc["step"].startswith(("application-", "config-"))
    )
    assert lifecycle == {
        (step, f"radiogate-{service}"): 1
        for step in ("application-started", "application-stopped", "config-changed")
        for service in ("scp", "worker")
    }, lifecycle
    # The receiver counted as many accepted associations as it audited.
    assert float(accepted.group(1)) == sum(
        1 for r in rows if json.loads(bytes(r[0]))["step"] == "association-accepted"
    )
    # One CT series, one patient: the pseudonym de-identification gave it in the archive.
    assert len(patients) == 1, patients
    patient_id, issuer, name, birth, study = patient_fields(pydicom.dcmread(files[0]))
    key = Pseudonymiser.patient_key(patient_id, issuer, name, birth, study)
    assert patients == {Pseudonymiser(secret).patient(key)}
    # The association refused for its called AE title is a security alert (110113) naming
    # the AE title asked for and why.
    steps_rows = [json.loads(bytes(r[0])) for r in rows]
    rejected = [doc for doc in steps_rows if doc["step"] == "association-rejected"]
    assert len(rejected) == 1, rejected
    assert rejected[0]["event"] == "110113", rejected[0]
    assert rejected[0]["reason"] == "called-ae-not-recognised", rejected[0]
    assert [p.get("ae") for p in rejected[0]["participants"]] == ["CT1", "WRONG_AE"], rejected[0]
    table = subprocess.run(
        [sys.executable, "-m", "dicom_nodes.cli", "audit", "query", "--step", "association-rejected", "--as-user", "tester"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout.splitlines()  # fmt: skip
    assert table[0].split()[:7] == ["seq", "time", "event", "action", "outcome", "step", "reason"]
    assert "called-ae-not-recognised" in table[1], table
    logs = (node.data_dir / "scp.log").read_bytes() + (node.data_dir / "worker.log").read_bytes()
    checked = 0
    for f in [files[0], *phi_files]:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
                        "InstitutionName", "ReferringPhysicianName", "OtherPatientIDs"):  # fmt: skip
            value = str(ds.get(keyword, "")).strip()
            if len(value) >= 4:
                checked += 1
                for variant in {value, value.replace("^", " ").strip()}:
                    assert variant.encode() not in bodies, f"{keyword} in the audit trail"
                    assert variant.encode() not in logs, f"{keyword} in a log"
    assert checked >= 8
    verify = subprocess.run(
        [sys.executable, "-m", "dicom_nodes.cli", "audit", "verify"],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr

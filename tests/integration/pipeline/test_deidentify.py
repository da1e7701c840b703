"""End to end: storescu → Radiogate (de-identifying routes) → Orthanc, then re-identification.

The archive must hold de-identified objects only: no original name, ID, UID or institution in
any byte Orthanc returns; burned-in text is masked where a rule covers the device and
quarantined where none does; ``radiogate reidentify`` finds the original patient and the use
is audited.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import psycopg
import pydicom
import pytest

import audit
from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.support import dcmtk
from tests.support.data import DATA, extract_ct, series_copies
from tests.support.pipeline import Node, orthanc_get, orthanc_instances, site_keys
from tests.support.roles import admin_role

pytestmark = pytest.mark.integration

ROUTES = """
[[deid.profiles]]
name = "basic"

[[deid.profiles]]
name = "ultrasound"
burned_in = "mask"
[[deid.profiles.masks]]
manufacturer = ["*"]
model = ["*"]
regions = [[0, 0, 64, 32]]

[[routes]]
name = "ultrasound"
steps = ["deidentify:ultrasound", "forward:archive"]
[routes.match]
calling_ae = ["US1"]

[[routes]]
name = "default"
steps = ["deidentify:basic", "forward:archive"]
"""

IDENTIFYING = (
    "PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
    "ReferringPhysicianName", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "StudyID", "OperatorsName", "StationName", "FrameOfReferenceUID",
)  # fmt: skip


def _originals(files: list[Path]) -> set[bytes]:
    values: set[bytes] = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for keyword in IDENTIFYING:
            value = str(ds.get(keyword, "") or "").strip()
            if len(value) >= 4:
                values.add(value.encode())
                values.update(p.encode() for p in value.split("^") if len(p) >= 4)
    return values


def _send(port: int, aet: str, files: list[Path], *flags: str) -> None:
    result = subprocess.run(
        [dcmtk("storescu"), *flags, "-aet", aet, "-aec", "RADIOGATE", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_archive_holds_only_deidentified_objects(
    fresh_dsn: str, tmp_path: Path, orthanc: ManagedOrthanc
) -> None:
    ct = extract_ct(tmp_path / "ct")[:4]
    sc = [DATA / "ctbrain1.dcm"]  # Secondary Capture, no Burned In Annotation: may show text
    us = [DATA / "us_greyscale.dcm"]
    secrets = site_keys()
    node = Node(fresh_dsn, tmp_path / "node", orthanc, extra_toml=ROUTES, extra_env=secrets)
    node.start()
    try:
        assert node.scp is not None
        _send(node.scp.port, "CT1", ct)
        _send(node.scp.port, "CT1", sc, "-xy")  # JPEG baseline, sent as such
        _send(node.scp.port, "US1", us)
        node.wait_released(len(ct) + len(us))
        quarantined = node.query(
            "SELECT sop_instance_uid, profile FROM forward_item WHERE state = 'quarantined'"
        )
        sc_uid = str(pydicom.dcmread(sc[0], stop_before_pixels=True).SOPInstanceUID)
        assert quarantined == [(sc_uid, "basic")]
        env = node.scp.env()
        listed = subprocess.run(
            [sys.executable, "-m", "dicom_nodes.cli", "quarantine", "list"],
            capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        rows = [line.split("\t") for line in listed.stdout.splitlines()]
        assert rows[0][:4] == ["SOP Instance UID", "destination", "profile", "reason"]
        assert [r[:3] for r in rows[1:]] == [[sc_uid, "archive", "basic"]]
        assert rows[1][3].startswith("burned-in"), rows[1]
        # The reviewer sees the held image and why it is held.
        shown = subprocess.run(
            [sys.executable, "-m", "dicom_nodes.cli", "quarantine", "show", sc_uid,
             "--output", str(tmp_path / "held.png")],
            capture_output=True, text=True, check=False, env=env,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert "held for archive (profile basic): burned-in" in shown.stdout
        assert (tmp_path / "held.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        unknown = subprocess.run(
            [sys.executable, "-m", "dicom_nodes.cli", "quarantine", "show", "1.2.3.4"],
            capture_output=True, text=True, check=False, env=env,
        )  # fmt: skip
        assert unknown.returncode == 1 and "not quarantined" in unknown.stderr
        # Nothing waits for a destination: the instance is held for a person.
        assert node.query(
            "SELECT state FROM ingest_instance WHERE sop_instance_uid = %s", sc_uid
        ) == [("held",)]
        url = f"http://127.0.0.1:{node.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as rsp:
            metrics = rsp.read().decode()
        assert re.search(r"^radiogate_quarantined_instances\{[^}]*\} 1\.0$", metrics, re.M)
        # Nothing of the originals reached the archive, not even the quarantined one.
        originals = _originals(ct + sc + us)
        ids = orthanc_instances(orthanc)
        assert len(ids) == len(ct) + len(us)
        pseudonyms: set[str] = set()
        for oid in ids:
            data = orthanc_get(orthanc, f"/instances/{oid}/file")
            assert isinstance(data, bytes)
            leaked = [v for v in originals if v in data]
            assert not leaked, f"original values in the archive: {leaked}"
            ds = pydicom.dcmread(io.BytesIO(data))
            assert ds.PatientIdentityRemoved == "YES"
            assert ds.SOPInstanceUID.startswith("2.25.")
            assert data[:128] == b"\0" * 128
            codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
            assert {"113100", "113107"} <= codes
            if ds.Modality == "US":
                assert ds.BurnedInAnnotation == "NO" and "113101" in codes
                pixels = ds.pixel_array
                frame = pixels[0] if pixels.ndim > 2 and ds.get("NumberOfFrames", 1) > 1 else pixels
                assert not np.any(frame[0:32, 0:64])
            else:
                pseudonyms.add(str(ds.PatientID))
        assert len(pseudonyms) == 1  # one patient, one pseudonym across the series
        pseudonym = pseudonyms.pop()
        # An admin re-identifies the patient; the use is audited, and only the pseudonym is.
        out = subprocess.run(
            [sys.executable, "-m", "dicom_nodes.cli", "reidentify", pseudonym, "--json"],
            capture_output=True, text=True, check=False,
            env={**env, "RADIOGATE_DATABASE__ADMIN_DSN":
                 admin_role(fresh_dsn, "alice", "radiogate_privacy")},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        revealed = json.loads(out.stdout)
        original_id = str(pydicom.dcmread(ct[0], stop_before_pixels=True).PatientID)
        assert original_id in json.dumps(revealed)
        with psycopg.connect(fresh_dsn) as conn:
            audit.seal(conn)
        steps = dict(node.query("SELECT step, count(*) FROM audit_event GROUP BY step"))
        assert steps.get("de-identified") == len(ct) + len(us)
        assert steps.get("re-identified") == 1
        assert steps.get("quarantined") == 1
        # Every event about one of the CT instances names its patient by the pseudonym the
        # archive shows, from "received" to "released" (the patient's whole history).
        ct_uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in ct}
        ct_events = [
            doc for doc in (json.loads(bytes(r[0])) for r in node.query("SELECT body FROM audit_event"))
            if any(i[0] in ct_uids for o in doc.get("objects", ()) for i in o.get("instances", ()))
        ]  # fmt: skip
        assert {d["step"] for d in ct_events} >= {
            "received",
            "routed",
            "de-identified",
            "forwarded",
        }
        assert all({"type": "patient", "id": pseudonym} in d["objects"] for d in ct_events), [
            d for d in ct_events if {"type": "patient", "id": pseudonym} not in d["objects"]
        ][:2]
        # Audit events name instances by their original UIDs (that is their purpose), never
        # by names, IDs or other values.
        bodies = b"".join(bytes(r[0]) for r in node.query("SELECT body FROM audit_event"))
        assert not [v for v in originals if v in bodies and not re.fullmatch(rb"[0-9.]+", v)]
        # An admin reviews the quarantined image and releases it: it is then de-identified
        # (its text reviewed) and archived, and the decision is audited under their name.
        released = subprocess.run(
            [sys.executable, "-m", "dicom_nodes.cli", "quarantine", "release", sc_uid],
            capture_output=True, text=True, check=False,
            env={**env, "RADIOGATE_DATABASE__ADMIN_DSN":
                 admin_role(fresh_dsn, "bob", "radiogate_admin")},
        )  # fmt: skip
        assert released.returncode == 0, released.stderr
        node.wait_released(len(ct) + len(us) + len(sc))
        assert len(orthanc_instances(orthanc)) == len(ct) + len(us) + len(sc)
        for oid in orthanc_instances(orthanc):
            data = orthanc_get(orthanc, f"/instances/{oid}/file")
            assert isinstance(data, bytes)
            assert not [v for v in originals if v in data]
    finally:
        node.stop()
    # Logs name instances by UID, never by anything else of the originals.
    logs = b"".join(p.read_bytes() for p in node.data_dir.glob("*.log"))
    assert logs, "no logs were written"
    assert not [v for v in originals if v in logs and not re.fullmatch(rb"[0-9.]+", v)]


@pytest.mark.slow
def test_worker_killed_while_deidentifying_loses_nothing_leaves_nothing(
    fresh_dsn: str, tmp_path: Path, orthanc: ManagedOrthanc
) -> None:
    """Kill -9 in the middle of routing rounds that write de-identified copies: after a
    restart every instance arrives once, de-identified, and no copy is left in the spool (a
    rolled-back round's copies are rewritten byte for byte and then released)."""
    files = series_copies(extract_ct(tmp_path / "ct"), tmp_path / "many", 4)  # 192 instances
    secrets = {
        **site_keys(),
        # de-identify in a pool of processes: the kill takes them down with the worker
        "RADIOGATE_DEID__PROCESSES": "2",
    }
    node = Node(fresh_dsn, tmp_path / "node", orthanc, extra_toml=ROUTES, extra_env=secrets)
    node.start(worker=False)
    try:
        assert node.scp is not None
        _send(node.scp.port, "CT1", files)
        worker = node.start_worker()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            (row,) = node.query("SELECT count(*) FROM deid_output")
            if row[0] >= 1:
                break
            time.sleep(0.02)
        worker.kill()
        (routed,) = node.query("SELECT count(*) FROM ingest_instance WHERE state <> 'received'")
        assert routed[0] < len(files), "routing finished before the worker could be killed"
        node.start_worker()
        node.wait_released(len(files))
        ids = orthanc_instances(orthanc)
        assert len(ids) == len(files)
        patients = orthanc_get(orthanc, "/patients")
        assert isinstance(patients, list) and len(patients) == 1
        main = orthanc_get(orthanc, f"/patients/{patients[0]}")
        assert main["MainDicomTags"]["PatientID"].startswith("RG")
        assert node.query("SELECT count(*) FROM deid_output") == [(0,)]
        assert node.scp.spooled_files() == []
        # At most the one temporary file being written at the kill; housekeeping removes it
        # once it is STALE_AFTER old (tests/unit/deid/test_step.py).
        assert len(list((node.scp.spool / ".deid").iterdir())) <= 1
    finally:
        node.stop()

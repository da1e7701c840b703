"""Study completion: quiet period, rule, admin command, late series re-opening — all audited."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pydicom
import pytest
from pydicom.uid import generate_uid

import audit
from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.support import dcmtk
from tests.support.data import extract_ct
from tests.support.pipeline import Node
from tests.support.roles import admin_role

pytestmark = pytest.mark.integration

ROUTES = """
[[routes]]
name = "single-image"
steps = ["forward:archive"]
complete_immediately = true
[routes.match]
modality = ["CR", "DX"]

[[routes]]
name = "default"
steps = ["forward:archive"]
"""


def _send(port: int, files: list[Path]) -> None:
    result = subprocess.run(
        [dcmtk("storescu"), "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def _variant(src: Path, dest: Path, **changes: str) -> Path:
    ds = pydicom.dcmread(src)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(dest, enforce_file_format=True)
    return dest


def _study(node: Node, uid: str) -> tuple[str, int, str]:
    (row,) = node.query(
        "SELECT state, increments, completed_by FROM study WHERE study_instance_uid = %s", uid
    )
    return row[0], row[1], row[2]


def _wait_state(node: Node, uid: str, state: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while _study(node, uid)[0] != state:
        assert time.monotonic() < deadline, f"study never became {state}: {_study(node, uid)}"
        time.sleep(0.2)


def test_completion_paths(fresh_dsn: str, tmp_path: Path, orthanc: ManagedOrthanc) -> None:
    ct = extract_ct(tmp_path / "ct")
    study_uid = str(pydicom.dcmread(ct[0], stop_before_pixels=True).StudyInstanceUID)
    node = Node(fresh_dsn, tmp_path / "node", orthanc, extra_toml=ROUTES).start()
    try:
        assert node.scp is not None
        _send(node.scp.port, ct[:3])
        _wait_state(node, study_uid, "complete")  # quiet period: 2 s in the test config
        assert _study(node, study_uid) == ("complete", 0, "quiet-period")
        # A late series re-opens the study as an increment.
        late = _variant(ct[3], tmp_path / "late.dcm", SeriesInstanceUID=generate_uid())
        _send(node.scp.port, [late])
        state, increments, _ = _study(node, study_uid)
        assert (state, increments) == ("receiving", 1)
        # An admin completes it at once.
        env = node.scp.env()
        env["RADIOGATE_DATABASE__ADMIN_DSN"] = admin_role(fresh_dsn, "alice", "radiogate_admin")
        done = subprocess.run(
            [sys.executable, "-m", "dicom_nodes.cli", "study", "complete", study_uid],
            capture_output=True, text=True, check=False, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert _study(node, study_uid) == ("complete", 1, "admin:alice")
        # A single-image CR study completes by rule, without waiting.
        cr = _variant(ct[4], tmp_path / "cr.dcm", Modality="CR", StudyInstanceUID=generate_uid())
        cr_study = str(pydicom.dcmread(cr, stop_before_pixels=True).StudyInstanceUID)
        _send(node.scp.port, [cr])
        _wait_state(node, cr_study, "complete", timeout=1.9)
        assert _study(node, cr_study)[2] == "rule:single-image"
        node.wait_released(5)
    finally:
        node.stop()
    with psycopg.connect(fresh_dsn) as conn:
        audit.seal(conn)
    out = subprocess.run(
        [sys.executable, "-m", "dicom_nodes.cli", "audit", "query", "--study", study_uid,
         "--format", "jsonl", "--as-user", "tester"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    events = [json.loads(line)["event"] for line in out.stdout.splitlines()]
    completions = [e for e in events if e["step"] == "study-completed"]
    assert len(completions) == 2
    assert any(p.get("user") == "alice" for e in completions for p in e["participants"])
    assert any(e.get("reason") == "study-reopened" for e in events if e["step"] == "received")

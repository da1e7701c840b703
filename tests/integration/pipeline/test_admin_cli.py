"""Admin commands as a user runs them: route test, job list/cancel/retry, status."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.support import dcmtk, free_port
from tests.support.data import extract_ct
from tests.support.pipeline import Node
from tests.support.roles import admin_role

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicom_nodes.cli", *args],
        capture_output=True, text=True, check=False, env=env, timeout=60,
    )  # fmt: skip


def test_route_test_command(tmp_path: Path) -> None:
    files = extract_ct(tmp_path / "ct")
    stat = tmp_path / "stat.dcm"
    ds = pydicom.dcmread(files[0])
    ds.RequestedProcedurePriority = "STAT"
    ds.save_as(stat)
    cfg = tmp_path / "r.toml"
    cfg.write_text(
        """
[[routes]]
name = "er"
steps = ["forward:archive"]
[routes.match]
calling_ae = ["ER_*"]
[[routes]]
name = "default"
[[lane_rules]]
lane = "critical"
[lane_rules.match]
tags = { RequestedProcedurePriority = ["STAT"] }
"""
    )
    env = {"RADIOGATE_CONFIG": str(cfg), "PATH": "/usr/bin:/bin"}
    out = _cli(env, "route", "test", str(files[0]))
    assert out.returncode == 0, out.stderr
    assert "route: default" in out.stdout and "lane: routine" in out.stdout
    assert "route er: calling AE '(empty)' is not one of ['ER_*']" in out.stdout
    out = _cli(env, "route", "test", str(stat), "--calling-ae", "ER_CT2")
    assert "route: er" in out.stdout and "lane: critical" in out.stdout
    assert "-> archive: as received" in out.stdout


def test_route_test_explains_unroutable_and_bad_files(tmp_path: Path) -> None:
    files = extract_ct(tmp_path / "ct")
    cfg = tmp_path / "r.toml"
    cfg.write_text(
        """
[[routes]]
name = "mr-only"
steps = ["forward:archive"]
[routes.match]
modality = ["MR"]
[[routes]]
name = "stat-only"
steps = ["forward:archive"]
[routes.match]
tags = { RequestedProcedurePriority = ["STAT"] }
"""
    )
    env = {"RADIOGATE_CONFIG": str(cfg), "PATH": "/usr/bin:/bin"}
    out = _cli(env, "route", "test", str(files[0]))
    assert out.returncode == 1, out
    assert "route mr-only: modality 'CT' is not one of ['MR']" in out.stdout
    assert "route stat-only: RequestedProcedurePriority is absent" in out.stdout
    assert "no route matches: the instance would be kept as unroutable" in out.stdout
    for bad in (tmp_path / "missing.dcm", cfg):
        out = _cli(env, "route", "test", str(bad))
        assert out.returncode == 2, out
        assert out.stderr.startswith(f"radiogate: cannot read {bad} as DICOM"), out.stderr
        assert "Traceback" not in out.stderr


def test_job_and_status_commands(fresh_dsn: str, tmp_path: Path, orthanc: ManagedOrthanc) -> None:
    files = extract_ct(tmp_path / "ct")[:3]
    # A second destination where nobody listens: forwarding there keeps failing (retryable).
    extra = f"""
[[destinations]]
name = "offline"
ae_title = "NOBODY"
host = "127.0.0.1"
port = {free_port()}
timeout = 2.0

[[routes]]
name = "both"
steps = ["forward:archive", "forward:offline"]
"""
    node = Node(fresh_dsn, tmp_path / "node", orthanc, extra_toml=extra).start()
    try:
        assert node.scp is not None
        env = node.scp.env()
        env["RADIOGATE_DATABASE__ADMIN_DSN"] = admin_role(fresh_dsn, "alice", "radiogate_admin")
        result = subprocess.run(
            [dcmtk("storescu"), "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1", str(node.scp.port), *map(str, files)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = node.query(
                "SELECT count(*) FROM forward_item WHERE destination = 'offline' AND attempts >= 1"
            )
            if rows[0][0] == 3:
                break
            time.sleep(0.2)
        out = _cli(env, "status")
        assert out.returncode == 0, out
        status = json.loads(out.stdout)
        assert status["queue_depth_by_lane"]["routine"] == 3
        assert status["instances"] == {"routed": 3}
        assert status["waiting_for_destination"] == 3
        assert status["oldest_unconfirmed_seconds"] > 0
        listing = _cli(env, "job", "list", "--all")
        lines = listing.stdout.splitlines()
        assert lines[0].split("\t")[:3] == ["SOP Instance UID", "destination", "state"]
        assert listing.stdout.count("\toffline\tpending\t") == 3, listing.stdout
        # A bare cancel takes dead items only: these are pending.
        cancelled = _cli(env, "job", "cancel", "--destination", "offline")
        assert cancelled.stdout.strip() == "0 cancelled" and cancelled.returncode == 0
        cancelled = _cli(env, "job", "cancel", "--destination", "offline", "--waiting")
        assert cancelled.stdout.strip() == "3 cancelled", cancelled
        assert node.query("SELECT count(*) FROM forward_item WHERE state = 'cancelled'") == [(3,)]
        # Nothing waits for a destination any more: the instances are settled as cancelled and
        # stop counting as unconfirmed; their spool copies stay for a retry.
        node.wait_for(lambda: node.query("SELECT DISTINCT state FROM ingest_instance")
                      == [("cancelled",)])  # fmt: skip
        status = json.loads(_cli(env, "status").stdout)
        assert status["oldest_unconfirmed_seconds"] == 0.0
        assert len(node.scp.spooled_files()) == 3
        # A bare retry takes dead items only; named cancelled items go back to pending.
        assert _cli(env, "job", "retry", "--destination", "offline").stdout.startswith("0 retried")
        uids = [r[0] for r in node.query("SELECT sop_instance_uid FROM ingest_instance")]
        retried = _cli(env, "job", "retry", "--destination", "offline", *uids)
        assert retried.stdout.startswith("3 retried"), retried
        assert node.query(
            "SELECT count(*) FROM forward_item WHERE state = 'pending' AND destination = 'offline'"
        ) == [(3,)]
        assert node.query("SELECT DISTINCT state FROM ingest_instance") == [("routed",)]
        # Unknown UIDs and rows in another state are named, and the exit code says so.
        out = _cli(env, "job", "cancel", "1.2.3.999")
        assert out.returncode == 1 and "1.2.3.999: unknown" in out.stderr
        out = _cli(env, "job", "retry", uids[0])
        assert (
            out.returncode == 1 and "not changed (archive=confirmed, offline=pending)" in out.stderr
        )
        # Given up again and past the retention, their identified originals are purged.
        _cli(env, "job", "cancel", "--destination", "offline", "--waiting")
        node.wait_for(lambda: node.query("SELECT DISTINCT state FROM ingest_instance")
                      == [("cancelled",)])  # fmt: skip
        assert node.worker is not None
        node.worker.stop()  # its housekeeping would purge them itself
        node.worker = None
        node.query("UPDATE ingest_instance SET state_changed_at = now() - interval '40 days'"
                   " RETURNING 1")  # fmt: skip
        assert _cli(env, "spool", "purge", "--dry-run").stdout.strip() == (
            "3 instances would be purged"
        )
        purged = _cli(env, "spool", "purge")
        assert purged.returncode == 0 and purged.stdout.strip() == "3 instances purged", purged
        assert node.query("SELECT DISTINCT state FROM ingest_instance") == [("purged",)]
        assert node.scp.spooled_files() == []
        # Every decision is an audit event naming the person: the role they connected as.
        events = node.query(
            "SELECT count(*), count(*) FILTER (WHERE convert_from(body, 'UTF8') LIKE %s)"
            " FROM audit_pending WHERE step = 'cancelled'",
            '%"user":"alice"%',
        )
        # (the 6 forward items alice cancelled; their instances settling is the system's doing)
        assert events[0][1] == 6, events
    finally:
        node.stop()

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
    out = _cli(env, "route", "test", str(stat), "--calling-ae", "ER_CT2")
    assert "route: er" in out.stdout and "lane: critical" in out.stdout


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
        status = json.loads(_cli(env, "status").stdout)
        assert status["queue_depth_by_lane"]["routine"] == 3
        assert status["instances"].get("forwarded", 0) + status["instances"].get("routed", 0) == 3
        assert status["oldest_unconfirmed_seconds"] > 0
        listing = _cli(env, "job", "list", "--all")
        assert listing.stdout.count("\toffline\tpending") == 3, listing.stdout
        cancelled = _cli(env, "job", "cancel", "--destination", "offline")
        assert "3 items cancelled" in cancelled.stdout
        assert node.query("SELECT count(*) FROM forward_item WHERE state = 'cancelled'") == [(3,)]
        # Spool copies stay: the instances were not confirmed everywhere.
        assert len(node.scp.spooled_files()) == 3
        retried = _cli(env, "job", "retry", "--destination", "offline")
        assert "3 items re-queued" in retried.stdout
        assert node.query("SELECT count(*) FROM forward_item WHERE state = 'pending'") == [(3,)]
    finally:
        node.stop()

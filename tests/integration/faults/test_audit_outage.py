"""PostgreSQL stopped during associations: every association event is in the audit trail
afterwards, in order (buffered locally, chained once the database is back), and instance
receipts are refused rather than unaudited."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from dicom_nodes.services.postgres import PrivateCluster
from tests.support import ScpProcess, dcmtk
from tests.support.data import extract_ct

pytestmark = pytest.mark.integration


def _echo(port: int) -> None:
    done = subprocess.run(
        [dcmtk("echoscu"), "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1", str(port)],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def _accepted_events(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT body, event_time FROM audit_pending WHERE step = 'association-accepted'"
            " ORDER BY id"
        ).fetchall()
    return [(json.loads(bytes(b))["time"], str(t)) for b, t in rows]


def test_association_events_survive_a_database_outage(
    own_cluster: PrivateCluster, tmp_path: Path
) -> None:
    scp = ScpProcess(dsn=own_cluster.dsn, data_dir=tmp_path / "node").start()
    try:
        _echo(scp.port)
        own_cluster.stop(mode="immediate")
        for _ in range(6):
            _echo(scp.port)
        (ct,) = extract_ct(tmp_path / "ct")[:1]
        store = subprocess.run(
            [dcmtk("storescu"), "-v", "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1",
             str(scp.port), str(ct)],
            capture_output=True, text=True, check=False, timeout=60,
        ).stderr  # fmt: skip
        assert "Refused: OutOfResources" in store  # an instance is never received unaudited
        buffered = list((tmp_path / "node" / "audit-buffer").glob("*.audit"))
        assert sum(p.stat().st_size for p in buffered) > 0
        started = time.monotonic()
        own_cluster.start()
        log_lines = scp.log_text().count(" accepted calling=")
        assert log_lines >= 8  # start-up and first echoes, six during the outage, the store
        while len(_accepted_events(own_cluster.dsn)) < log_lines:
            assert time.monotonic() - started < 30, "buffered events not recorded"
            time.sleep(0.2)
        events = _accepted_events(own_cluster.dsn)
        assert len(events) == log_lines  # complete, none twice
        assert [t for t, _ in events] == sorted(t for t, _ in events)  # in order
        assert sum(p.stat().st_size for p in buffered if p.exists()) == 0
    finally:
        scp.stop()

"""Two nodes on one PostgreSQL: each SCP writes its own spool and only its node's workers read
it (ARCHITECTURE.md, "Scale beyond one machine"). A node whose worker is killed (-9) keeps
receiving; its instances wait, untouched by the other node's worker, and reach the archive once
a worker of the node is back, while the other node goes on forwarding."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.integration.forward.instances import make_small_instances
from tests.support import dcmtk
from tests.support.pipeline import Node, orthanc_instances

pytestmark = pytest.mark.integration

PER_NODE = 60


def _storescu(port: int, files: list[Path]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [dcmtk("storescu"), "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1", str(port),
         *map(str, files)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={"TCP_NODELAY": "1"},
    )  # fmt: skip


def _sent(proc: subprocess.Popen[bytes]) -> None:
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]


def _states(node: Node, name: str) -> dict[str, int]:
    rows = node.query(
        "SELECT state, count(*) FROM ingest_instance WHERE node = %s GROUP BY state", name
    )
    return {str(state): int(n) for state, n in rows}


@pytest.mark.timeout(600)
def test_two_nodes_share_a_database_and_survive_a_killed_worker(
    fresh_dsn: str, tmp_path: Path, orthanc: ManagedOrthanc
) -> None:
    files_a = make_small_instances(tmp_path / "a", PER_NODE)
    files_b = make_small_instances(tmp_path / "b", PER_NODE)
    half = PER_NODE // 2
    a = Node(fresh_dsn, tmp_path / "node-a", orthanc, extra_env={"RADIOGATE_NODE__NAME": "a"})
    b = Node(fresh_dsn, tmp_path / "node-b", orthanc, extra_env={"RADIOGATE_NODE__NAME": "b"})
    try:
        a.start()
        b.start()
        assert a.scp is not None and b.scp is not None and a.worker is not None
        assert a.scp.spool != b.scp.spool

        # Both nodes receive; node a's worker is killed while it is forwarding.
        sender_b = _storescu(b.scp.port, files_b)
        _sent(_storescu(a.scp.port, files_a[:half]))
        a.wait_for(lambda: _states(a, "a").get("released", 0) >= 1, timeout=60)
        a.worker.kill()  # SIGKILL to its process group
        a.worker = None
        _sent(_storescu(a.scp.port, files_a[half:]))  # the door stays open
        _sent(sender_b)

        # Node b finishes everything on its own; node a's late half waits in a's spool.
        b.wait_released(PER_NODE, timeout=120)
        assert _states(b, "b") == {"released": PER_NODE}
        a_states = _states(a, "a")
        assert sum(a_states.values()) == 2 * half
        assert a_states.get("released", 0) < 2 * half, a_states
        spool_paths = a.query("SELECT spool_path FROM ingest_instance WHERE node = 'a'")
        assert all(str(p).startswith(str(a.scp.spool)) for (p,) in spool_paths)
        waiting = a.query(
            "SELECT spool_path FROM ingest_instance WHERE node = 'a' AND state <> 'released'"
        )
        assert all(Path(p).exists() for (p,) in waiting)  # kept for node a's own workers

        # A worker of node a comes back and takes over what the dead one left.
        a.start_worker()
        a.wait_for(lambda: _states(a, "a") == {"released": 2 * half}, timeout=180)
        assert len(orthanc_instances(orthanc)) == 2 * PER_NODE
        per_node = dict(
            a.query(
                """SELECT i.node, count(*) FROM forward_item f JOIN ingest_instance i
                   USING (sop_instance_uid) WHERE f.state = 'confirmed' GROUP BY i.node"""
            )
        )
        assert per_node == {"a": 2 * half, "b": PER_NODE}
    finally:
        a.stop()
        b.stop()
